"""The promtool test file shipped with each SLO's rules.

Each alert gets a case where it fires and one where it stays quiet. For the burn-rate alerts the
input is vLLM-shaped series at a chosen error ratio, and what should fire is not written by hand:
`model.Model` recomputes the rules' arithmetic on the same input, and a scenario is only kept when
every comparison clears its threshold by a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import monitor.generate.expressions as q
from monitor.config import parse_duration
from monitor.generate.expressions import RATE_RANGE_S
from monitor.generate.rule_tests.inputs import MODEL, Inputs, build_inputs, counts_requests
from monitor.generate.rule_tests.model import Clock, Model, ScenarioError
from monitor.generate.rule_tests.series import expected_alert, labels_text
from monitor.generate.rules import ABSENT_ALERT, ABSENT_FOR, BURN_ALERT, SloRules


def expected_burn(rules: SloRules, model: Model, pool: str, t: int) -> list[dict[str, Any]]:
    found = []
    labels = {"pool": pool}
    if rules.sli.per_model:
        labels["model_name"] = MODEL
    for alert in rules.alerts:
        if alert["alert"] != BURN_ALERT:
            continue
        severity = alert["labels"]["severity"]
        pairs = [p for p in rules.pairs if p.severity == severity]
        if any(model.pair_fires(p, rules.slo.window, rules.budget, rules.slo.min_bad_events, t) for p in pairs):
            found.append(expected_alert(alert, labels))
    return found


def expected_absent(rules: SloRules, present_pools: set[str], at_s: float) -> list[dict[str, Any]]:
    if at_s < parse_duration(ABSENT_FOR):
        return []
    return [expected_alert(rule, labels) for pool, labels, rule in rules.absent if pool not in present_pools]


@dataclass
class Case:
    name: str
    phases: list[tuple[float, float]]  # (seconds, error ratio)
    evals: list[float]  # seconds from the start at which alerts are checked


def _outcome(rules: SloRules, model: Model, at_s: float) -> dict[str, bool]:
    t = model.clock.steps(at_s)
    out = {}
    for severity in rules.severities():
        pairs = [p for p in rules.pairs if p.severity == severity]
        out[severity] = any(model.pair_fires(p, rules.slo.window, rules.budget, rules.slo.min_bad_events, t)
                            for p in pairs)
    return out


def _realize(rules: SloRules, pool: str, name: str, burns: Sequence[float], seconds: float,
             want: Callable[[dict[str, bool]], bool]) -> tuple[Case, Inputs] | None:
    """The first candidate burn whose realized scenario gives the wanted outcome, clearly."""
    for burn in burns:
        case = Case(name, [(seconds, min(burn * rules.budget, 1.0))], [seconds])
        inputs = build_inputs(rules, pool, case.phases)
        try:
            outcome = _outcome(rules, inputs.model, seconds)
        except ScenarioError:
            continue
        if want(outcome):
            case.name = name.format(burn=_fmt_burn(inputs.realized[0] / rules.budget))
            return case, inputs
    return None


def _fmt_burn(burn: float) -> str:
    return f"{burn:.3g}x" if burn < 1000 else f"{burn:.0f}x"


def slo_test_file(rules: SloRules, rules_file: str) -> dict[str, Any]:
    """A fire and a quiet case for the page alert, the ticket alert and the absent-metric alerts."""
    pool = rules.pools[0]
    budget = rules.budget
    max_burn = 1.0 / budget
    clock = Clock(rules.interval_s)
    factors = {s: sorted(p.factor(rules.slo.window) for p in rules.pairs if p.severity == s)
               for s in rules.severities()}
    steady = 1200.0  # 20m: every window of a steady scenario holds the same ratio once the 5m one is full
    built: list[tuple[Case, Inputs]] = []

    def spread(target: float) -> list[float]:
        return [target * k for k in (1.0, 1.1, 0.9, 1.25, 0.8, 1.5, 0.67, 2.0, 0.5)]

    def attempt(name: str, burns: Sequence[float], want: Callable[[dict[str, bool]], bool]) -> None:
        found = _realize(rules, pool, name, [b for b in burns if 0 <= b <= max_burn], steady, want)
        if found is not None:
            built.append(found)

    if "page" in factors:
        top = factors["page"][-1]
        attempt("{burn} burn for 20m: page fires", spread(min(top * 1.25, (top + max_burn) / 2)) + [max_burn],
                lambda o: o["page"])
    if "ticket" in factors:
        high = factors["page"][0] if "page" in factors else max_burn
        target = math.sqrt(factors["ticket"][-1] * high) if high > factors["ticket"][-1] else factors["ticket"][-1] * 1.2
        attempt("{burn} burn for 20m: ticket fires, page stays quiet",
                spread(target) + spread(math.sqrt(factors["ticket"][0] * high)) + [max_burn],
                lambda o: o["ticket"] and not o.get("page", False))
    lowest = min((f for fs in factors.values() for f in fs), default=1.0)
    attempt("{burn} burn for 20m: nothing fires", spread(lowest * 0.5) + [0.0], lambda o: not any(o.values()))
    # multiwindow: a burst pages at once; 35 minutes after it ended the page has cleared (both short
    # windows, 5m and 30m, hold no 5-minute rate that saw the burst) while the ticket, whose 2h
    # window still holds the burst, stays
    if "page" in factors and "ticket" in factors:
        burst = min(max(factors["page"]) * 2.0, max_burn * 0.9)
        phases = [(600.0, burst * budget), (2100.0, 0.0)]
        inputs = build_inputs(rules, pool, phases)
        case = Case(f"{_fmt_burn(inputs.realized[0] / budget)} burst for 10m: page and ticket fire; 35m after it, "
                    "only the ticket", phases, [600.0, 2700.0])
        try:
            during, after = _outcome(rules, inputs.model, 600.0), _outcome(rules, inputs.model, 2700.0)
            if during["page"] and not after["page"] and after["ticket"]:
                built.append((case, inputs))
        except ScenarioError:
            pass
    if counts_requests(rules) and factors:
        # no traffic at all: no ratio, no alert (an idle window neither meets nor misses the SLO)
        case = Case("no requests for 20m: nothing fires", [(steady, 0.0)], [steady])
        built.append((case, build_inputs(rules, pool, case.phases, 0.0)))
    # the minimum bad-event count: at a handful of requests an hour, every one failing is a 1000x
    # burn, yet too few events to page anybody (Grafana SLO's min_failures)
    if counts_requests(rules) and rules.slo.min_bad_events >= 2 and factors:
        bad_total = math.ceil(rules.slo.min_bad_events) - 1
        case = Case(f"{bad_total} requests in 20m, all failed: a {_fmt_burn(max_burn)} burn but fewer than "
                    f"{q.number(rules.slo.min_bad_events)} bad events: nothing fires", [(steady, 1.0)], [steady])
        inputs = build_inputs(rules, pool, case.phases, bad_total / (steady / 60.0))
        try:
            if not any(_outcome(rules, inputs.model, steady).values()):
                built.append((case, inputs))
        except ScenarioError:
            pass

    # every burn alert must be seen firing and seen quiet
    for severity in factors:
        seen = {_outcome(rules, inputs.model, at)[severity] for case, inputs in built for at in case.evals}
        if seen != {True, False}:
            missing = "fire" if True not in seen else "stay quiet"
            raise ScenarioError(f"SLO {rules.slo.name}: no generated input makes the {severity} alert {missing}")

    interval = clock.at(1)
    tests: list[dict[str, Any]] = []
    for case, inputs in built:
        checks = []
        for at in case.evals:
            t = clock.steps(at)
            checks.append({"eval_time": clock.at(t), "alertname": BURN_ALERT,
                           "exp_alerts": expected_burn(rules, inputs.model, pool, t)})
            checks.append({"eval_time": clock.at(t), "alertname": ABSENT_ALERT,
                           "exp_alerts": expected_absent(rules, {pool}, at)})
        test: dict[str, Any] = {"name": f"{rules.slo.name}: {case.name}", "interval": interval,
                                "input_series": inputs.series, "alert_rule_test": checks}
        exprs = expr_checks(rules, inputs.model, pool, clock.steps(case.evals[-1]))
        if exprs:
            test["promql_expr_test"] = exprs
        tests.append(test)

    # absent: nothing of the SLI anywhere, only an unrelated series
    other = {"series": labels_text("process_start_time_seconds", {"job": "other", "instance": "x:1"}),
             "values": f"0+0x{clock.steps(steady)}"}
    tests.append({
        "name": f"{rules.slo.name}: no SLI series for {ABSENT_FOR}: metric-absent alerts fire, burn alerts cannot",
        "interval": interval,
        "input_series": [other],
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": ABSENT_ALERT, "exp_alerts": []},
            {"eval_time": "20m", "alertname": ABSENT_ALERT, "exp_alerts": expected_absent(rules, set(), steady)},
            {"eval_time": "20m", "alertname": BURN_ALERT, "exp_alerts": []},
        ],
    })
    return {"rule_files": [rules_file], "evaluation_interval": interval, "tests": tests}


def expr_checks(rules: SloRules, model: Model, pool: str, t: int) -> list[dict[str, Any]]:
    """The recorded SLI numbers themselves, rounded to integers (promtool compares floats exactly):
    the 5m and 1h error ratios in millionths and the budget left over the SLO window in thousandths."""
    labels = {"slo": rules.slo.name, "pool": pool}
    if rules.sli.per_model:
        labels["model_name"] = MODEL
    checks = []
    candidates = [
        ("slo:sli_error:ratio_rate5m", model.ratio(RATE_RANGE_S, t), 1e6),
        ("slo:sli_error:ratio_rate1h", model.ratio(3600.0, t), 1e6),
    ]
    period_ratio = model.ratio(rules.slo.window, t)
    if period_ratio is not None:
        candidates.append(("slo:period_error_budget_remaining:ratio", 1.0 - period_ratio / rules.budget, 1e3))
    for name, value, scale in candidates:
        if value is None:
            continue
        scaled = value * scale
        if abs(scaled - math.floor(scaled) - 0.5) < 0.05:
            continue  # on a rounding edge: Prometheus and this model could round apart
        checks.append({
            "expr": f"round({name}{{slo={q.quote(rules.slo.name)}}} * {q.number(scale)})",
            "eval_time": model.clock.at(t),
            "exp_samples": [{"labels": "{" + ", ".join(f"{k}={q.quote(v)}" for k, v in sorted(labels.items())) + "}",
                             "value": math.floor(scaled + 0.5)}],
        })
    return checks


__all__ = ["Case", "expected_absent", "expected_burn", "expr_checks", "slo_test_file"]
