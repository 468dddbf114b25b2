"""The SLO engine: each scrape cycle's events per SLO and pool (and model), kept per minute, evaluated.

`slo.py` holds the arithmetic and knows nothing about scrapes; this module is the stateful part
between them. After every cycle it turns each instance's last scrape interval into good/valid
events for every SLO that covers the instance's pool, adds them to one `EventSeries` per
(SLO, pool) and, where a pool serves several `model_name`s, per (SLO, pool, model). It then
evaluates budgets and burn-rate alerts for all of them at once, so the API, /metrics and
Alertmanager all show the numbers of the same moment.

Per interval, not per window: two consecutive scrapes of one instance and model give that
interval's increases (`windows.stats_over`, counter resets handled), and intervals partition time,
so every request is counted exactly once however the windows are later cut. The engine keeps its
own last sample per instance and model rather than reading the fleet view's deques, so it can be
driven by plain `ScrapeResult`s in tests and never depends on how long the view keeps history.

Persistence: every minute an event lands in is marked dirty; the service drains the dirty minutes
into the store's buffered writes (`take_rows`), the minute still filling included, so a crash loses
at most one flush interval. On start `load` rebuilds the series from the stored minutes, which is
what keeps a 30-day budget and the 1h..3d windows across restarts without 30 days in memory.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from monitor.config import AvailabilityIndicator, Config, LatencyIndicator, SloConfig
from monitor.evaluate.slo import (
    MINUTE,
    PAIRS,
    EventSeries,
    Events,
    SloEvaluation,
    availability_events,
    count_events,
    evaluate,
    instance_available,
    retention_for,
)
from monitor.evaluate.windows import stats_over
from monitor.samples import ModelSample, ScrapeResult

log = logging.getLogger(__name__)

POOL_WIDE = ""  # the model_name of a key that covers every model a pool serves


@dataclass(frozen=True, slots=True)
class SloKey:
    """What one event series and one evaluation belong to."""

    slo: str
    pool: str
    model_name: str = POOL_WIDE


@dataclass(frozen=True, slots=True)
class SloEventRow:
    """One stored minute: (SLO, pool, model) good/valid events in [minute, minute + 60)."""

    slo: str
    pool: str
    model_name: str
    minute: float  # unix seconds at the minute's start
    good: float
    total: float


@dataclass(frozen=True, slots=True)
class SloStatus:
    """One SLO, pool (and model) as evaluated at `evaluated_at`: what every output publishes."""

    key: SloKey
    config: SloConfig
    evaluation: SloEvaluation
    evaluated_at: float

    @property
    def model_name(self) -> str | None:
        return self.key.model_name or None

    def fired_severities(self) -> tuple[str, ...]:
        """`page` and/or `ticket`: a ticket pair firing during a page is reported too, so that
        Alertmanager can inhibit it explicitly instead of it appearing when the page clears."""
        severities = {p.severity for p in PAIRS if p.name in self.evaluation.fired}
        return tuple(s for s in ("page", "ticket") if s in severities)


def predicted_exact(slo: SloConfig) -> bool:
    """Whether a latency threshold sits on one of vLLM's default bucket bounds (what `check` says).

    Used for `exact` until this process has seen real histograms: after a restart the stored
    minutes hold counts only, and the API must not claim an interpolated SLI is exact meanwhile.
    """
    if not isinstance(slo.indicator, LatencyIndicator):
        return True
    from monitor.collect.vllm import threshold_warning  # late: evaluation must not need the collector

    return threshold_warning(slo.indicator.metric, slo.indicator.threshold) is None


class _Track:
    """One key's series, exactness and the minutes not yet written to the database."""

    __slots__ = ("key", "config", "series", "predicted_exact", "observed_exact", "dirty")

    def __init__(self, key: SloKey, config: SloConfig, keep_rows: bool) -> None:
        self.key = key
        self.config = config
        self.series = EventSeries(retention_for(config.window))
        self.predicted_exact = predicted_exact(config)
        self.observed_exact: bool | None = None  # None until an interval with events was counted
        # minute numbers (unix seconds // 60) not yet handed to the store; None without a store,
        # where nobody would ever drain it
        self.dirty: set[int] | None = set() if keep_rows else None

    @property
    def exact(self) -> bool:
        return self.predicted_exact if self.observed_exact is None else self.observed_exact

    def file(self, start: float, end: float, events: Events) -> None:
        """Add one interval's events. Up to a minute long they go to the minute holding the
        interval's midpoint (as EventSeries asks); a longer one (scrapes failed in between, the
        increase covers the gap) is spread evenly over the minutes it spans, so a 10-minute gap
        does not pile 10 minutes of errors into one and spike the 5m window."""
        if events.total <= 0:
            return
        self.observed_exact = events.exact if self.observed_exact is None else self.observed_exact and events.exact
        good = min(events.good, events.total)
        if end - start <= MINUTE:
            self._add((start + end) / 2.0, good, events.total)
            return
        span = end - start
        first = max(start, end - self.series.retention - MINUTE)  # older minutes would be pruned anyway
        minute = math.floor(first / MINUTE) * MINUTE
        while minute < end:
            lo, hi = max(minute, start), min(minute + MINUTE, end)
            if hi > lo:
                share = (hi - lo) / span
                self._add((lo + hi) / 2.0, good * share, events.total * share)
            minute += MINUTE

    def _add(self, t: float, good: float, total: float) -> None:
        self.series.add(t, good, total)
        if self.dirty is not None:
            self.dirty.add(math.floor(t / MINUTE))


class SloEngine:
    """Counts, keeps and evaluates every configured SLO per pool (and per model where relevant)."""

    def __init__(self, config: Config, *, keep_rows: bool = True) -> None:
        """`keep_rows`: remember changed minutes for `take_rows` (False when nothing persists)."""
        self.keep_rows = keep_rows
        self.slos: tuple[SloConfig, ...] = tuple(config.slos)
        self.health_checked = config.scrape.health_path is not None
        pool_names = [p.name for p in config.pools]
        self._slo_order = {s.name: i for i, s in enumerate(self.slos)}
        self._pool_order = {name: i for i, name in enumerate(pool_names)}
        self._by_name = {s.name: s for s in self.slos}
        self._by_pool: dict[str, list[SloConfig]] = {name: [] for name in pool_names}
        self._tracks: dict[SloKey, _Track] = {}
        for slo in self.slos:
            for pool in slo.pools or pool_names:
                self._by_pool[pool].append(slo)
                key = SloKey(slo.name, pool)
                self._tracks[key] = _Track(key, slo, keep_rows)
        self._previous: dict[tuple[str, str], tuple[float, ModelSample]] = {}  # (instance, model) -> last
        self.multi_model: set[str] = set()  # pools seen serving more than one model_name
        self.statuses: list[SloStatus] = []
        self.evaluated_at: float | None = None

    # -- counting ---------------------------------------------------------------------------------

    def observe(self, results: Iterable[ScrapeResult]) -> None:
        """Count the events of one scrape cycle (or any batch of scrape results, in time order)."""
        results = list(results)
        self._note_models(results)
        for result in results:
            slos = self._by_pool.get(result.pool)
            if not slos:
                continue
            t = result.started_at
            for slo in slos:
                if isinstance(slo.indicator, AvailabilityIndicator):
                    # one event per instance per scrape: the interval is the unit, whatever happened
                    events = availability_events(instance_available(result, self.health_checked))
                    self._track(SloKey(slo.name, result.pool)).file(t, t, events)
            if not result.ok:
                continue  # no metrics: nothing to count but availability (the increase waits for the next success)
            for sample in result.models:
                previous = self._previous.get((result.instance, sample.model_name))
                self._previous[(result.instance, sample.model_name)] = (t, sample)
                if previous is None or previous[0] >= t:
                    continue  # the first scrape after start is only a baseline
                stats = stats_over([previous, (t, sample)])
                if stats is None:
                    continue
                per_model = result.pool in self.multi_model
                for slo in slos:
                    if isinstance(slo.indicator, AvailabilityIndicator):
                        continue
                    events = count_events(slo.indicator, stats)
                    self._track(SloKey(slo.name, result.pool)).file(previous[0], t, events)
                    if per_model:
                        self._track(SloKey(slo.name, result.pool, sample.model_name)).file(previous[0], t, events)

    def _note_models(self, results: Sequence[ScrapeResult]) -> None:
        """A pool serves several models once one cycle shows more than one `model_name` in it.

        Per-model series start from then (sticky for the process): a single-model pool would only
        hold the same numbers twice, at twice the memory and rows.
        """
        seen: dict[str, set[str]] = {}
        for result in results:
            if result.ok:
                seen.setdefault(result.pool, set()).update(m.model_name for m in result.models)
        for pool, models in seen.items():
            if len(models) > 1 and pool not in self.multi_model and self._by_pool.get(pool):
                log.info("pool %s serves %d models: SLOs are evaluated per model_name too", pool, len(models))
                self.multi_model.add(pool)

    def _track(self, key: SloKey) -> _Track:
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track(key, self._by_name[key.slo], self.keep_rows)
        return track

    # -- evaluating -------------------------------------------------------------------------------

    def evaluate(self, now: float) -> list[SloStatus]:
        """Evaluate every key at `now`; the result is also kept in `statuses` for the outputs."""
        statuses = []
        for key in sorted(self._tracks, key=self._sort_key):
            track = self._tracks[key]
            slo = track.config
            evaluation = evaluate(track.series, now, slo.objective, slo.window, exact=track.exact,
                                  min_bad_events=slo.min_bad_events)
            statuses.append(SloStatus(key, slo, evaluation, now))
        self.statuses = statuses
        self.evaluated_at = now
        return statuses

    def _sort_key(self, key: SloKey) -> tuple[int, int, str]:
        return self._slo_order[key.slo], self._pool_order.get(key.pool, 1 << 30), key.model_name

    # -- persistence ------------------------------------------------------------------------------

    def horizon(self) -> float:
        """Seconds of history the longest SLO needs (its window, or 3 days for the 3d/6h ticket)."""
        return max((retention_for(s.window) for s in self.slos), default=0.0)

    def take_rows(self) -> list[SloEventRow]:
        """The current counts of every minute that changed since the last call, to upsert."""
        rows = []
        for key, track in self._tracks.items():
            if not track.dirty:
                continue
            for minute in sorted(track.dirty):
                start, good, total = track.series.minute(minute * MINUTE)
                if total > 0 or good > 0:
                    rows.append(SloEventRow(key.slo, key.pool, key.model_name, float(start), good, total))
            track.dirty.clear()
        return rows

    def load(self, rows: Iterable[SloEventRow], now: float) -> int:
        """Rebuild the series from stored minutes; call before the first `observe`.

        Rows of SLOs or pools no longer configured are ignored (they stay in the database until
        retention, so putting an SLO back in the config brings its budget back). Returns rows used.
        """
        grouped: dict[SloKey, list[tuple[float, float, float]]] = {}
        for row in rows:
            slo = self._by_name.get(row.slo)
            if slo is None or row.pool not in (slo.pools or self._pool_order):
                continue
            if row.model_name and isinstance(slo.indicator, AvailabilityIndicator):
                continue  # availability is per instance, never per model
            grouped.setdefault(SloKey(row.slo, row.pool, row.model_name), []).append((row.minute, row.good, row.total))
        used = 0
        for key, key_rows in grouped.items():
            track = self._track(key)
            track.series = EventSeries.from_rows(key_rows, track.series.retention, now)
            used += len(key_rows)
            if key.model_name:
                self.multi_model.add(key.pool)
        return used


def format_duration(seconds: float) -> str:
    """`30d`, `1h30m`, `500ms`: the config's own notation, for the API's `window`."""
    if seconds <= 0:
        return "0s"
    out, rest = "", round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out
