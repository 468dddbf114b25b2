"""The in-memory view of the fleet: recent samples per instance and model, and what they add up to.

This is the only stateful piece between collection and the outputs. It keeps just enough history
for the longest in-memory window (older history lives in the database as per-minute rollups).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from operator import eq
from typing import Callable, Iterable, Mapping, TypeVar

from monitor.evaluate.windows import (
    SeriesMarks,
    WindowStats,
    exact_counts,
    figure_sources,
    instance_figures,
    interval_stats,
    merge_stats,
    restarts,
    window_stats,
)
from monitor.samples import Histogram, ModelSample, ScrapeResult

T = TypeVar("T")


@dataclass(slots=True)
class InstanceTrack:
    pool: str
    instance: str
    url: str
    samples: dict[str, deque[tuple[float, ModelSample]]] = field(default_factory=dict)
    logs: dict[str, SeriesLog] = field(default_factory=dict)  # model -> what ingest learnt of its samples
    last: ScrapeResult | None = None
    last_success_at: float | None = None
    consecutive_failures: int = 0
    outcomes: dict[float, OutcomeTally] = field(default_factory=dict)  # minute start -> tally
    # series its pages held that were not used, since it joined: BadSample.kind -> count
    bad_samples: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class SeriesLog:
    """What ingest learnt of one model's readings as they arrived, by sequence number (readings ever
    appended: the deque drops old ones): the last reading that went back in time, restarted a key,
    or held a count that is not an exact integer (windows.SeriesMarks; -1 for none). A handful of
    ints per series that spare every cycle's windows a pass over their readings."""

    appended: int = 0
    last_backwards: int = -1
    last_restart: int = -1
    last_inexact: int = -1

    def add(self, before: deque[tuple[float, ModelSample]], t: float, sample: ModelSample) -> None:
        """Note `sample`, read at `t`, about to be appended to `before`."""
        seq = self.appended
        self.appended += 1
        if before and not t >= before[-1][0]:
            self.last_backwards = seq
        if restarts(before, sample):
            self.last_restart = seq
        if not exact_counts(sample):
            self.last_inexact = seq

    def marks(self, kept: int) -> SeriesMarks:
        """As indices into the `kept` readings the deque holds (the newest ones)."""
        base = self.appended - kept  # the sequence number of the oldest one kept
        return SeriesMarks(self.last_backwards <= base, self.last_restart - base, self.last_inexact - base)


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
        if health_failure(result) is not None:
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
    """What the monitor sees of one instance: its figures over the window and its last scrape.
    The health verdict (state, reasons) is the decide stage's and is joined to this by the outputs."""

    pool: str
    instance: str
    url: str
    last_scrape: float | None
    figures: dict[str, float | None]
    models: dict[str, dict[str, float | None]]
    scrape_error: str | None
    scrape_duration_s: float | None
    health_status: int | None
    sources: dict[str, str] = field(default_factory=dict)  # figure -> vLLM family (windows.figure_sources)
    # what the last scrape's page held that was not used ("bad sample: vllm:x = NaN"), and the count
    # of such series since the instance joined, by kind (samples.BadSample)
    bad_samples: tuple[str, ...] = ()
    bad_samples_total: Mapping[str, int] = field(default_factory=dict)


def health_failure(result: ScrapeResult) -> str | None:
    """Why the /health probe of one scrape failed, or None when it passed or was not asked.

    The one place this is worked out: the tallies, the signals health judges and the API all use it.
    """
    if result.health_error is not None:
        return result.health_error
    if result.health_status is not None and result.health_status != 200:
        return f"/health answered {result.health_status}"
    return None


class FleetView:
    """Ingests scrape results; answers per-instance figures over the rolling window."""

    def __init__(self, window_s: float, scrape_interval_s: float,
                 members: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.tracks: dict[str, InstanceTrack] = {}
        self.configure(window_s, scrape_interval_s)
        if members:
            self.set_members(members)
        self.last_cycle_at: float | None = None
        self.last_cycle_duration_s: float | None = None
        self._stats_cache: dict[tuple[str, float, float | None], tuple[float, tuple, dict[str, WindowStats]]] = {}
        self._cut_since: dict[tuple[str, float], float] = {}  # (instance, window) -> the since cached for it
        self._view_cache: dict[str, tuple[dict[str, WindowStats], ScrapeResult | None, str, InstanceView]] = {}

    def configure(self, window_s: float, scrape_interval_s: float, longest_window_s: float = 0.0) -> None:
        """The API's window, and how much history to keep: enough for the longest window anyone
        reads (a pool's own health window may be longer) and for a full rollup minute with its
        baseline scrape. A reload that lengthens a window gets it filled, not cut at the old length."""
        self.window = window_s
        self.keep = max(window_s, longest_window_s, 60.0) + 3 * scrape_interval_s + 120.0

    def set_members(self, members: Mapping[str, Mapping[str, str]]) -> tuple[list[InstanceTrack], list[InstanceTrack]]:
        """Follow the fleet's membership (pool -> {address: url}): tracks of instances that stay are
        kept as they are; returns (joined, left). A departed instance's samples go with it (its
        history is in the database), so churn cannot grow memory."""
        wanted = {address: (pool, url) for pool, instances in members.items() for address, url in instances.items()}
        left = [t for a, t in self.tracks.items() if a not in wanted or wanted[a][0] != t.pool]
        for gone in left:
            del self.tracks[gone.instance]
            self._view_cache.pop(gone.instance, None)
            for key in [k for k in self._stats_cache if k[0] == gone.instance]:
                del self._stats_cache[key]
            for cut in [k for k in self._cut_since if k[0] == gone.instance]:
                del self._cut_since[cut]
        joined: list[InstanceTrack] = []
        for address, (pool, url) in wanted.items():
            track = self.tracks.get(address)
            if track is None:
                track = self.tracks[address] = InstanceTrack(pool, address, url)
                joined.append(track)
            else:
                track.url = url
        return joined, left

    def ingest(self, results: Iterable[ScrapeResult]) -> None:
        for result in results:
            track = self.tracks.get(result.instance)
            if track is None:
                continue
            track.last = result
            track.outcomes.setdefault(minute_floor(result.started_at), OutcomeTally()).add(result)
            for bad in result.bad_samples:
                track.bad_samples[bad.kind] = track.bad_samples.get(bad.kind, 0) + 1
            if not result.ok:
                track.consecutive_failures += 1
                continue
            track.consecutive_failures = 0
            track.last_success_at = result.started_at
            for model in result.models:
                series = track.samples.setdefault(model.model_name, deque())
                if series:
                    model = share_unchanged(series[-1][1], model)
                log = track.logs.get(model.model_name)
                if log is None:
                    log = track.logs[model.model_name] = SeriesLog()
                log.add(series, result.started_at, model)
                series.append((result.started_at, model))
                horizon = result.started_at - self.keep
                while len(series) > 2 and series[1][0] <= horizon:
                    series.popleft()

    def stats(self, track: InstanceTrack, now: float, window: float | None = None,
              since: float | None = None) -> dict[str, WindowStats]:
        """Per-model figures over the window ending at `now` (starting no earlier than `since`:
        health judges an instance on what it did since its state last changed).

        Health, scaling and the API each ask for every instance in the same cycle; the answer is
        kept until `now`, the window or the instance's samples change (at 1,000 targets the
        repeated arithmetic was a tenth of the service's CPU).
        """
        window = self.window if window is None else window
        if since is not None and since <= now - window:
            since = None  # the state is older than the window: the whole window, and its cache entry
        tails = tuple((model, len(series), series[-1][0]) for model, series in track.samples.items() if series)
        key = (track.instance, window, since)
        cached = self._stats_cache.get(key)
        if cached is not None and cached[0] == now and cached[1] == tails:
            return cached[2]
        out: dict[str, WindowStats] = {}
        for model, series in track.samples.items():
            s = window_stats(list(series), now, window, since, self._marks(track, model))
            if s is not None:
                out[model] = s
        if since is not None:  # a state change replaces the last: one cut window per instance and window
            previous = self._cut_since.get(key[:2])
            if previous is not None and previous != since:
                self._stats_cache.pop((track.instance, window, previous), None)
            self._cut_since[key[:2]] = since
        self._stats_cache[key] = (now, tails, out)
        return out

    @staticmethod
    def _marks(track: InstanceTrack, model: str) -> SeriesMarks | None:
        log = track.logs.get(model)
        return None if log is None else log.marks(len(track.samples[model]))

    def view(self, track: InstanceTrack, now: float) -> InstanceView:
        """The instance's figures at `now`; /metrics, the API, the console and cost each ask for every
        instance, so the view is kept until its figures (the cached stats object), last scrape or URL change."""
        per_model = self.stats(track, now)
        kept = self._view_cache.get(track.instance)
        if kept is not None and kept[0] is per_model and kept[1] is track.last and kept[2] == track.url:
            return kept[3]
        view = self._view(track, per_model)
        self._view_cache[track.instance] = (per_model, track.last, track.url, view)
        return view

    def _view(self, track: InstanceTrack, per_model: dict[str, WindowStats]) -> InstanceView:
        merged = merge_stats(list(per_model.values()))
        last = track.last
        return InstanceView(
            pool=track.pool,
            instance=track.instance,
            url=track.url,
            last_scrape=last.started_at if last else None,
            figures=instance_figures(merged),
            models={m: instance_figures(s) for m, s in sorted(per_model.items())},
            scrape_error=last.error if last else None,
            scrape_duration_s=last.duration_s if last else None,
            health_status=last.health_status if last else None,
            sources=figure_sources(merged),
            bad_samples=tuple(str(b) for b in last.bad_samples) if last else (),
            bad_samples_total=dict(track.bad_samples),
        )

    def views(self, now: float) -> list[InstanceView]:
        return [self.view(t, now) for t in self.tracks.values()]

    def model_of(self, pool: str, instance: str | None) -> str | None:
        """The model an instance serves, for vLLM V1 spans that do not name it: the scraped one
        (else the pool's, when the whole pool serves one model)."""
        track = self.tracks.get(instance) if instance else None
        models = [m for m in (track.samples if track else {}) if m]
        if len(models) == 1:
            return models[0]
        pool_models = {m for t in self.tracks.values() if t.pool == pool for m in t.samples if m}
        return next(iter(pool_models)) if len(pool_models) == 1 else None

    def rollups(self, minute_start: float, tracks: Iterable[InstanceTrack] | None = None) -> list[Rollup]:
        """Events of every instance (or of `tracks`: ones just dropped) and model in [minute_start, minute_start + 60)."""
        out = []
        end = minute_start + 60.0
        for track in self.tracks.values() if tracks is None else tracks:
            for model, series in track.samples.items():
                # the last scrape before the minute is the baseline, so minutes partition events exactly
                stats = interval_stats(list(series), minute_start, end, self._marks(track, model))
                if stats is not None and stats.end >= minute_start:
                    out.append(Rollup(track.pool, track.instance, model, minute_start, stats))
        return out


def share_unchanged(previous: ModelSample, sample: ModelSample) -> ModelSample:
    """`sample` holding what it repeats of the instance's previous reading as the previous reading's
    objects: its histograms, counters, gauges and finished counts equal to the previous ones are
    replaced in place by those (equal values, so nothing anyone reads changes; only the copies go),
    and a mapping holding the previous one's items in the same order is the previous one (then the
    reading kept is a copy of `sample` holding it).

    A reading is ~3.5 KB once the page's own repeats are shared (monitor/collect/vllm.py); an idle
    instance repeats all of it scrape after scrape, one with traffic its capacity gauges, the
    counters that do not move (preemptions, zeros) and its histograms without new requests. Samples
    come from the normaliser, whose numbers are never -0.0 (the one float equal to another it is not).
    """
    kept = (_shared(sample.histograms, previous.histograms, _same_histogram),
            _shared(sample.counters, previous.counters),
            _shared(sample.gauges, previous.gauges),
            _shared(sample.finished, previous.finished))
    if (kept[0] is sample.histograms and kept[1] is sample.counters and kept[2] is sample.gauges
            and kept[3] is sample.finished):
        return sample
    return replace(sample, histograms=kept[0], counters=kept[1], gauges=kept[2], finished=kept[3])


def _same_histogram(was: Histogram, hist: Histogram) -> bool:
    """Histogram's ==, the fields that move with traffic compared first."""
    return (was.count == hist.count and was.sum == hist.sum and was.cumulative == hist.cumulative
            and was.bounds == hist.bounds)


def _shared(mine: Mapping[str, T], before: Mapping[str, T], same: Callable[[T, T], bool] = eq) -> Mapping[str, T]:
    """`mine` with its values equal to `before`'s replaced by those; `before` itself when that leaves
    `mine` holding `before`'s items in `before`'s order."""
    if mine is before or not isinstance(mine, dict):
        return mine
    whole = len(mine) == len(before)
    for key, value in mine.items():
        old = before.get(key)
        if old is value:
            continue
        if old is not None and same(old, value):
            mine[key] = old
        else:
            whole = False
    return before if whole and list(mine) == list(before) else mine


def take_outcomes(tracks: Iterable[InstanceTrack], before: float) -> list[tuple[str, float, OutcomeTally]]:
    """Remove and return the tallies of minutes that ended at or before `before`."""
    out = []
    for track in tracks:
        for minute in [m for m in track.outcomes if m + 60.0 <= before]:
            out.append((track.instance, minute, track.outcomes.pop(minute)))
    return out


def minute_floor(t: float) -> float:
    return math.floor(t / 60.0) * 60.0
