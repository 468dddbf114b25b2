"""The in-memory view of the fleet: recent samples per instance and model, and what they add up to.

This is the only stateful piece between collection and the outputs. It keeps just enough history
for the longest in-memory window (older history lives in the database as per-minute rollups).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

from monitor.config import Config, instance_address
from monitor.evaluate.windows import WindowStats, instance_figures, merge_stats, stats_over, window_stats
from monitor.samples import ModelSample, ScrapeResult


@dataclass(slots=True)
class InstanceTrack:
    pool: str
    instance: str
    url: str
    samples: dict[str, deque[tuple[float, ModelSample]]] = field(default_factory=dict)
    last: ScrapeResult | None = None
    last_success_at: float | None = None
    consecutive_failures: int = 0
    outcomes: dict[float, OutcomeTally] = field(default_factory=dict)  # minute start -> tally


@dataclass(slots=True)
class OutcomeTally:
    """How scraping one instance went during one minute."""

    scrapes: int = 0
    failures: int = 0
    health_failures: int = 0
    total_duration_s: float = 0.0
    max_duration_s: float = 0.0
    last_error_kind: str | None = None
    last_error: str | None = None

    def add(self, result: ScrapeResult) -> None:
        self.scrapes += 1
        self.total_duration_s += result.duration_s
        self.max_duration_s = max(self.max_duration_s, result.duration_s)
        if not result.ok:
            self.failures += 1
            self.last_error_kind, self.last_error = result.error_kind, result.error
        if result.health_error or (result.health_status is not None and result.health_status != 200):
            self.health_failures += 1


@dataclass(frozen=True, slots=True)
class Rollup:
    """One instance's events over one wall-clock minute, ready to store."""

    pool: str
    instance: str
    model_name: str
    minute: float  # unix seconds at the minute's start
    stats: WindowStats


@dataclass(frozen=True, slots=True)
class InstanceView:
    pool: str
    instance: str
    url: str
    state: str
    reasons: tuple[str, ...]
    last_scrape: float | None
    figures: dict[str, float | None]
    models: dict[str, dict[str, float | None]]
    scrape_error: str | None
    scrape_duration_s: float | None
    health_status: int | None


def provisional_state(track: InstanceTrack) -> tuple[str, tuple[str, ...]]:
    """`healthy` when the last scrape and /health succeeded, else `unknown` with the reason.

    Health decisions (degraded / ejected) belong to the decide stage; this only says whether the
    service currently sees the instance at all.
    """
    last = track.last
    if last is None:
        return "unknown", ("not scraped yet",)
    reasons: list[str] = []
    if last.error:
        reasons.append(f"scrape failed ({track.consecutive_failures}x): {last.error}")
    if last.health_error:
        reasons.append(last.health_error)
    elif last.health_status is not None and last.health_status != 200:
        reasons.append(f"/health answered {last.health_status}")
    return ("unknown", tuple(reasons)) if reasons else ("healthy", ())


class FleetView:
    """Ingests scrape results; answers per-instance figures over the rolling window."""

    def __init__(self, config: Config) -> None:
        self.window = config.evaluation.window
        # keep enough for the API window and for a full rollup minute with its baseline scrape
        self.keep = max(self.window, 60.0) + 3 * config.scrape.interval + 120.0
        self.tracks: dict[str, InstanceTrack] = {}
        for pool in config.pools:
            for url in pool.targets:
                address = instance_address(url)
                self.tracks[address] = InstanceTrack(pool.name, address, url)
        self.last_cycle_at: float | None = None
        self.last_cycle_duration_s: float | None = None
        self._stats_cache: dict[tuple[str, float], tuple[float, tuple, dict[str, WindowStats]]] = {}

    def ingest(self, results: Iterable[ScrapeResult]) -> None:
        for result in results:
            track = self.tracks.get(result.instance)
            if track is None:
                continue
            track.last = result
            track.outcomes.setdefault(minute_floor(result.started_at), OutcomeTally()).add(result)
            if not result.ok:
                track.consecutive_failures += 1
                continue
            track.consecutive_failures = 0
            track.last_success_at = result.started_at
            for model in result.models:
                series = track.samples.setdefault(model.model_name, deque())
                series.append((result.started_at, model))
                horizon = result.started_at - self.keep
                while len(series) > 2 and series[1][0] <= horizon:
                    series.popleft()

    def stats(self, track: InstanceTrack, now: float, window: float | None = None) -> dict[str, WindowStats]:
        """Per-model figures over the window ending at `now`.

        Health, scaling and the API each ask for every instance in the same cycle; the answer is
        kept until `now`, the window or the instance's samples change (at 1,000 targets the
        repeated arithmetic was a tenth of the service's CPU).
        """
        window = self.window if window is None else window
        tails = tuple((model, len(series), series[-1][0]) for model, series in track.samples.items() if series)
        key = (track.instance, window)
        cached = self._stats_cache.get(key)
        if cached is not None and cached[0] == now and cached[1] == tails:
            return cached[2]
        out: dict[str, WindowStats] = {}
        for model, series in track.samples.items():
            s = window_stats(list(series), now, window)
            if s is not None:
                out[model] = s
        self._stats_cache[key] = (now, tails, out)
        return out

    def view(self, track: InstanceTrack, now: float) -> InstanceView:
        per_model = self.stats(track, now)
        state, reasons = provisional_state(track)
        last = track.last
        return InstanceView(
            pool=track.pool,
            instance=track.instance,
            url=track.url,
            state=state,
            reasons=reasons,
            last_scrape=last.started_at if last else None,
            figures=instance_figures(merge_stats(list(per_model.values()))),
            models={m: instance_figures(s) for m, s in sorted(per_model.items())},
            scrape_error=last.error if last else None,
            scrape_duration_s=last.duration_s if last else None,
            health_status=last.health_status if last else None,
        )

    def views(self, now: float) -> list[InstanceView]:
        return [self.view(t, now) for t in self.tracks.values()]

    def rollups(self, minute_start: float) -> list[Rollup]:
        """Events of every instance and model in [minute_start, minute_start + 60)."""
        out = []
        end = minute_start + 60.0
        for track in self.tracks.values():
            for model, series in track.samples.items():
                # the last scrape before the minute is the baseline, so minutes partition events exactly
                before = [p for p in series if p[0] < minute_start][-1:]
                stats = stats_over(before + [p for p in series if minute_start <= p[0] < end])
                if stats is not None and stats.end >= minute_start:
                    out.append(Rollup(track.pool, track.instance, model, minute_start, stats))
        return out


def take_outcomes(tracks: Iterable[InstanceTrack], before: float) -> list[tuple[str, float, OutcomeTally]]:
    """Remove and return the tallies of minutes that ended at or before `before`."""
    out = []
    for track in tracks:
        for minute in [m for m in track.outcomes if m + 60.0 <= before]:
            out.append((track.instance, minute, track.outcomes.pop(minute)))
    return out


def minute_floor(t: float) -> float:
    return math.floor(t / 60.0) * 60.0
