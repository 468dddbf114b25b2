"""Input series for one SLO's promtool scenarios, per indicator, with the model of what the rules
record from them: vLLM counters or histogram buckets for request-based SLIs, a row of instances
(KV cache above the threshold, or down) for saturation and availability."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import monitor.generate.expressions as q
from monitor.config import AvailabilityIndicator, ErrorRatioIndicator, LatencyIndicator, SaturationIndicator
from monitor.generate.rule_tests.model import Clock, Model, avg_over_all, prom_rate
from monitor.generate.rule_tests.series import exact, labels_text, series_values
from monitor.generate.rules import SloRules

MODEL = "test-model"
VOLUME_PER_MIN = 1200.0  # requests a minute in counter scenarios (a whole number per step for 1s..1m steps)


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


__all__ = ["MODEL", "Inputs", "Phases", "build_inputs", "counts_requests", "instances_for"]
