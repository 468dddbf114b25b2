"""Desired replicas per pool, by the Kubernetes HPA algorithm, for KEDA, an HPA or an operator to act on.

Why the HPA's own algorithm rather than something cleverer: whoever consumes the number (an HPA on an
external metric, KEDA's metrics-api or prometheus scaler) already reasons in those terms, and the
recommendation stays explainable: per metric `ceil(current × value / target)`, skipped while the
ratio is within `tolerance` of 1, the maximum over metrics, then stabilised:

* scale-up stabilisation (default 60 s): the lowest recommendation in the window, so a rise must last
  the whole window (the seed guidance: "scale up when latency stays above 500 ms for 60–90 s");
* scale-down stabilisation (default 300 s): the highest recommendation in the window, as the HPA
  does, because a vLLM replica takes minutes to load its model and flapping down then up is costly;
* then the scale-up step policy (HPA `behavior`: +100% or +4 per minute, the larger);
* then `min_replicas` / `max_replicas` (finite even when unset).

The ratio is read over the instances in rotation, and a latency signal (TTFT p99, burn rate) counts
towards scaling up only when a capacity signal agrees: one sick node makes the pool's TTFT burn, and
the health path, not another replica, is what fixes that (issue 20: one ejected node asked for 74).

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

    replicas_reporting: instances in rotation (healthy, degraded, unknown) whose figures are in the
    sums and means: an ejected, hung, sleeping, starting or leaving instance carries no load and
    would pull the averages down; it is named in `out_of_rotation` instead.
    """

    replicas_reporting: int
    requests_waiting: float | None = None  # summed over reporting replicas, every reason
    kv_cache_usage: float | None = None  # mean over reporting replicas
    ttft_p99_s: float | None = None  # over the reporting replicas' requests
    requests: float = 0.0  # requests in the window behind ttft_p99_s
    ttft_burn_rate: float | None = None  # the pool's TTFT SLO: every instance's requests, sick ones too
    # summed over the replicas whose page splits waiting by reason (None when none does)
    requests_waiting_capacity: float | None = None
    # what waiting_per_replica reads: capacity waits where a page has them, all waits elsewhere;
    # None falls back to requests_waiting (signals built by hand, older callers)
    requests_waiting_for_scaling: float | None = None
    requests_running: float | None = None  # summed over reporting replicas
    # instance -> what the health path made of it (`ejected (hang)`, `starting`, ...): members out of
    # rotation, whose slowness is health's to handle; and the degraded ones still in rotation
    out_of_rotation: Mapping[str, str] = field(default_factory=dict)
    degraded: tuple[str, ...] = ()

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
    # why the figure is held at the running replicas instead (the pool's decisions are stale), or None
    fail_open: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"pool": self.pool, "current_replicas": self.current_replicas,
               "desired_replicas": self.desired_replicas, "reason": self.reason, "signals": dict(self.signals),
               "stale": self.fail_open is not None}
        for key in ("max_replicas", "deciding_signal", "limited_by"):
            if key in self.signals:
                out[key] = self.signals[key]
        return out


# Kubernetes' replica counts are int32: no recommendation goes above that, whatever a page says
MAX_REPLICAS = 2**31 - 1

# what a signal measures: capacity ones are pool-wide load (another replica takes some of it);
# latency ones may come from load or from a sick node, so they scale up only when capacity agrees
CAPACITY_SIGNALS = ("waiting_per_replica", "kv_cache_usage", "running_share")
LATENCY_SIGNALS = ("ttft_p99_s", "ttft_burn_rate")


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


def ready_replicas(current: int, ready: int, ratio: float, tolerance: float) -> int:
    """The HPA's rule when some replicas are not ready (here: out of rotation or not reporting).

    The ratio is measured over the `ready` ones. Scaling up, the others count as carrying nothing
    (so a pool with starting replicas does not ask for them twice, and an ejected one asks for no
    extra); scaling down, they count as at target (so an ejection does not shrink the pool). A
    recommendation that flips direction or lands within tolerance holds `current`.
    """
    if not math.isfinite(ratio):
        return max(current, 0)
    ready = min(max(ready, 0), current)
    if ready == current:
        return hpa_replicas(current, ratio, 1.0, tolerance)
    if ready == 0:
        return current
    missing = current - ready
    if abs(ratio - 1.0) <= tolerance:
        return current
    used = ready * ratio if ratio > 1.0 else ready * ratio + missing
    if not math.isfinite(used):  # a ratio near the float range: nothing known to act on, as hpa_replicas
        return max(current, 0)
    new_ratio = used / current
    if abs(new_ratio - 1.0) <= tolerance or (new_ratio > 1.0) != (ratio > 1.0):
        return current
    return min(max(0, math.ceil(used - 1e-9)), MAX_REPLICAS)


def step_limit(base: int, percent: float | None, replicas: int | None) -> int | None:
    """HPA `behavior.scaleUp` with selectPolicy Max: the most replicas a period may end with,
    counted from `base` (the replicas at its start); None when both policies are off."""
    limits = []
    if percent is not None:
        limits.append(math.ceil(base * (1.0 + percent / 100.0) - 1e-9))
    if replicas is not None:
        limits.append(base + replicas)
    return min(max(limits), MAX_REPLICAS) if limits else None


class PoolScaler:
    """One pool's recommendation with its stabilisation and step history (the only state it keeps)."""

    def __init__(self, pool: str, settings: ScalingSettings | None = None) -> None:
        self.pool = pool
        self.settings = settings or ScalingSettings()
        self.history: deque[tuple[float, int]] = deque()
        self.currents: deque[tuple[float, int]] = deque()  # (time, current replicas) over scale_up_period
        self.last: ScalingRecommendation | None = None

    def recommend(self, current_replicas: int, signals: ScalingSignals, now: float) -> ScalingRecommendation:
        s = self.settings
        current = max(0, current_replicas)
        metrics: dict[str, dict[str, Any]] = {}
        reporting = max(signals.replicas_reporting, 0)

        def add(name: str, value: float | None, target: float | None, *, total: float | None = None) -> None:
            # a figure that is not a finite number is not known (it cannot be a reason either)
            if value is None or not target or not math.isfinite(value) or not math.isfinite(value / target):
                return
            if total is not None and not math.isfinite(total):
                return
            if current <= 0:
                rec = hpa_replicas(current, total if total is not None else value, target, s.tolerance)
            else:
                rec = ready_replicas(current, min(reporting, current), value / target, s.tolerance)
            metrics[name] = {"value": value, "target": target, "ratio": value / target, "recommendation": rec,
                             "role": "capacity" if name in CAPACITY_SIGNALS else "latency", "counted": True}

        waiting = signals.waiting_signal
        if waiting is not None and reporting > 0:
            add("waiting_per_replica", waiting / reporting, s.target_waiting_per_replica, total=waiting)
        elif waiting and current <= 0:
            add("waiting_per_replica", waiting, s.target_waiting_per_replica)
        if reporting > 0:
            add("kv_cache_usage", signals.kv_cache_usage, s.target_kv_cache_usage)
            if s.max_num_seqs and signals.requests_running is not None and s.target_running_share:
                add("running_share", signals.requests_running / reporting / s.max_num_seqs, s.target_running_share)
            if signals.requests >= max(s.min_requests, 1):
                add("ttft_p99_s", signals.ttft_p99_s, s.target_ttft_p99)
            add("ttft_burn_rate", signals.ttft_burn_rate, s.target_ttft_burn_rate)
        self._set_aside_latency(current, metrics, signals)

        counted = {m: v for m, v in metrics.items() if v["counted"]}
        if counted:
            driver: str | None = max(counted, key=lambda m: (counted[m]["recommendation"], m))
            raw = int(counted[driver]["recommendation"])  # type: ignore[index]
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

        # the step policy counts from the fewest replicas seen in the period (its start, as the HPA
        # counts from the replicas before this period's scale-ups)
        self.currents.append((now, current))
        while self.currents and self.currents[0][0] <= now - s.scale_up_period:
            self.currents.popleft()
        period_base = min((c for _, c in self.currents), default=current)
        limit = step_limit(period_base, s.scale_up_max_percent, s.scale_up_max_replicas)
        if limit is not None and desired > current and desired > limit:
            desired = max(limit, current)
        stepped = desired
        desired = max(desired, s.min_replicas)
        max_replicas = s.max_replicas_for(current)
        desired = min(desired, max_replicas)

        limited_by = None
        if desired != stepped:
            limited_by = "min_replicas" if desired == s.min_replicas and desired > stepped else "max_replicas"
        elif stepped != stabilised:
            limited_by = "scale_up_policy"
        elif stabilised != raw:
            limited_by = "scale_up_stabilization" if raw > stabilised else "scale_down_stabilization"

        reason = self._reason(current, raw, stabilised, stepped, desired, driver, metrics, up_floor, down_ceiling,
                              period_base, limit, max_replicas)
        decision = ScalingRecommendation(self.pool, now, current, desired, reason, {
            "metrics": metrics,
            "deciding_signal": driver,
            "limited_by": limited_by,
            "raw_recommendation": raw,
            "stabilized_recommendation": stabilised,
            "scale_up_window_min": up_floor,
            "scale_down_window_max": down_ceiling,
            "scale_up_limit": limit,
            "replicas_reporting": reporting,
            "out_of_rotation": dict(signals.out_of_rotation),
            # both queues: waiting_per_replica reads the capacity one where the pages split it
            "requests_waiting": _finite_or_none(signals.requests_waiting),
            "requests_waiting_capacity": _finite_or_none(signals.requests_waiting_capacity),
            "min_replicas": s.min_replicas,
            "max_replicas": max_replicas,
            "max_replicas_configured": s.max_replicas is not None,
        })
        self.last = decision
        return decision

    def _set_aside_latency(self, current: int, metrics: dict[str, dict[str, Any]], signals: ScalingSignals) -> None:
        """Latency signals that ask for more replicas count only when a capacity signal agrees (is
        at least `capacity_agreement` of its target). Otherwise the slowness is health's: a burn
        that comes from an instance out of rotation (ejected, hung, asleep, starting, leaving), or
        a slow node still in rotation (degraded), is not fixed by more replicas."""
        s = self.settings
        pressure = max((metrics[m]["ratio"] for m in CAPACITY_SIGNALS if m in metrics), default=None)
        agrees = pressure is not None and pressure >= s.capacity_agreement
        out = signals.out_of_rotation
        ttft = metrics.get("ttft_p99_s")
        in_rotation_fast = ttft is not None and ttft["ratio"] <= 1.0 + s.tolerance
        for name in LATENCY_SIGNALS:
            m = metrics.get(name)
            if m is None or m["recommendation"] <= current:
                continue
            if name == "ttft_burn_rate" and out and in_rotation_fast:
                m["counted"] = False
                m["set_aside"] = (f"health, not capacity: the instances in rotation meet the TTFT target "
                                  f"({ttft['value']:.3g} s); out of rotation: {_named(out)}")  # type: ignore[index]
            elif not agrees:
                m["counted"] = False
                load = ("no capacity signal known" if pressure is None else
                        f"no capacity signal at {s.capacity_agreement:g} of its target")
                if out:
                    m["set_aside"] = f"health, not capacity ({load}): out of rotation: {_named(out)}"
                elif signals.degraded:
                    m["set_aside"] = f"health, not capacity ({load}): degraded: {', '.join(signals.degraded)}"
                else:
                    m["set_aside"] = f"not capacity: {load}"

    def _reason(self, current: int, raw: int, stabilised: int, stepped: int, desired: int, driver: str | None,
                metrics: Mapping[str, Mapping[str, Any]], up_floor: int, down_ceiling: int,
                period_base: int, limit: int | None, max_replicas: int) -> str:
        s = self.settings
        if driver is None:
            why = "no load signal (no replica reporting)" if not metrics else "no signal counted"
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
        if stepped != stabilised:
            parts.append(f"limited to {stepped} by the scale-up policy (+{s.scale_up_max_percent or 0:g}% or "
                         f"+{s.scale_up_max_replicas or 0} per {s.scale_up_period:g}s from {period_base}, "
                         f"the larger: {limit})")
        if desired != stepped:
            if desired == s.min_replicas and desired > stepped:
                parts.append(f"clamped to min_replicas {desired}")
            else:
                unset = "" if s.max_replicas is not None else " (unset: the default)"
                parts.append(f"clamped to max_replicas {max_replicas}{unset}")
        others = [_signal_line(name, m) for name, m in metrics.items() if name != driver]
        if others:
            parts.append("other signals: " + ", ".join(others))
        verb = "scale up" if desired > current else "scale down" if desired < current else "hold"
        return f"{verb} {current} -> {desired}: " + "; ".join(parts)


def _signal_line(name: str, m: Mapping[str, Any]) -> str:
    line = f"{name} {m['value']:.3g} vs {m['target']:.3g} wants {m['recommendation']}"
    return line if m.get("counted", True) else f"{line}, set aside ({m['set_aside']})"


def _named(instances: Mapping[str, str], limit: int = 5) -> str:
    """`10.0.0.4:8000 ejected, ...` (the first few; a count for the rest)."""
    items = [f"{i} {state}" for i, state in sorted(instances.items())]
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f" and {more} more" if more > 0 else "")


def scaling_signals(stats: Sequence[WindowStats | None], burn_rate: float | None = None, *,
                    out_of_rotation: Mapping[str, str] | None = None, degraded: tuple[str, ...] = ()) -> ScalingSignals:
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
        requests_running=_finite_or_none(figures["requests_running"]),
        out_of_rotation=dict(out_of_rotation or {}),
        degraded=degraded,
    )


def _finite_or_none(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _finite_sum(values: list[float]) -> float | None:
    """The sum, or None when there is nothing to add or it leaves the float range (not known)."""
    total = sum(values) if values else None
    return total if total is None or math.isfinite(total) else None
