"""How each SLO indicator becomes event rates in PromQL: the expressions every SLO's rule file
records and `absent()` watches.

Apart from `rules` (which lays those expressions out as recording rules and alerts) because this
is the one place that mirrors `monitor.evaluate.slo.count_events`: changing what counts as a good
event is a change here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import monitor.generate.expressions as q
from monitor.config import (
    AvailabilityIndicator,
    ErrorRatioIndicator,
    LatencyIndicator,
    SaturationIndicator,
    SloConfig,
)


@dataclass(frozen=True)
class Sli:
    """How one indicator becomes event rates in PromQL: what the rules record and what `absent()` watches."""

    valid_rate: str
    bad_rate: str
    by: tuple[str, ...]
    pre_rules: tuple[dict[str, Any], ...] = ()
    absent_selectors: tuple[str, ...] = ()  # the SLI is blind when all of these are absent

    @property
    def per_model(self) -> bool:
        return "model_name" in self.by


def pool_matcher(slo: SloConfig) -> str:
    """The SLO's pools, or any series carrying a pool label (set by the generated scrape config)."""
    if slo.pools:
        return f"pool=~{q.quote(q.regex_any(slo.pools))}"
    return 'pool!=""'


def slo_pools(pools: Sequence[str], slo: SloConfig) -> list[str]:
    """The pools an SLO covers: its own list, or every pool of the config (`pools`)."""
    return list(slo.pools) if slo.pools else list(pools)


def sli_for(slo: SloConfig) -> Sli:
    """The PromQL of one SLO's indicator, mirroring `monitor.evaluate.slo.count_events`."""
    ind = slo.indicator
    pool = pool_matcher(slo)
    w = q.RATE_WINDOW
    by = ("pool", "model_name")
    if isinstance(ind, LatencyIndicator):
        names = q.histogram_names(ind.metric)
        valid = q.sum_by(by, q.rate_any(names, [pool], w, "_count"))
        parts = []
        for bound, weight in q.threshold_buckets(ind.metric, ind.threshold):
            good = q.sum_by(by, q.rate_any(names, [pool, q.le_matcher(bound)], w, "_bucket"))
            parts.append(good if weight == 1.0 else f"{q.number(weight)} * {good}")
        good_expr = " + ".join(parts) if len(parts) == 1 else "(\n    " + "\n  + ".join(parts) + "\n  )"
        bad = f"clamp_min(\n    {valid}\n  -\n    {good_expr}\n  , 0)"
        return Sli(valid, bad, by, absent_selectors=tuple(q.selector(n + "_count", [pool]) for n in names))
    if isinstance(ind, ErrorRatioIndicator):
        valid = q.sum_by(by, f"rate({q.selector(q.SUCCESS, [pool])}[{w}]) or rate({q.selector(q.REJECTIONS, [pool])}[{w}])")
        errors = q.sum_by(
            by,
            f'rate({q.selector(q.SUCCESS, [pool, "finished_reason=" + q.quote("error")])}[{w}])'
            f" or rate({q.selector(q.REJECTIONS, [pool])}[{w}])",
        )
        # V0 servers create the `error` child only once such a request finished: without it, a
        # pool with traffic and no errors must still record 0 bad events, not nothing
        bad = f"{errors}\n  or\n0 * {valid}"
        return Sli(valid, bad, by, absent_selectors=(q.selector(q.SUCCESS, [pool]),))
    if isinstance(ind, SaturationIndicator):
        names = q.KV_USAGE
        breach = {
            "record": "slo:instance_breach:bool",
            "expr": q.block(
                f"avg without (engine) ({q.any_of(names, [pool])}) > bool {q.number(ind.threshold)}"
            ),
            "labels": {"slo": slo.name},
        }
        series = f'slo:instance_breach:bool{{slo={q.quote(slo.name)}}}'
        valid = f"count by (pool, model_name) (avg_over_time({series}[{w}]))"
        bad = f"sum by (pool, model_name) (avg_over_time({series}[{w}]))"
        return Sli(valid, bad, by, pre_rules=(breach,), absent_selectors=tuple(q.selector(n, [pool]) for n in names))
    if isinstance(ind, AvailabilityIndicator):
        up = q.selector("up", [f"job={q.quote(q.VLLM_JOB)}", pool])
        valid = f"count by (pool) (avg_over_time({up}[{w}]))"
        bad = f"sum by (pool) (1 - avg_over_time({up}[{w}]))"
        # no SLOMetricAbsent: availability reads `up` itself, which is never absent while a target is
        # configured (a pool Prometheus does not scrape is the fleet's VllmMetricsAbsent)
        return Sli(valid, bad, ("pool",))
    raise TypeError(f"unknown indicator {ind!r}")

