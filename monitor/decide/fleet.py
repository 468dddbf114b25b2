"""Every pool's health rules and scaling recommendation, run over one cycle's signals in one loop.

The rules themselves are pure (monitor/decide/health.py, monitor/decide/scaling.py); this keeps
their per-pool state and follows membership, so that an instance joining or leaving changes the
pool it belongs to and nothing else.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Collection, Mapping, Sequence

from monitor.decide.pool import PoolHealth
from monitor.decide.scaling import (
    PoolScaler,
    ScalingRecommendation,
    ScalingSignals,
    scaling_signals,
)
from monitor.decide.verdicts import (
    DEGRADED,
    EJECTED,
    REMOVED,
    InstanceVerdict,
    PoolVerdicts,
    stale,
)
from monitor.evaluate.signals import PoolSignals
from monitor.settings import HealthSettings, ScalingSettings


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """The few settings one pool's decisions read."""

    health: HealthSettings
    scaling: ScalingSettings


@dataclass(frozen=True, slots=True)
class CycleDecisions:
    health: tuple[PoolVerdicts, ...]
    scaling: Mapping[str, ScalingRecommendation]
    # pool -> what went wrong deciding it (a bug): that pool kept its verdicts, the others were decided
    errors: Mapping[str, str] = field(default_factory=dict)


def _cause(exc: BaseException) -> str:
    """`ZeroDivisionError: float division by zero`: one line, bounded."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def _pool_scaling_signals(instances: Collection[str], outcome: PoolVerdicts, snapshot: PoolSignals,
                          burn_rate: float | None) -> ScalingSignals:
    """Scaling reads the instances in rotation; those the health path took out (ejected, hung,
    sleeping, starting, leaving) are named, so that their slowness is read as health, not capacity."""
    serving, out, degraded = [], {}, []
    for i in instances:
        verdict = outcome.verdicts.get(i)
        if verdict is None:
            continue
        if not verdict.serves_traffic:
            out[i] = f"{verdict.state} ({verdict.kind})" if verdict.kind and verdict.state == EJECTED else verdict.state
            continue
        if verdict.state == DEGRADED:
            degraded.append(i)
        if i in snapshot.scraped_ok:
            serving.append(snapshot.stats.get(i))
    return scaling_signals(serving, burn_rate, out_of_rotation=out, degraded=tuple(degraded))


class FleetDecisions:
    """Health verdicts and replica recommendations for every pool, once per cycle."""

    def __init__(self, policies: Mapping[str, PoolPolicy], members: Mapping[str, Sequence[str]],
                 interval_s: float) -> None:
        self.interval_s = interval_s
        self.health: dict[str, PoolHealth] = {}
        self.scalers: dict[str, PoolScaler] = {}
        self.pool_of: dict[str, str] = {}
        self.configure(policies, members)

    def configure(self, policies: Mapping[str, PoolPolicy], members: Mapping[str, Sequence[str]],
                  interval_s: float | None = None) -> None:
        """Take new settings and membership (a reload, discovery); the state of what stays is kept.
        `interval_s`: a reloaded scrape interval (what `stale_after` defaults to three of)."""
        if interval_s is not None:
            self.interval_s = interval_s
            for pool in self.health.values():
                pool.interval_s = interval_s
        for name in [p for p in self.health if p not in policies]:
            del self.health[name], self.scalers[name]
        for name, policy in policies.items():
            health = self.health.get(name)
            if health is None:
                self.health[name] = PoolHealth(name, (), policy.health, self.interval_s)
                self.scalers[name] = PoolScaler(name, policy.scaling)
            else:
                health.settings = policy.health
                self.scalers[name].settings = policy.scaling
        self.set_members(members)

    def set_members(self, members: Mapping[str, Sequence[str]], *, joining: bool = True) -> None:
        """`joining=False` for the fleet as found at start (see `PoolHealth.set_members`)."""
        for name, pool in self.health.items():
            pool.set_members(members.get(name, ()), joining=joining)
        self.pool_of = {i: name for name, pool in self.health.items() for i in pool.instances}

    def windows(self, default: float) -> dict[str, float]:
        """The window each pool's health figures are read over (its own, else the fleet's `default`)."""
        return {name: pool.settings.window or default for name, pool in self.health.items()}

    def judged_since(self) -> dict[str, float]:
        """Instance -> when its health state last changed: the signals of the next cycle cover only
        what it did since (monitor/evaluate/signals.py), so an instance that came back is judged on
        the requests it served after coming back, not on those it served while sick."""
        return {i: h.since for pool in self.health.values() for i, h in pool.instances.items()
                if h.since is not None}

    def decide(self, signals: Mapping[str, PoolSignals], now: float, *, data_at: float | None,
               cycle_duration_s: float | None = None,
               burn_rates: Mapping[str, float | None] | None = None,
               external: Mapping[tuple[str, str], tuple[str, ...]] | None = None,
               skip: Collection[str] = ()) -> CycleDecisions:
        """external: (pool, instance) -> reasons from other sources (GPU telemetry) that degrade;
        burn_rates: pool -> its TTFT SLO's short-window burn rate (a scaling signal); skip: pools
        whose signals could not be built this cycle (they keep, and age, their verdicts)."""
        verdicts: list[PoolVerdicts] = []
        recommendations: dict[str, ScalingRecommendation] = {}
        errors: dict[str, str] = {}
        for name, pool in self.health.items():
            if name in skip:
                continue
            # one pool's bug is that pool's: its verdicts age (and fail open past stale_after), the
            # other pools are decided as if it were not there
            try:
                snapshot = signals.get(name) or PoolSignals(name, 0.0)
                instances = dict(snapshot.instances)
                if external:
                    for instance, sig in snapshot.instances.items():
                        if reasons := external.get((name, instance)):
                            instances[instance] = replace(sig, external_reasons=tuple(reasons))
                outcome = pool.evaluate(instances, now, data_at=data_at, cycle_duration_s=cycle_duration_s)
                verdicts.append(outcome)
                if any(t.to_state == REMOVED for t in outcome.transitions):  # dropped after draining
                    self.pool_of = {i: p for i, p in self.pool_of.items() if p != name or i in pool.instances}
                recommendations[name] = self.scalers[name].recommend(
                    pool.current_replicas(), _pool_scaling_signals(pool.instances, outcome, snapshot,
                                                                   (burn_rates or {}).get(name)), now)
            except Exception as exc:  # noqa: BLE001 - contained to the pool, named by the caller
                errors[name] = _cause(exc)
        return CycleDecisions(tuple(verdicts), recommendations, errors)

    def stale_reason(self, pool: str, now: float | None = None) -> str | None:
        """Why the pool's verdicts fail open as read at `now` (older than its `stale_after`), or None."""
        health = self.health.get(pool)
        return None if health is None else health.stale_reason(time.time() if now is None else now)

    def verdict(self, pool: str, instance: str, now: float | None = None) -> InstanceVerdict | None:
        """The verdict as every output reads it: failing open once older than `stale_after`."""
        health = self.health.get(pool)
        if health is None or instance not in health.instances:
            return None
        verdict = health.verdict_of(health.instances[instance])
        why = health.stale_reason(time.time() if now is None else now)
        return verdict if why is None else stale(verdict, why)

    def find(self, name: str) -> InstanceVerdict | None:
        """A verdict by `pool/host:port` or by `host:port` alone (instances are unique across pools)."""
        name = name.strip()
        if "/" in name:
            pool, _, instance = name.partition("/")
            return self.verdict(pool, instance)
        owner = self.pool_of.get(name)
        return self.verdict(owner, name) if owner else None

    def pool_verdicts(self, pool: str, now: float | None = None) -> list[InstanceVerdict]:
        health = self.health.get(pool)
        if not health:
            return []
        verdicts = list(health.verdicts().values())
        why = health.stale_reason(time.time() if now is None else now)
        return verdicts if why is None else [stale(v, why) for v in verdicts]

    def recommendation(self, pool: str, now: float | None = None) -> ScalingRecommendation | None:
        """The last recommendation; once the pool's decisions are stale it holds the replicas the
        pool runs (an autoscaler must not act on a figure the monitor no longer renews)."""
        scaler = self.scalers.get(pool)
        last = scaler.last if scaler else None
        health = self.health.get(pool)
        why = None if health is None else health.stale_reason(time.time() if now is None else now)
        if last is None or why is None:
            return last
        current = health.current_replicas() if health is not None else last.current_replicas
        # held, but never above max_replicas (a pool discovered larger than its bound): the promise
        # an autoscaler relies on holds whether or not the figure is fresh
        held = min(current, scaler.settings.max_replicas_for(current)) if scaler else current
        return replace(last, current_replicas=current, desired_replicas=held,
                       reason=f"holding the current replicas: {why}", fail_open=why)

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {name: pool.snapshot() for name, pool in self.health.items()}

    def restore(self, saved: Mapping[str, Mapping[str, Mapping[str, Any]]], now: float | None = None) -> None:
        for name, states in saved.items():
            if name in self.health:
                self.health[name].restore(states, now)
