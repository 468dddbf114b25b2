"""Desired replicas per pool, by the Kubernetes HPA algorithm, for KEDA, an HPA or an operator to act on.

Why the HPA's own algorithm rather than something cleverer: whoever consumes the number (an HPA on an
external metric, KEDA's metrics-api or prometheus scaler) already reasons in those terms, and the
recommendation stays explainable: per metric `ceil(current × value / target)`, skipped while the
ratio is within `tolerance` of 1, the maximum over metrics, then stabilised:

* scale-up stabilisation (default 60 s): the lowest recommendation in the window, so a rise must last
  the whole window (the seed guidance: "scale up when latency stays above 500 ms for 60–90 s");
* scale-down stabilisation (default 300 s): the highest recommendation in the window, as the HPA
  does, because a vLLM replica takes minutes to load its model and flapping down then up is costly;
* then `min_replicas` / `max_replicas`.

Signals: requests waiting per replica (production-stack's scaling signal, target 5; where vLLM splits
its queue by reason, `vllm:num_requests_waiting_by_reason`, only `reason="capacity"` counts: a request
waiting for a KV transfer or a LoRA slot is not helped by another replica), KV-cache usage
(the llm-d saturation threshold 0.8), TTFT p99 against a latency target, and the burn rate of the
pool's TTFT SLO (target 1: spending the error budget exactly as fast as it is earned). GPU
utilisation is deliberately absent: it is a poor scaling signal for LLM serving.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from monitor.evaluate.windows import WindowStats, instance_figures, merge_stats
from monitor.settings import ScalingSettings


@dataclass(frozen=True, slots=True)
class ScalingSignals:
    """A pool's load figures over the recent window; None where not known.

    replicas_reporting: instances whose figures are in the sums and means (serving ones only: an
    ejected instance carries no load and would pull the averages down).
    """

    replicas_reporting: int
    requests_waiting: float | None = None  # summed over reporting replicas, every reason
    kv_cache_usage: float | None = None  # mean over reporting replicas
    ttft_p99_s: float | None = None  # pool-wide
    requests: float = 0.0  # requests in the window behind ttft_p99_s
    ttft_burn_rate: float | None = None
    # summed over the replicas whose page splits waiting by reason (None when none does)
    requests_waiting_capacity: float | None = None
    # what waiting_per_replica reads: capacity waits where a page has them, all waits elsewhere;
    # None falls back to requests_waiting (signals built by hand, older callers)
    requests_waiting_for_scaling: float | None = None

    @property
    def waiting_signal(self) -> float | None:
        return self.requests_waiting if self.requests_waiting_for_scaling is None else self.requests_waiting_for_scaling


@dataclass(frozen=True, slots=True)
class ScalingRecommendation:
    """What `/api/v1/pools/{pool}/scaling` serves and the audit log stores."""

    pool: str
    at: float
    current_replicas: int
    desired_replicas: int
    reason: str
    signals: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"pool": self.pool, "current_replicas": self.current_replicas,
                "desired_replicas": self.desired_replicas, "reason": self.reason, "signals": dict(self.signals)}


# Kubernetes' replica counts are int32: no recommendation goes above that, whatever a page says
MAX_REPLICAS = 2**31 - 1


def hpa_replicas(current: int, value: float, target: float, tolerance: float) -> int:
    """`ceil(current × value / target)`, or `current` while the ratio is within tolerance of 1.

    From zero replicas the ratio is meaningless (HPA cannot scale from zero); KEDA's AverageValue
    rule `ceil(value / target)` is used instead, with `value` the per-replica figure times nothing:
    callers pass the pool total there.
    """
    ratio = value / target if target else math.nan
    wanted = ratio if current <= 0 else current * ratio
    if not math.isfinite(wanted):
        # NaN or ±Inf in (a signal the windows left unknown, or a ratio past the float range):
        # math.ceil would raise OverflowError, and nothing is known to act on, so hold
        return max(current, 0)
    if current > 0 and abs(ratio - 1.0) <= tolerance:
        return current
    return min(max(0, math.ceil(wanted - 1e-9)), MAX_REPLICAS)


class PoolScaler:
    """One pool's recommendation with its stabilisation history (the only state it keeps)."""

    def __init__(self, pool: str, settings: ScalingSettings | None = None) -> None:
        self.pool = pool
        self.settings = settings or ScalingSettings()
        self.history: deque[tuple[float, int]] = deque()
        self.last: ScalingRecommendation | None = None

    def recommend(self, current_replicas: int, signals: ScalingSignals, now: float) -> ScalingRecommendation:
        s = self.settings
        current = max(0, current_replicas)
        metrics: dict[str, dict[str, float]] = {}
        reporting = max(signals.replicas_reporting, 0)

        def add(name: str, value: float | None, target: float | None, *, total: float | None = None) -> None:
            # a figure that is not a finite number is not known (it cannot be a reason either)
            if value is None or not target or not math.isfinite(value) or not math.isfinite(value / target):
                return
            if total is not None and not math.isfinite(total):
                return
            basis = total if current <= 0 and total is not None else value
            rec = hpa_replicas(current, basis, target, s.tolerance)
            metrics[name] = {"value": value, "target": target, "ratio": value / target, "recommendation": rec}

        waiting = signals.waiting_signal
        if waiting is not None and reporting > 0:
            add("waiting_per_replica", waiting / reporting, s.target_waiting_per_replica, total=waiting)
        elif waiting and current <= 0:
            add("waiting_per_replica", waiting, s.target_waiting_per_replica)
        if reporting > 0:
            add("kv_cache_usage", signals.kv_cache_usage, s.target_kv_cache_usage)
            if signals.requests >= max(s.min_requests, 1):
                add("ttft_p99_s", signals.ttft_p99_s, s.target_ttft_p99)
            add("ttft_burn_rate", signals.ttft_burn_rate, s.target_ttft_burn_rate)

        if metrics:
            driver = max(metrics, key=lambda m: (metrics[m]["recommendation"], m))
            raw = int(metrics[driver]["recommendation"])
        else:
            driver, raw = None, current

        self.history.append((now, raw))
        horizon = now - max(s.scale_up_stabilization, s.scale_down_stabilization)
        while self.history and self.history[0][0] < horizon:
            self.history.popleft()
        up_floor = min((r for t, r in self.history if t > now - s.scale_up_stabilization), default=raw)
        down_ceiling = max((r for t, r in self.history if t > now - s.scale_down_stabilization), default=raw)
        up_floor, down_ceiling = min(up_floor, raw), max(down_ceiling, raw)

        desired = current
        if desired < up_floor:
            desired = up_floor
        if desired > down_ceiling:
            desired = down_ceiling
        stabilised = desired
        desired = max(desired, s.min_replicas)
        if s.max_replicas is not None:
            desired = min(desired, s.max_replicas)

        reason = self._reason(current, raw, stabilised, desired, driver, metrics, up_floor, down_ceiling)
        decision = ScalingRecommendation(self.pool, now, current, desired, reason, {
            "metrics": metrics,
            "raw_recommendation": raw,
            "stabilized_recommendation": stabilised,
            "scale_up_window_min": up_floor,
            "scale_down_window_max": down_ceiling,
            "replicas_reporting": reporting,
            # both queues: waiting_per_replica reads the capacity one where the pages split it
            "requests_waiting": _finite_or_none(signals.requests_waiting),
            "requests_waiting_capacity": _finite_or_none(signals.requests_waiting_capacity),
            "min_replicas": s.min_replicas,
            "max_replicas": s.max_replicas,
        })
        self.last = decision
        return decision

    def _reason(self, current: int, raw: int, stabilised: int, desired: int, driver: str | None,
                metrics: Mapping[str, Mapping[str, float]], up_floor: int, down_ceiling: int) -> str:
        s = self.settings
        if driver is None:
            why = "no load signal (no replica reporting)"
        else:
            m = metrics[driver]
            why = f"{driver} {m['value']:.3g} vs target {m['target']:.3g} wants {raw}"
            if raw == current and abs(m["ratio"] - 1.0) <= s.tolerance:
                why = f"{driver} {m['value']:.3g} within {s.tolerance:g} of target {m['target']:.3g}"
        parts = [why]
        if raw > current and stabilised < raw:
            parts.append(f"held at {stabilised} by scale-up stabilisation ({s.scale_up_stabilization:g}s, "
                         f"lowest recommendation {up_floor})")
        if raw < current and stabilised > raw:
            parts.append(f"held at {stabilised} by scale-down stabilisation ({s.scale_down_stabilization:g}s, "
                         f"highest recommendation {down_ceiling})")
        if desired != stabilised:
            bound = "min_replicas" if desired == s.min_replicas and desired > stabilised else "max_replicas"
            parts.append(f"clamped to {bound} {desired}")
        verb = "scale up" if desired > current else "scale down" if desired < current else "hold"
        return f"{verb} {current} -> {desired}: " + "; ".join(parts)


def scaling_signals(stats: Sequence[WindowStats | None], burn_rate: float | None = None) -> ScalingSignals:
    """A pool's signals from its serving instances' merged window stats (one entry per instance).

    Waiting requests are summed, KV usage averaged, TTFT p99 taken over all instances' requests
    together (merged histograms), exactly as `merge_stats` combines an instance's models. The
    waiting signal takes each instance's capacity waits where its page has them (vLLM 0.20+) and
    its whole queue elsewhere, so a pool in the middle of an upgrade is still counted whole.
    """
    present = [s for s in stats if s is not None]
    merged = merge_stats(present)
    figures = instance_figures(merged)
    requests = merged.histograms["ttft"].count if merged is not None and "ttft" in merged.histograms else 0.0
    capacity = [s.gauges["waiting_capacity"] for s in present if "waiting_capacity" in s.gauges]
    for_scaling = [s.gauges.get("waiting_capacity", s.gauges.get("waiting")) for s in present]
    known = [w for w in for_scaling if w is not None]
    if not math.isfinite(requests):
        requests = 0.0
    return ScalingSignals(
        replicas_reporting=len(present),
        requests_waiting=figures["requests_waiting"],
        kv_cache_usage=figures["kv_cache_usage"],
        ttft_p99_s=figures["ttft_p99_s"],
        requests=requests,
        ttft_burn_rate=burn_rate,
        requests_waiting_capacity=_finite_sum(capacity),
        requests_waiting_for_scaling=_finite_sum(known),
    )


def _finite_or_none(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _finite_sum(values: list[float]) -> float | None:
    """The sum, or None when there is nothing to add or it leaves the float range (not known)."""
    total = sum(values) if values else None
    return total if total is None or math.isfinite(total) else None
