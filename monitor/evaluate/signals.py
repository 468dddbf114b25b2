"""Plain per-instance signals, built once per cycle from the fleet's tracks and window figures.

The one place that decides what an observation *says*: whether /health failed, how many requests
the figures rest on, which gauges are current. Health and scaling both read this snapshot, so they
can never disagree about what the monitor saw.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field, fields
from typing import Iterable, Mapping

from monitor.evaluate.fleet import FleetView, InstanceTrack, health_failure
from monitor.evaluate.slo.engine import SloStatus
from monitor.evaluate.windows import WindowStats, instance_figures, merge_stats, sum_known
from monitor.settings import LatencyIndicator


@dataclass(frozen=True, slots=True)
class InstanceSignals:
    """What the service knows about one instance at one evaluation, as plain values.

    `observed_at` identifies the observation (the latest scrape's start, successful or not):
    interval counters (failures, hang, good intervals) move only when it changes, so evaluating
    twice on the same scrape counts nothing twice. Window figures may be None (no traffic).
    """

    observed_at: float | None = None
    scrape_error: str | None = None
    health_error: str | None = None
    ttft_p99_s: float | None = None
    e2e_p99_s: float | None = None
    error_ratio: float | None = None
    requests: float = 0.0  # requests seen in the window (the volume behind the figures)
    kv_cache_usage: float | None = None
    requests_running: float | None = None
    requests_waiting: float | None = None
    generation_tokens_total: float | None = None  # cumulative counter at observed_at
    # the engine's other signs of life at observed_at (cumulative): a hang is work present and none
    # of these moving; iterations (`vllm:iteration_tokens_total`'s count) tick even for one token
    finished_total: float | None = None
    iterations_total: float | None = None
    tpot_p99_s: float | None = None
    sleep_level: float | None = None  # 0 awake, 1 weights offloaded, 2 discarded; None when not reported
    window_s: float | None = None
    # when the figures start later than `window_s` back: the instance's last change of state (health
    # judges it on what it did since: requests served while ejected or sick are not held against it)
    judged_since: float | None = None
    # reasons from outside the metrics page (GPU memory, XID events): they degrade, never eject,
    # because a GPU reading alone cannot tell a fault from vLLM's normal 90% memory reservation
    external_reasons: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.scrape_error is not None or self.health_error is not None

    def values(self) -> dict[str, float | str | None]:
        """The signal values an audit record keeps (shallow: asdict's deep copy cost a tenth of a
        cycle's decisions at 1,000 instances, for fields that are all numbers, strings and tuples)."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}


def instance_signals(track: InstanceTrack, stats: WindowStats | None, window_s: float | None = None,
                     judged_since: float | None = None) -> InstanceSignals:
    """One instance's signals from its track and its merged window stats.

    Gauges and the generation-token counter come from the latest successful sample (the hang rule
    compares counters between observations); latency and error figures from the window.
    """
    last = track.last
    if last is None:
        return InstanceSignals()
    figures = instance_figures(stats)
    requests = 0.0
    if stats is not None:
        counts = [h.count for key, h in stats.histograms.items() if key in ("ttft", "e2e")]
        attempted = stats.finished_total + stats.increases.get("admission_rejections", 0.0)
        requests = max([attempted, *counts])
        if not math.isfinite(requests):
            requests = 0.0  # merged counts past the float range (a hostile page): no volume known
    running = waiting = tokens = finished = iterations = sleep = None
    if last.ok and last.models:
        models = last.models
        # a key one model's page refused (NaN, ±Inf) makes the instance's total unknown, not smaller:
        # a total that dropped would read as progress to the hang rule, or as less load
        refused = frozenset().union(*(m.refused for m in models))
        running = None if "running" in refused else sum_known(m.gauges.get("running") for m in models)
        waiting = None if "waiting" in refused else sum_known(m.gauges.get("waiting") for m in models)
        tokens = (None if "generation_tokens" in refused
                  else sum_known(m.counters.get("generation_tokens") for m in models))
        iterations = (None if "engine_iterations" in refused
                      else sum_known(m.counters.get("engine_iterations") for m in models))
        finished = (None if "finished" in refused
                    else sum_known(sum(m.finished.values()) if m.finished else None for m in models))
        levels = [m.gauges["sleep_level"] for m in models if "sleep_level" in m.gauges]
        sleep = max(levels) if levels else None
    return InstanceSignals(
        observed_at=last.started_at,
        scrape_error=last.error,
        health_error=health_failure(last),
        ttft_p99_s=figures["ttft_p99_s"],
        e2e_p99_s=figures["e2e_p99_s"],
        error_ratio=figures["error_ratio"],
        requests=requests,
        kv_cache_usage=figures["kv_cache_usage"],
        requests_running=running if running is not None else figures["requests_running"],
        requests_waiting=waiting if waiting is not None else figures["requests_waiting"],
        generation_tokens_total=tokens,
        finished_total=finished,
        iterations_total=iterations,
        tpot_p99_s=figures["tpot_p99_s"],
        sleep_level=sleep,
        window_s=window_s,
        judged_since=judged_since,
    )


@dataclass(frozen=True, slots=True)
class PoolSignals:
    """One pool at one cycle: every member's signals, and the merged window stats scaling reads."""

    pool: str
    window_s: float
    instances: Mapping[str, InstanceSignals] = field(default_factory=dict)
    stats: Mapping[str, WindowStats | None] = field(default_factory=dict)
    scraped_ok: frozenset[str] = frozenset()  # members whose last scrape succeeded


def pool_signals(fleet: FleetView, pool: str, members: list[str], now: float, window_s: float,
                 since: Mapping[str, float] | None = None) -> PoolSignals:
    """The snapshot of one pool's members (instances without a track yet are left out: not scraped).
    `since`: instance -> when its health state last changed (the decide stage's); its health
    signals cover only what came after, the scaling stats the whole window."""
    building = _Building(pool, window_s, since)
    building.add(fleet, members, now)
    return building.done()


class _Building:
    """A pool's snapshot while its members are added (in one go, or in batches between awaits)."""

    def __init__(self, pool: str, window_s: float, since: Mapping[str, float] | None = None) -> None:
        self.pool, self.window_s = pool, window_s
        self.since = since or {}
        self.signals: dict[str, InstanceSignals] = {}
        self.stats: dict[str, WindowStats | None] = {}
        self.ok: set[str] = set()

    def add(self, fleet: FleetView, members: list[str], now: float) -> None:
        for instance in members:
            track = fleet.tracks.get(instance)
            if track is None:
                continue
            since = judged_since(self.since.get(instance), now, self.window_s)
            merged = merge_stats(list(fleet.stats(track, now, self.window_s, since).values()))
            self.signals[instance] = instance_signals(track, merged, self.window_s, since)
            self.stats[instance] = (merged if self.window_s == fleet.window and since is None
                                    else merge_stats(list(fleet.stats(track, now).values())))
            if track.last is not None and track.last.ok:
                self.ok.add(instance)

    def done(self) -> PoolSignals:
        return PoolSignals(self.pool, self.window_s, self.signals, self.stats, frozenset(self.ok))


def judged_since(since: float | None, now: float, window_s: float) -> float | None:
    """The start of an instance's health figures when its last change of state cuts its window
    short (None: the whole window). A since not finite or in the future (a clock step, a bad
    restore) cuts nothing: the window is the fallback, never an empty one."""
    if since is None or not math.isfinite(since) or since <= now - window_s or since > now:
        return None
    return since


async def fleet_signals(fleet: FleetView, members: Mapping[str, list[str]], windows: Mapping[str, float],
                        now: float, batch: int = 100, since: Mapping[str, float] | None = None) -> dict[str, PoolSignals]:
    """Every pool's signals for one cycle, built in batches that let the API answer in between (at
    1,000 instances the window figures cost a few hundred ms in one block); health, scaling and
    the API then read the same figures from the fleet's per-cycle cache. `since`: as `pool_signals`."""
    out: dict[str, PoolSignals] = {}
    for pool, instances in members.items():
        building = _Building(pool, windows[pool], since)
        for start in range(0, len(instances), batch):
            building.add(fleet, instances[start:start + batch], now)
            await asyncio.sleep(0)
        out[pool] = building.done()
    return out


def ttft_burn_rates(statuses: Iterable[SloStatus]) -> dict[str, float | None]:
    """Per pool, the highest 5m burn rate among its pool-wide TTFT latency SLOs: a scaling signal."""
    out: dict[str, float | None] = {}
    for status in statuses:
        indicator = status.config.indicator
        if status.key.model_name or not (isinstance(indicator, LatencyIndicator) and indicator.metric == "ttft"):
            continue
        burn = status.evaluation.burn_rates.get("5m")
        if burn is not None:
            current = out.get(status.key.pool)
            out[status.key.pool] = burn if current is None else max(current, burn)
    return out
