"""promtool unit tests (`*.test.yml`) shipped with every generated rule file.

Each alert gets a case where it fires and one where it stays quiet. For the burn-rate alerts the
input is vLLM-shaped series at a chosen error ratio, and what should fire is not written by hand:
`Model` recomputes the rules' arithmetic (Prometheus's `rate()` extrapolation, the 5-minute
recordings, `sum_over_time` of them, the pairs and the minimum bad-event count) on the same input,
and a scenario is only kept when every comparison clears its threshold by a margin, so the
expectation never hinges on a rounding difference between this model and Prometheus.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from monitor.config import (
    AvailabilityIndicator,
    Config,
    ErrorRatioIndicator,
    LatencyIndicator,
    SaturationIndicator,
    parse_duration,
)
from monitor.evaluate.slo import BurnPair
from monitor.generate import promql as q
from monitor.generate.promql import RATE_RANGE_S
from monitor.generate.rules import (
    ABSENT_ALERT,
    ABSENT_FOR,
    BURN_ALERT,
    NS,
    ServiceAlert,
    SloRules,
)

STEP_MIN = 1  # fleet and service tests: samples and evaluations a minute apart (no `sum_over_time` there)
MODEL = "test-model"
VOLUME_PER_MIN = 1200.0  # requests a minute in counter scenarios (a whole number per step for 1s..1m steps)
MARGIN = 0.03  # relative distance every modelled comparison must keep from its threshold


class ScenarioError(ValueError):
    """The scenario's outcome would sit too close to a threshold to be predicted safely."""


@dataclass(frozen=True)
class Clock:
    """SLO scenarios run in steps of the rule interval: input samples, promtool evaluations and the
    rules' recordings all one step apart, so `sum_over_time(...) * interval` counts what the model
    counts whatever `--rule-interval` was."""

    step_s: float

    def steps(self, seconds: float) -> int:
        n = seconds / self.step_s
        if abs(n - round(n)) > 1e-9:
            raise ValueError(f"{seconds:g}s is not a whole number of {self.step_s:g}s rule intervals")
        return round(n)

    def at(self, steps: int) -> str:
        return q.duration(steps * self.step_s) if steps else "0s"

    @property
    def rate_range(self) -> int:
        return self.steps(RATE_RANGE_S)


# --- series notation ------------------------------------------------------------------------------


def exact(value: float) -> str:
    """A float written so that parsing it gives back the very same double (Python's repr)."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def series_values(values: Sequence[float]) -> str:
    """promtool's expanding notation (`0+10x5 50+0x3`) for samples one step apart, exactly.

    promtool expands `a+bxn` by adding b to a running value n times, so a segment is only used
    where that repeated addition lands on every sample bit for bit; elsewhere samples are listed one
    by one. An approximate expansion could make a counter step back by one ulp at a segment joint,
    which `rate()` reads as a counter reset: a whole counter's worth of phantom events.
    """
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        if i + 1 < len(values):
            step = values[i + 1] - values[i]
            running = values[i]
            while j + 1 < len(values) and running + step == values[j + 1]:
                running += step
                j += 1
        if j == i:
            out.append(exact(values[i]))
        else:
            step = values[i + 1] - values[i]
            sign = "-" if step < 0 else "+"
            out.append(f"{exact(values[i])}{sign}{exact(abs(step))}x{j - i}")
        i = j + 1
    return " ".join(out)


def labels_text(name: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f"{k}={q.quote(v)}" for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


# --- the model ------------------------------------------------------------------------------------


def prom_rate(samples: Sequence[float], t: int, range_steps: int = 5, step_s: float = 60.0) -> float | None:
    """Prometheus 2's `rate(x[range])` at step t over samples one step apart from step 0 (range
    inclusive at both ends; extrapolation as in promql/functions.go `extrapolatedRate`)."""
    first_t = max(0, t - range_steps)
    if t - first_t < 1 or t >= len(samples):
        return None
    first, last = samples[first_t], samples[t]
    delta = last - first  # no resets in generated input
    sampled = (t - first_t) * step_s
    avg_between = sampled / (t - first_t)
    to_start = (first_t - (t - range_steps)) * step_s
    to_end = 0.0
    if delta > 0 and first >= 0:
        to_zero = sampled * (first / delta)
        to_start = min(to_start, to_zero)
    threshold = avg_between * 1.1
    extrapolate = sampled
    extrapolate += to_start if to_start < threshold else avg_between / 2
    extrapolate += to_end if to_end < threshold else avg_between / 2
    return delta * (extrapolate / sampled) / (range_steps * step_s)


def avg_over_all(samples: Sequence[float], range_steps: int) -> list[float]:
    """`avg_over_time(x[range])` at every step (samples inclusive at both ends, as Prometheus 2)."""
    prefix = [0.0]
    for value in samples:
        prefix.append(prefix[-1] + value)
    out = []
    for t in range(len(samples)):
        lo = max(0, t - range_steps)
        out.append((prefix[t + 1] - prefix[lo]) / (t + 1 - lo))
    return out


@dataclass
class Model:
    """Valid/bad 5-minute rates per step, as the rules record them, and what follows from them."""

    valid_rate: list[float | None]
    bad_rate: list[float | None]
    clock: Clock = Clock(60.0)

    def counts(self, window_s: float, t: int) -> tuple[float, float]:
        """(bad, valid) events over the window: `sum_over_time` of the 5m rates times the step."""
        lo = max(0, t - self.clock.steps(window_s) + 1)
        bad = sum(r for r in self.bad_rate[lo:t + 1] if r is not None) * self.clock.step_s
        valid = sum(r for r in self.valid_rate[lo:t + 1] if r is not None) * self.clock.step_s
        return bad, valid

    def ratio(self, window_s: float, t: int) -> float | None:
        if window_s == RATE_RANGE_S:
            bad, valid = self.bad_rate[t], self.valid_rate[t]
        else:
            bad, valid = self.counts(window_s, t)
        if valid is None or bad is None or valid <= 0:
            return None
        return bad / valid

    def pair_fires(self, pair: BurnPair, period_s: float, budget: float, min_bad: float, t: int) -> bool:
        threshold = round(pair.factor(period_s), 6) * budget
        verdicts = []
        for window in (pair.long, pair.short):
            ratio = self.ratio(parse_duration(window), t)
            if ratio is None:
                return False
            _clear(ratio, threshold, f"{pair.name} error ratio over {window}")
            verdicts.append(ratio > threshold)
        if min_bad > 0:
            # as the rules count them: the long window's sum, or the last 5 minutes' if larger
            bad = max(self.counts(parse_duration(pair.long), t)[0], (self.bad_rate[t] or 0.0) * RATE_RANGE_S)
            _clear(bad, min_bad, f"{pair.name} bad events")
            verdicts.append(bad >= min_bad)
        return all(verdicts)


def _clear(value: float, threshold: float, what: str) -> None:
    if threshold == 0:
        if value == 0:
            raise ScenarioError(f"{what} sits at the threshold 0")
        return
    if abs(value / threshold - 1.0) < MARGIN:
        raise ScenarioError(f"{what}: {value:.6g} is within {MARGIN:.0%} of the threshold {threshold:.6g}")


# --- inputs per indicator -------------------------------------------------------------------------


@dataclass
class Inputs:
    """A scenario's input series (written only when the scenario is kept: a search tries many) and
    the model of what the rules record from them."""

    make_series: Callable[[], list[dict[str, str]]]
    model: Model
    realized: list[float] = field(default_factory=list)  # error ratio per phase, as realized

    @functools.cached_property
    def series(self) -> list[dict[str, str]]:
        return self.make_series()


Phases = Sequence[tuple[float, float]]  # (seconds, target error ratio)


def _vllm_labels(pool: str, per_model: bool) -> dict[str, str]:
    labels = {"pool": pool, "instance": "vllm-0:8000", "job": q.VLLM_JOB, "engine": "0"}
    if per_model:
        labels["model_name"] = MODEL
    return labels


def _accumulate(clock: Clock, phases: Phases, per_step: Callable[[float], float]) -> list[float]:
    """A counter from 0 that grows by `per_step(e)` each step of each phase, by repeated addition:
    exactly how promtool expands `a+bxn`, so every phase is one exact segment of the input."""
    values = [0.0]
    for seconds, e in phases:
        increment = per_step(e)
        for _ in range(clock.steps(seconds)):
            values.append(values[-1] + increment)
    return values


def _counter_inputs(rules: SloRules, clock: Clock, pool: str, phases: Phases, per_min: float) -> Inputs:
    """`per_min` requests a minute, a share e of them bad, as vLLM's counters or histogram buckets."""
    volume = per_min * clock.step_s / 60.0
    base = _vllm_labels(pool, True)
    ind = rules.slo.indicator
    series: list[dict[str, str]] = []

    def rates(cum: list[float]) -> list[float | None]:
        return [prom_rate(cum, t, clock.rate_range, clock.step_s) for t in range(len(cum))]

    if isinstance(ind, ErrorRatioIndicator):
        good_cum = _accumulate(clock, phases, lambda e: volume * (1.0 - e))
        bad_cum = _accumulate(clock, phases, lambda e: volume * e)
        series.append({"series": labels_text(q.SUCCESS, {**base, "finished_reason": "stop"}),
                       "values": series_values(good_cum)})
        series.append({"series": labels_text(q.SUCCESS, {**base, "finished_reason": "error"}),
                       "values": series_values(bad_cum)})
        bad_rate = rates(bad_cum)
        valid_rate = [None if g is None or b is None else g + b for g, b in zip(rates(good_cum), bad_rate)]
        realized = [e for _, e in phases]
    elif isinstance(ind, LatencyIndicator):
        name = q.histogram_names(ind.metric)[0]
        buckets = q.threshold_buckets(ind.metric, ind.threshold)
        weight = sum(w for _, w in buckets)  # 1 unless the threshold is below the first bucket: then
        # the rules count weight x bucket as good, and the bucket cannot hold more than every request

        def good_share(e: float) -> float:
            return min(1.0, (1.0 - e) / weight)

        total_cum = _accumulate(clock, phases, lambda e: volume)
        bucket_cum = _accumulate(clock, phases, lambda e: volume * good_share(e))
        series.append({"series": labels_text(name + "_count", base), "values": series_values(total_cum)})
        for bound, _ in buckets:
            series.append({"series": labels_text(name + "_bucket", {**base, "le": q.prom_le(bound)}),
                           "values": series_values(bucket_cum)})
        valid_rate = rates(total_cum)
        bad_rate = [None if v is None or b is None else max(v - weight * b, 0.0)
                    for v, b in zip(valid_rate, rates(bucket_cum))]
        realized = [1.0 - weight * good_share(e) for _, e in phases]
    else:
        raise TypeError(ind)
    return Inputs(lambda: series, Model(valid_rate, bad_rate, clock), realized)


def instances_for(budget: float) -> int:
    """Instances in a saturation/availability scenario: enough that the error ratio can be set in
    steps of about one budget, few enough to keep promtool quick."""
    return max(10, min(200, math.ceil(1.0 / budget)))


def _instance_inputs(rules: SloRules, clock: Clock, pool: str, phases: Phases) -> Inputs:
    """n instances, round(e * n) of them breaching (KV cache above the threshold, or down) per phase."""
    n = instances_for(rules.budget)
    ind = rules.slo.indicator
    breaching = [round(e * n) for _, e in phases]
    # samples per phase: the first phase also holds the sample at 0
    lengths = [clock.steps(seconds) + (1 if i == 0 else 0) for i, (seconds, _) in enumerate(phases)]

    def make_series() -> list[dict[str, str]]:
        series = []
        for i in range(n):
            if isinstance(ind, SaturationIndicator):
                hi, lo = min(1.0, ind.threshold + (1.0 - ind.threshold) / 2), ind.threshold / 2
                name, values = q.KV_USAGE[0], [hi if i < k else lo for k in breaching]
                labels = {**_vllm_labels(pool, True), "instance": f"vllm-{i}:8000"}
            elif isinstance(ind, AvailabilityIndicator):
                name, values = "up", [0.0 if i < k else 1.0 for k in breaching]
                labels = {"pool": pool, "instance": f"vllm-{i}:8000", "job": q.VLLM_JOB}
            else:
                raise TypeError(ind)
            # constant within a phase: one `v+0xN` segment each
            text = " ".join(f"{exact(v)}+0x{length - 1}" if length > 1 else exact(v)
                            for v, length in zip(values, lengths) if length)
            series.append({"series": labels_text(name, labels), "values": text})
        return series

    share = [k / n for k, length in zip(breaching, lengths) for _ in range(length)]
    valid: list[float | None] = [float(n)] * len(share)
    bad: list[float | None] = [avg * n for avg in avg_over_all(share, clock.rate_range)]
    return Inputs(make_series, Model(valid, bad, clock), [k / n for k in breaching])


def counts_requests(rules: SloRules) -> bool:
    """Events are requests (latency, errors), not instance-seconds (saturation, availability)."""
    return isinstance(rules.slo.indicator, (ErrorRatioIndicator, LatencyIndicator))


def build_inputs(rules: SloRules, pool: str, phases: Phases, per_min: float = VOLUME_PER_MIN) -> Inputs:
    clock = Clock(rules.interval_s)
    if counts_requests(rules):
        return _counter_inputs(rules, clock, pool, phases, per_min)
    return _instance_inputs(rules, clock, pool, phases)


# --- expected alerts ------------------------------------------------------------------------------


def render(template: str, labels: dict[str, str]) -> str:
    """The `{{ $labels.x }}` templates of the generated annotations, filled in as Prometheus would."""
    out = template
    for key, value in labels.items():
        out = out.replace("{{ $labels." + key + " }}", value)
    return out


def _alert(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    full = {**labels, **rule["labels"]}
    return {"exp_labels": full, "exp_annotations": {k: render(v, full) for k, v in rule["annotations"].items()}}


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
            found.append(_alert(alert, labels))
    return found


def expected_absent(rules: SloRules, present_pools: set[str], at_s: float) -> list[dict[str, Any]]:
    if at_s < parse_duration(ABSENT_FOR):
        return []
    return [_alert(rule, labels) for pool, labels, rule in rules.absent if pool not in present_pools]


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


# --- fleet and service files ----------------------------------------------------------------------


def fleet_test_file(config: Config, groups: list[dict[str, Any]], rules_file: str) -> dict[str, Any]:
    target_down = next(r for r in groups[0]["rules"] if r["alert"] == "VllmTargetDown")
    absent = [r for r in groups[0]["rules"] if r["alert"] == "VllmMetricsAbsent"]
    pool = config.pools[0].name
    down = {"pool": pool, "instance": "vllm-0:8000", "job": q.VLLM_JOB}
    minutes = 20
    present = [{"series": labels_text(q.RUNNING, {"pool": p.name, "instance": "vllm-0:8000", "job": q.VLLM_JOB,
                                                  "engine": "0", "model_name": MODEL}),
                "values": series_values([1.0] * (minutes + 1))} for p in config.pools]

    def absent_alerts() -> list[dict[str, Any]]:
        return [_alert(r, {"pool": next(p.name for p in config.pools if f'pool="{p.name}"' in r["expr"])})
                for r in absent]

    return {"rule_files": [rules_file], "evaluation_interval": f"{STEP_MIN}m", "tests": [
        {"name": "a target down and no vLLM metrics anywhere: both fire (after their for:)",
         "interval": f"{STEP_MIN}m",
         "input_series": [{"series": labels_text("up", down), "values": series_values([0.0] * (minutes + 1))}],
         "alert_rule_test": [
             {"eval_time": "3m", "alertname": "VllmTargetDown", "exp_alerts": []},
             {"eval_time": f"{minutes}m", "alertname": "VllmTargetDown",
              "exp_alerts": [_alert(target_down, down)]},
             {"eval_time": f"{minutes}m", "alertname": "VllmMetricsAbsent", "exp_alerts": absent_alerts()},
         ]},
        {"name": "every target up with metrics: both stay quiet", "interval": f"{STEP_MIN}m",
         "input_series": [{"series": labels_text("up", down), "values": series_values([1.0] * (minutes + 1))},
                          *present],
         "alert_rule_test": [
             {"eval_time": f"{minutes}m", "alertname": "VllmTargetDown", "exp_alerts": []},
             {"eval_time": f"{minutes}m", "alertname": "VllmMetricsAbsent", "exp_alerts": []},
         ]},
    ]}


def service_test_file(alerts: list[ServiceAlert], groups: list[dict[str, Any]], rules_file: str,
                      replica_metrics: tuple[str, str] | None) -> dict[str, Any]:
    """Three worlds: everything wrong (all fire but the absent alert), everything fine (nothing
    fires), and the service not scraped at all (only the absent alert fires)."""
    by_name = {r["alert"]: r for r in groups[0]["rules"]}
    minutes = 30
    job = {"job": q.SERVICE_JOB, "instance": "monitor:9470"}
    pool = "pool-a"

    def flat(value: float) -> str:
        return series_values([value] * (minutes + 1))

    def inst(name: str) -> dict[str, str]:
        return {"job": q.SERVICE_JOB, "pool": pool, "instance": name}

    states = {"a:8000": "ejected", "b:8000": "unknown", "c:8000": "degraded"}

    def world(bad: bool) -> list[dict[str, str]]:
        series = [{"series": labels_text("up", job), "values": flat(0.0 if bad else 1.0)}]
        for name, state in states.items():
            for s in ("healthy", "degraded", "ejected", "unknown"):
                active = s == (state if bad else "healthy")
                series.append({"series": labels_text(f"{NS}_instance_state", {**inst(name), "state": s}),
                               "values": flat(1.0 if active else 0.0)})
            failing = bad and state == "unknown"
            series.append({"series": labels_text(f"{NS}_scrape_consecutive_failures", inst(name)),
                           "values": flat(5.0 if failing else 0.0)})
        errors = [float(t) if bad else 0.0 for t in range(minutes + 1)]
        series.append({"series": labels_text(f"{NS}_slo_evaluation_errors_total", job),
                       "values": series_values(errors)})
        series.append({"series": labels_text(f"{NS}_alertmanager_up", job), "values": flat(0.0 if bad else 1.0)})
        series.append({"series": labels_text(f"{NS}_storage_up", job), "values": flat(0.0 if bad else 1.0)})
        series.append({"series": labels_text(f"{NS}_pool_fail_open", {**job, "pool": pool}),
                       "values": flat(1.0 if bad else 0.0)})
        series.append({"series": labels_text(f"{NS}_decision_errors_total", job),
                       "values": series_values([float(t) if bad else 0.0 for t in range(minutes + 1)])})
        series.append({"series": labels_text(f"{NS}_nginx_last_apply_ok", job), "values": flat(0.0 if bad else 1.0)})
        if replica_metrics:
            desired, current = replica_metrics
            series.append({"series": labels_text(desired, {**job, "pool": pool}), "values": flat(4.0 if bad else 2.0)})
            series.append({"series": labels_text(current, {**job, "pool": pool}), "values": flat(2.0)})
        return series

    def fired(name: str) -> list[dict[str, Any]]:
        rule = by_name[name]
        if name == "SloMonitorDown":
            return [_alert(rule, job)]
        if name == "SloMonitorAbsent":
            return [_alert(rule, {"job": q.SERVICE_JOB})]
        if name in ("SloMonitorInstanceEjected", "SloMonitorInstanceDegraded"):
            state = "ejected" if name.endswith("Ejected") else "degraded"
            who = next(n for n, s in states.items() if s == state)
            return [_alert(rule, {**inst(who), "state": state})]
        if name == "SloMonitorPoolCapacityLow":
            return [_alert(rule, {"pool": pool})]
        if name == "SloMonitorScrapeFailing":
            return [_alert(rule, inst("b:8000"))]
        if name in ("SloMonitorScaleUpPending", "SloMonitorFailingOpen"):
            return [_alert(rule, {**job, "pool": pool})]
        return [_alert(rule, job)]

    at = f"{minutes}m"
    names = [a.name for a in alerts]
    return {"rule_files": [rules_file], "evaluation_interval": f"{STEP_MIN}m", "tests": [
        {"name": "everything wrong for 30m: every decision alert fires", "interval": f"{STEP_MIN}m",
         "input_series": world(True),
         "alert_rule_test": [{"eval_time": at, "alertname": n,
                              "exp_alerts": [] if n == "SloMonitorAbsent" else fired(n)} for n in names]},
        {"name": "everything fine for 30m: nothing fires", "interval": f"{STEP_MIN}m",
         "input_series": world(False),
         "alert_rule_test": [{"eval_time": at, "alertname": n, "exp_alerts": []} for n in names]},
        {"name": "slo-monitor not scraped at all: only the absent alert fires", "interval": f"{STEP_MIN}m",
         "input_series": [{"series": labels_text("up", {"job": "other", "instance": "x:1"}), "values": flat(1.0)}],
         "alert_rule_test": [{"eval_time": at, "alertname": n,
                              "exp_alerts": fired(n) if n == "SloMonitorAbsent" else []} for n in names]},
    ]}


__all__ = ["Clock", "Model", "fleet_test_file", "prom_rate", "series_values", "service_test_file", "slo_test_file"]
