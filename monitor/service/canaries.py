"""Canaries each cycle: the evidence of each group gathered from the fleet, judged, and a changed
verdict said once (a log line and a `canary` audit entry).

Evidence accumulates from the moment both groups have members: each cycle adds every member's
events since the scrape it last read (counters and histogram deltas, restarts handled as the
windows handle them), so it is not capped by the evaluation window and both groups cover the same
time. It starts again when either group empties (the rollout ended or was replaced) or the canary's
definition changes on a reload.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitor.collect.discovery.targets import DiscoveredTarget
from monitor.decide.canary import (
    INCONCLUSIVE,
    CanaryVerdict,
    GroupData,
    Rules,
    bucket_counts,
    judge,
    rebin,
)
from monitor.evaluate.fleet import FleetView, InstanceTrack
from monitor.evaluate.windows import stats_over
from monitor.samples import Histogram
from monitor.settings.canaries import CanaryConfig, CanaryGroup
from monitor.settings.slos import LatencyIndicator, SloConfig
from monitor.store import AuditEntry

log = logging.getLogger("monitor.canary")

HISTOGRAMS = ("ttft", "tpot", "itl", "e2e")
COUNTERS = ("prompt_tokens", "generation_tokens", "preemptions")
GAUGES = {"kv_cache_usage": "kv_usage"}  # gauge read at each scrape -> the judge's sample key
MAX_SAMPLES = 20_000  # per group and gauge: past it every other sample is dropped (the spread over time kept)


@dataclass(slots=True)
class Evidence:
    """One group's events added up since the evidence began."""

    requests: float = 0.0
    errors: float = 0.0
    histograms: dict[str, tuple[tuple[float, ...], list[float], float]] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)  # kv_usage: the gauge at each scrape read
    read_to: dict[str, float] = field(default_factory=dict)  # instance -> time of the last scrape read

    def add_track(self, track: InstanceTrack) -> None:
        """The track's events since the scrape last read (from its newest scrape the first time)."""
        latest = max((series[-1][0] for series in track.samples.values() if series), default=None)
        if latest is None:
            return
        since = self.read_to.get(track.instance)
        self.read_to[track.instance] = latest
        if since is None or latest <= since:
            return
        self._add_gauges(track, since)
        for series in track.samples.values():
            points = list(series)
            before = [p for p in points if p[0] <= since][-1:]
            stats = stats_over(before + [p for p in points if p[0] > since])
            if stats is None:
                continue
            attempted = stats.finished_total + stats.increases.get("admission_rejections", 0.0)
            if not (math.isfinite(attempted) and math.isfinite(stats.errors)):
                continue
            self.requests += attempted
            self.errors += stats.errors
            for key in COUNTERS:
                if key in stats.increases:
                    self.counters[key] = self.counters.get(key, 0.0) + stats.increases[key]
            for key in HISTOGRAMS:
                if key in stats.histograms:
                    self._add_histogram(key, stats.histograms[key])

    def _add_gauges(self, track: InstanceTrack, since: float) -> None:
        """Each scrape's gauge values after `since` (one per scrape: an instance serving several
        models reports the same engine's usage in each series). A hostile value (NaN, outside 0..1)
        is not a sample."""
        for gauge, key in GAUGES.items():
            at: dict[float, float] = {}
            for series in track.samples.values():
                for t, sample in series:
                    value = sample.gauges.get(gauge)
                    if t > since and value is not None and math.isfinite(value) and 0.0 <= value <= 1.0:
                        at[t] = value
            if not at:
                continue
            held = self.samples.setdefault(key, [])
            held.extend(at[t] for t in sorted(at))
            if len(held) > MAX_SAMPLES:
                self.samples[key] = held[::2]

    def _add_histogram(self, key: str, hist: Histogram) -> None:
        counts = bucket_counts(hist)
        held = self.histograms.get(key)
        if held is None:
            self.histograms[key] = (hist.bounds, counts, hist.sum)
            return
        bounds, total, total_sum = held
        if hist.bounds != bounds:  # an instance with other buckets (another vLLM release): onto ours
            counts = rebin(hist.bounds, counts, bounds)
        self.histograms[key] = (bounds, [a + b for a, b in zip(total, counts)], total_sum + hist.sum)

    def group_data(self, instances: int) -> GroupData:
        histograms = {}
        for key, (bounds, counts, total_sum) in self.histograms.items():
            cumulative, running = [], 0.0
            for c in counts:
                running += c
                cumulative.append(running)
            histograms[key] = Histogram(bounds, tuple(cumulative), total_sum, running)
        return GroupData(self.requests, self.errors, histograms, dict(self.counters), instances,
                         {k: tuple(v) for k, v in self.samples.items()})


@dataclass(slots=True)
class CanaryState:
    config: CanaryConfig
    baseline: Evidence = field(default_factory=Evidence)
    candidate: Evidence = field(default_factory=Evidence)
    began_at: float | None = None  # both groups had members from then on: the evidence's start
    verdict: CanaryVerdict | None = None
    verdict_since: float | None = None
    members: tuple[list[str], list[str]] = field(default_factory=lambda: ([], []))
    judged_at: float | None = None


def _definition(config: CanaryConfig) -> dict[str, Any]:
    """What the evidence and verdict depend on: everything but whether a failure is notified."""
    return config.model_dump(exclude={"notify"})


def group_members(group: CanaryGroup, default_pool: str,
                  membership: Mapping[str, Mapping[str, DiscoveredTarget]]) -> set[str]:
    """Addresses of the group's pool whose discovery labels include every label the group names."""
    members = membership.get(group.pool or default_pool, {})
    return {address for address, target in members.items()
            if all(target.labels.get(k) == v for k, v in group.labels.items())}


def goodput_thresholds(config: CanaryConfig, slos: Sequence[SloConfig]) -> dict[str, float]:
    """Goodput's objectives for a canary: the tightest threshold per histogram among the latency
    SLOs covering the canary's pool (an SLO with no `pools` covers every pool)."""
    out: dict[str, float] = {}
    for slo in slos:
        indicator = slo.indicator
        if not isinstance(indicator, LatencyIndicator) or indicator.metric not in HISTOGRAMS:
            continue
        if slo.pools is not None and config.pool not in slo.pools:
            continue
        metric, threshold = indicator.metric, float(indicator.threshold)
        out[metric] = min(threshold, out.get(metric, threshold))
    return out


def rules_of(config: CanaryConfig, thresholds: Mapping[str, float] | None = None) -> Rules:
    return Rules(metrics=tuple(config.metrics), tolerance={m: config.tolerance_of(m) for m in config.metrics},
                 min_requests=config.min_requests, min_duration_s=config.min_duration,
                 confidence=config.confidence, normalize=config.normalize,
                 required=frozenset(config.metrics) if "metrics" in config.model_fields_set else frozenset(),
                 baseline_name=config.baseline.short(), candidate_name=config.candidate.short(),
                 goodput_thresholds=dict(thresholds or {}))


class Canaries:
    """Every configured canary's evidence and verdict, updated once per cycle."""

    def __init__(self, canaries: Sequence[CanaryConfig], slos: Sequence[SloConfig] = ()) -> None:
        self.states: dict[str, CanaryState] = {}
        self.thresholds: dict[str, dict[str, float]] = {}  # canary -> goodput's objectives
        self.configure(canaries, slos)

    def configure(self, canaries: Sequence[CanaryConfig], slos: Sequence[SloConfig] = ()) -> None:
        """A reload: a canary whose definition is unchanged keeps its evidence and verdict (changed
        SLO thresholds apply to the evidence held: goodput is read off its histograms when judged)."""
        kept = {c.name: self.states[c.name] for c in canaries
                if c.name in self.states and _definition(self.states[c.name].config) == _definition(c)}
        for c in canaries:
            if c.name in kept:
                kept[c.name].config = c  # `notify` may have changed: not the comparison's definition
        self.states = {c.name: kept.get(c.name) or CanaryState(c) for c in canaries}
        self.thresholds = {c.name: goodput_thresholds(c, slos) for c in canaries}

    def update(self, fleet: FleetView, membership: Mapping[str, Mapping[str, DiscoveredTarget]],
               now: float) -> list[AuditEntry]:
        """Gather, judge, and return an audit entry for each canary whose verdict changed."""
        audit = []
        for state in self.states.values():
            entry = self._update_one(state, fleet, membership, now)
            if entry is not None:
                audit.append(entry)
        return audit

    def _update_one(self, state: CanaryState, fleet: FleetView,
                    membership: Mapping[str, Mapping[str, DiscoveredTarget]], now: float) -> AuditEntry | None:
        config = state.config
        in_base = group_members(config.baseline, config.pool, membership)
        in_cand = group_members(config.candidate, config.pool, membership)
        both = in_base & in_cand  # an instance matching both groups is judged in neither
        base, cand = sorted(in_base - both), sorted(in_cand - both)
        state.members = (base, cand)
        if not base or not cand:
            state.baseline, state.candidate, state.began_at = Evidence(), Evidence(), None
        else:
            if state.began_at is None:
                state.began_at = now
            for evidence, addresses in ((state.baseline, base), (state.candidate, cand)):
                for address in addresses:
                    track = fleet.tracks.get(address)
                    if track is not None:
                        evidence.add_track(track)
        verdict = judge(state.baseline.group_data(len(base)), state.candidate.group_data(len(cand)),
                        rules_of(config, self.thresholds.get(config.name)),
                        None if state.began_at is None else now - state.began_at)
        state.judged_at = now
        before = state.verdict.verdict if state.verdict is not None else None
        state.verdict = verdict
        if before == verdict.verdict:
            return None
        state.verdict_since = now
        if before is None and verdict.verdict == INCONCLUSIVE:
            return None  # every canary starts inconclusive: not a decision
        log.info("canary %s: %s -> %s: %s", config.name, before or "none", verdict.verdict, verdict.reason)
        signals: dict[str, Any] = {"canary": config.name, "requests_baseline": round(verdict.requests[0]),
                                   "requests_candidate": round(verdict.requests[1])}
        for metric, result in verdict.metrics.items():
            if result.change is not None and math.isfinite(result.change):
                signals[f"{metric}_change"] = round(result.change, 4)
        return AuditEntry(now, "canary", config.pool, "", before or INCONCLUSIVE, verdict.verdict,
                          (verdict.reason,), signals)
