"""The promtool test file shipped with each SLO's rules.

Each alert gets a case where it fires and one where it stays quiet. For the burn-rate alerts (and
ErrorBudgetExhausted, checked in the same scenarios) the input is vLLM-shaped series at a chosen
error ratio, and what should fire is not written by hand: `model.Model` recomputes the rules'
arithmetic on the same input, and a scenario is only kept when every comparison clears its threshold
by a margin. SLOMetricAbsent has its own cases (series renamed away while the targets are up, and
while they are down), and a maintenance window over a paging burn must keep every alert quiet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import monitor.generate.expressions as q
from monitor.generate.expressions import RATE_RANGE_S
from monitor.generate.rule_tests.inputs import MODEL, Inputs, build_inputs, counts_requests
from monitor.generate.rule_tests.model import MARGIN, Clock, Model, ScenarioError
from monitor.generate.rule_tests.series import expected_alert, labels_text
from monitor.generate.rules import ABSENT_ALERT, BURN_ALERT, EXCLUSION_SERIES, EXHAUSTED_ALERT, TIERS, SloRules


def expected_burn(rules: SloRules, model: Model, pool: str, t: int) -> list[dict[str, Any]]:
    found = []
    labels = {"pool": pool}
    if rules.sli.per_model:
        labels["model_name"] = MODEL
    for alert in rules.alerts:
        if alert["alert"] != BURN_ALERT:
            continue
        # by the tier: an SLO's labels may replace `severity` (both alerts then carry the same one)
        severity = next(s for s, tier in TIERS.items() if tier == alert["labels"]["burnrate_tier"])
        pairs = [p for p in rules.pairs if p.severity == severity]
        if any(model.pair_fires(p, rules.slo.window, rules.budget, rules.slo.min_bad_events, t) for p in pairs):
            found.append(expected_alert(alert, labels))
    return found


def _alert_labels(rules: SloRules, pool: str) -> dict[str, str]:
    labels = {"pool": pool}
    if rules.sli.per_model:
        labels["model_name"] = MODEL
    return labels


def expected_exhausted(rules: SloRules, model: Model, pool: str, t: int) -> list[dict[str, Any]] | None:
    """ErrorBudgetExhausted as the rules decide it; None when the budget left sits too close to 0
    (or the bad count to the minimum) to predict safely, so the check is left out."""
    alert = next(a for a in rules.alerts if a["alert"] == EXHAUSTED_ALERT)
    period = rules.slo.window
    ratio = model.ratio(period, t)
    if ratio is None:
        return []
    if abs(ratio / rules.budget - 1.0) < MARGIN:
        return None
    fires = ratio > rules.budget
    if period == RATE_RANGE_S:
        bad, valid = (model.bad_rate[t] or 0.0) * RATE_RANGE_S, (model.valid_rate[t] or 0.0) * RATE_RANGE_S
    else:
        bad, valid = model.counts(period, t)
    # the minimum bad events, and what the figure stands on: valid events and the window's coverage
    for value, minimum in ((bad, rules.slo.min_bad_events), (valid, rules.slo.budget_min_events),
                           (model.coverage(period, t), rules.slo.budget_min_coverage)):
        if minimum > 0:
            if abs(value / minimum - 1.0) < MARGIN:
                return None
            fires = fires and value >= minimum
    return [expected_alert(alert, _alert_labels(rules, pool))] if fires else []


def coverage_reachable(rules: SloRules, seconds: float) -> bool:
    """Whether `seconds` of input can cover `budget_min_coverage` of the SLO window (with a margin):
    a 20-minute scenario cannot exhaust a 30-day budget, by design."""
    return rules.slo.budget_min_coverage * rules.slo.window <= seconds * (1.0 - 2 * MARGIN)


def expected_absent(rules: SloRules, pools: set[str]) -> list[dict[str, Any]]:
    """The metric-absent alerts of `pools` (those whose series are gone while a target is up)."""
    return [expected_alert(rule, labels) for pool, labels, rule in rules.absent if pool in pools]


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

    # ErrorBudgetExhausted seen firing and quiet even where no burn alert can fire: errors at twice
    # and half the budget's rate over the whole input. Where 20 minutes cannot cover
    # `budget_min_coverage` of the SLO window, twice the budget's rate must stay quiet instead: the
    # budget is spent by the arithmetic, but the figure stands on too little of the window
    reachable = coverage_reachable(rules, steady)
    spent = ("{burn} burn for 20m: the budget is exhausted" if reachable else
             f"{{burn}} burn for 20m: the budget is spent, but 20m of {q.duration(rules.slo.window)} is under "
             f"budget_min_coverage ({q.number(rules.slo.budget_min_coverage * 100)}%): not exhausted")
    def overspent(model: Model, at: float) -> bool:
        ratio = model.ratio(rules.slo.window, clock.steps(at))
        return ratio is not None and ratio > rules.budget * (1.0 + MARGIN)

    for target, name in ((2.0, spent), (0.5, "{burn} burn for 20m: budget left, not exhausted")):
        seen = {bool(expected_exhausted(rules, i.model, pool, clock.steps(at)))
                for c, i in built for at in c.evals if expected_exhausted(rules, i.model, pool, clock.steps(at))
                is not None}
        if not reachable and target > 1:
            # what must be seen is an overspent budget held back by the coverage gate, by name
            for burn in [b for b in spread(target) if 0 < b <= max_burn] + [max_burn]:
                found = _realize(rules, pool, name, [burn], steady, lambda o: True)
                if found is not None and overspent(found[1].model, steady):
                    built.append(found)
                    break
            continue
        if (target > 1) not in seen:
            found = _realize(rules, pool, name, [b for b in spread(target) if 0 < b <= max_burn], steady,
                             lambda o: True)
            if found is not None:
                built.append(found)

    # every burn alert must be seen firing and seen quiet
    for severity in factors:
        seen = {_outcome(rules, inputs.model, at)[severity] for case, inputs in built for at in case.evals}
        if seen != {True, False}:
            missing = "fire" if True not in seen else "stay quiet"
            raise ScenarioError(f"SLO {rules.slo.name}: no generated input makes the {severity} alert {missing}")

    interval = clock.at(1)
    tests: list[dict[str, Any]] = []
    exhausted_seen: set[bool] = set()
    for case, inputs in built:
        checks = []
        for at in case.evals:
            t = clock.steps(at)
            checks.append({"eval_time": clock.at(t), "alertname": BURN_ALERT,
                           "exp_alerts": expected_burn(rules, inputs.model, pool, t)})
            exhausted = expected_exhausted(rules, inputs.model, pool, t)
            if exhausted is not None:
                exhausted_seen.add(bool(exhausted))
                checks.append({"eval_time": clock.at(t), "alertname": EXHAUSTED_ALERT, "exp_alerts": exhausted})
            if rules.absent:  # the SLI's series are there (and no `up`): never absent
                checks.append({"eval_time": clock.at(t), "alertname": ABSENT_ALERT, "exp_alerts": []})
        test: dict[str, Any] = {"name": f"{rules.slo.name}: {case.name}", "interval": interval,
                                "input_series": inputs.series, "alert_rule_test": checks}
        exprs = expr_checks(rules, inputs.model, pool, clock.steps(case.evals[-1]))
        if exprs:
            test["promql_expr_test"] = exprs
        tests.append(test)
    if exhausted_seen != ({True, False} if reachable else {False}):
        missing = "fire" if True not in exhausted_seen else "stay quiet"
        raise ScenarioError(f"SLO {rules.slo.name}: no generated input makes {EXHAUSTED_ALERT} {missing}")

    # a maintenance window over a burn that alerts: the events of its minutes are not recorded, so
    # nothing fires (burn, exhausted, absent)
    paging = next(((c, i) for c, i in built if any(_outcome(rules, i.model, c.evals[-1]).values())), None)
    if paging is not None:
        case, inputs = paging
        eval_at = clock.at(clock.steps(case.evals[-1]))
        window = {"series": labels_text(EXCLUSION_SERIES, {"job": q.SERVICE_JOB, "instance": "monitor:9470",
                                                           "slo": rules.slo.name, "pool": pool}),
                  "values": f"1+0x{clock.steps(case.evals[-1])}"}
        tests.append({
            "name": f"{rules.slo.name}: {case.name.split(':')[0]} inside a maintenance window: nothing fires",
            "interval": interval,
            "input_series": [*inputs.series, window],
            "alert_rule_test": [{"eval_time": eval_at, "alertname": name, "exp_alerts": []}
                                for name in (BURN_ALERT, EXHAUSTED_ALERT, ABSENT_ALERT)],
        })
    if rules.absent:
        tests.extend(absent_tests(rules, clock))
    return {"rule_files": [rules_file], "evaluation_interval": interval, "tests": tests}


def absent_tests(rules: SloRules, clock: Clock) -> list[dict[str, Any]]:
    """The SLI's series (one spelling) present for 10 minutes, then renamed away: quiet until
    `absent_for` has passed, firing after it while the targets are up, quiet while they are down."""
    interval = clock.at(1)
    gone = clock.steps(600.0)
    absent_for = rules.slo.absent_for
    quiet = gone + math.ceil(absent_for / clock.step_s) - 1
    fire = gone + math.floor(absent_for / clock.step_s) + 1
    end = fire + 1
    names = sorted({s.split("{")[0] for s in rules.sli.absent_selectors})

    def world(up: float) -> list[dict[str, str]]:
        series = []
        for pool in rules.pools:
            target = {"pool": pool, "instance": "vllm-0:8000", "job": q.VLLM_JOB}
            series.append({"series": labels_text("up", target), "values": f"{up:g}+0x{end}"})
            series.append({"series": labels_text(names[-1], {**target, "model_name": MODEL, "engine": "0"}),
                           "values": f"0+0x{gone} _x{end - gone}"})
        return series

    every = set(rules.pools)
    af = q.duration(absent_for)
    return [
        {"name": f"{rules.slo.name}: SLI series renamed away at 10m, targets up: quiet for {af}, then "
                 f"{ABSENT_ALERT} fires",
         "interval": interval, "input_series": world(1.0),
         "alert_rule_test": [
             {"eval_time": clock.at(gone), "alertname": ABSENT_ALERT, "exp_alerts": []},
             {"eval_time": clock.at(quiet), "alertname": ABSENT_ALERT, "exp_alerts": []},
             {"eval_time": clock.at(fire), "alertname": ABSENT_ALERT, "exp_alerts": expected_absent(rules, every)},
             {"eval_time": clock.at(fire), "alertname": BURN_ALERT, "exp_alerts": []},
         ]},
        {"name": f"{rules.slo.name}: SLI series gone with every target down: {ABSENT_ALERT} stays quiet "
                 "(VllmTargetDown's case)",
         "interval": interval, "input_series": world(0.0),
         "alert_rule_test": [{"eval_time": clock.at(fire), "alertname": ABSENT_ALERT, "exp_alerts": []}]},
    ]


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


__all__ = ["Case", "absent_tests", "coverage_reachable", "expected_absent", "expected_burn", "expected_exhausted", "expr_checks",
           "slo_test_file"]
