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

Signals: requests waiting per replica (production-stack's scaling signal, target 5), KV-cache usage
(the llm-d saturation threshold 0.8), TTFT p99 against a latency target, and the burn rate of the
pool's TTFT SLO (target 1: spending the error budget exactly as fast as it is earned). GPU
utilisation is deliberately absent: it is a poor scaling signal for LLM serving.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Callable, Mapping, Sequence

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from monitor.units import Ratio, instance_address, parse_duration

if TYPE_CHECKING:
    from monitor.config import Config
    from monitor.evaluate.fleet import FleetView
    from monitor.evaluate.windows import WindowStats


def parse_window(value: Any) -> float:
    """A duration that may be zero (`0s`: no stabilisation, the HPA's scale-up default)."""
    if isinstance(value, str) and value.strip() in ("0", "0s", "0ms", "0m"):
        return 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return 0.0
    return parse_duration(value)


Window = Annotated[float, BeforeValidator(parse_window)]


class ScalingSettings(BaseModel):
    """`pools[].scaling`: targets per metric (null switches a metric off), tolerance, windows, bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_replicas: int = Field(1, ge=0)
    max_replicas: int | None = Field(None, ge=1, description="no upper bound when unset")
    target_waiting_per_replica: float | None = Field(5.0, gt=0)
    target_kv_cache_usage: Ratio | None = 0.8
    target_ttft_p99: Window | None = 0.5
    target_ttft_burn_rate: float | None = Field(1.0, gt=0)
    min_requests: int = Field(10, ge=0, description="requests in the window before TTFT p99 counts")
    tolerance: float = Field(0.1, ge=0.0, lt=1.0)
    scale_up_stabilization: Window = 60.0
    scale_down_stabilization: Window = 300.0

    @model_validator(mode="after")
    def _consistent(self) -> ScalingSettings:
        problems = []
        if self.max_replicas is not None and self.max_replicas < self.min_replicas:
            problems.append("max_replicas must not be below min_replicas")
        if self.target_kv_cache_usage is not None and self.target_kv_cache_usage <= 0:
            problems.append("target_kv_cache_usage must be above 0")
        if self.target_ttft_p99 is not None and self.target_ttft_p99 <= 0:
            problems.append("target_ttft_p99 must be above 0")
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass(frozen=True, slots=True)
class ScalingSignals:
    """A pool's load figures over the recent window; None where not known.

    replicas_reporting: instances whose figures are in the sums and means (serving ones only: an
    ejected instance carries no load and would pull the averages down).
    """

    replicas_reporting: int
    requests_waiting: float | None = None  # summed over reporting replicas
    kv_cache_usage: float | None = None  # mean over reporting replicas
    ttft_p99_s: float | None = None  # pool-wide
    requests: float = 0.0  # requests in the window behind ttft_p99_s
    ttft_burn_rate: float | None = None


@dataclass(frozen=True, slots=True)
class ScalingDecision:
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


def hpa_replicas(current: int, value: float, target: float, tolerance: float) -> int:
    """`ceil(current × value / target)`, or `current` while the ratio is within tolerance of 1.

    From zero replicas the ratio is meaningless (HPA cannot scale from zero); KEDA's AverageValue
    rule `ceil(value / target)` is used instead, with `value` the per-replica figure times nothing:
    callers pass the pool total there.
    """
    ratio = value / target
    if current <= 0:
        return max(0, math.ceil(value / target - 1e-9))
    if abs(ratio - 1.0) <= tolerance:
        return current
    return max(0, math.ceil(current * ratio - 1e-9))


class PoolScaler:
    """One pool's recommendation with its stabilisation history (the only state it keeps)."""

    def __init__(self, pool: str, settings: ScalingSettings | None = None) -> None:
        self.pool = pool
        self.settings = settings or ScalingSettings()
        self.history: deque[tuple[float, int]] = deque()
        self.last: ScalingDecision | None = None

    def recommend(self, current_replicas: int, signals: ScalingSignals, now: float) -> ScalingDecision:
        s = self.settings
        current = max(0, current_replicas)
        metrics: dict[str, dict[str, float]] = {}
        reporting = max(signals.replicas_reporting, 0)

        def add(name: str, value: float | None, target: float | None, *, total: float | None = None) -> None:
            if value is None or target is None:
                return
            basis = total if current <= 0 and total is not None else value
            rec = hpa_replicas(current, basis, target, s.tolerance)
            metrics[name] = {"value": value, "target": target, "ratio": value / target, "recommendation": rec}

        if signals.requests_waiting is not None and reporting > 0:
            add("waiting_per_replica", signals.requests_waiting / reporting, s.target_waiting_per_replica,
                total=signals.requests_waiting)
        elif signals.requests_waiting and current <= 0:
            add("waiting_per_replica", signals.requests_waiting, s.target_waiting_per_replica)
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
        decision = ScalingDecision(self.pool, now, current, desired, reason, {
            "metrics": metrics,
            "raw_recommendation": raw,
            "stabilized_recommendation": stabilised,
            "scale_up_window_min": up_floor,
            "scale_down_window_max": down_ceiling,
            "replicas_reporting": reporting,
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
    together (merged histograms), exactly as `merge_stats` combines an instance's models.
    """
    from monitor.evaluate.windows import instance_figures, merge_stats

    present = [s for s in stats if s is not None]
    merged = merge_stats(present)
    figures = instance_figures(merged)
    requests = merged.histograms["ttft"].count if merged is not None and "ttft" in merged.histograms else 0.0
    return ScalingSignals(
        replicas_reporting=len(present),
        requests_waiting=figures["requests_waiting"],
        kv_cache_usage=figures["kv_cache_usage"],
        ttft_p99_s=figures["ttft_p99_s"],
        requests=requests,
        ttft_burn_rate=burn_rate,
    )


class FleetScaling:
    """Every pool's `PoolScaler`, fed from the service's `FleetView`. Call `evaluate` once per cycle."""

    def __init__(self, config: Config, settings: Mapping[str, ScalingSettings] | None = None) -> None:
        self.scalers: dict[str, PoolScaler] = {}
        self.targets: dict[str, list[str]] = {}
        for pool in config.pools:
            chosen = (settings or {}).get(pool.name) or getattr(pool, "scaling", None) or ScalingSettings()
            self.scalers[pool.name] = PoolScaler(pool.name, chosen)
            self.targets[pool.name] = [instance_address(u) for u in pool.targets]

    def evaluate(self, fleet: FleetView, now: float, *,
                 serving: Callable[[str, str], bool] | None = None,
                 burn_rates: Mapping[str, float | None] | None = None,
                 current: Mapping[str, int] | None = None) -> dict[str, ScalingDecision]:
        """One recommendation per pool.

        serving(pool, instance): whether an instance's figures count (pass the health verdict's
        `serves_traffic`); burn_rates: pool → the TTFT SLO's short-window burn rate; current: pool →
        replicas now (default: the number of configured targets).
        """
        from monitor.evaluate.windows import merge_stats

        out: dict[str, ScalingDecision] = {}
        for name, scaler in self.scalers.items():
            stats = []
            for instance in self.targets[name]:
                track = fleet.tracks.get(instance)
                if track is None or track.last is None or not track.last.ok:
                    continue
                if serving is not None and not serving(name, instance):
                    continue
                stats.append(merge_stats(list(fleet.stats(track, now).values())))
            signals = scaling_signals(stats, (burn_rates or {}).get(name))
            replicas = (current or {}).get(name, len(self.targets[name]))
            out[name] = scaler.recommend(replicas, signals, now)
        return out

    def decision(self, pool: str) -> ScalingDecision | None:
        scaler = self.scalers.get(pool)
        return scaler.last if scaler else None
