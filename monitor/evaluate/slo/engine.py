"""The SLO engine: each scrape cycle's events per SLO and pool (and model), kept per minute, evaluated.

The package's arithmetic modules (`events`, `series`, `burn`, ...) know nothing about scrapes; this
module is the stateful part between them. After every cycle it turns each instance's last scrape interval into good/valid
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

Complete alerting: every pool-wide key also carries whether its SLI's series have gone missing
(`absent`: no successfully scraped instance of the pool had them for `absent_for` while at least one
scraped fine; SLOMetricAbsent), whether its budget is exhausted (ErrorBudgetExhausted), and which
maintenance windows are in force. Maintenance windows (`slos[].exclusions` and the ad-hoc ones given
to `set_exclusions`) are applied when the windows are read: the stored minutes keep every event,
and the minutes a window covers count neither good nor bad (`monitor.evaluate.slo.exclusions`).
The engine also meters each pool's replica-seconds for the daily cost budgets
(`monitor.evaluate.slo.spend`); those minutes travel with the SLO rows under the reserved SLO name
SPEND_ROW, so today's spend survives a restart too.

Exact latency SLIs from traces (`use_traces`): histograms only say how many requests fell in each
bucket, so a threshold between bucket bounds is interpolated. Where vLLM's per-request spans reach
the service, every latency minute of a pool is recounted from them once it has settled (`settle`
after its end, when late spans and scrapes are in), provided the spans hold at least `min_coverage`
of the requests the histograms counted in that minute; otherwise the histogram count stays. The
key's `source` then says "traces" and `exact` is true. Two consequences worth knowing: the last
minute or so is counted from histograms until it settles, and a TPOT SLO counts per-token intervals
from histograms but requests (each with its mean TPOT) from traces, as vLLM's serving benchmark does.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Collection, Iterable, Mapping, Sequence

from monitor.evaluate.slo import (
    MINUTE,
    CostBudgetStatus,
    EventSeries,
    Exclusion,
    SloEvaluation,
    SpendMeter,
    Window,
    availability_events,
    budget_statuses,
    count_events,
    evaluate,
    instance_available,
    minute_ranges,
    retention_for,
    slo_pairs,
)
from monitor.evaluate.slo.maintenance import MaintenanceWindows
from monitor.evaluate.slo.presence import MetricPresence
from monitor.evaluate.slo.traces import TraceRecords, TraceRecount
from monitor.evaluate.slo.track import SloKey, SloTrack
from monitor.evaluate.windows import stats_over
from monitor.samples import ModelSample, ScrapeResult
from monitor.settings import AvailabilityIndicator, CostConfig, LatencyIndicator, SloConfig

log = logging.getLogger(__name__)

# samples reach the `prometheus` source up to a Prometheus scrape interval late (service.PROMETHEUS_SETTLE_S)
PROMETHEUS_LAG_S = 30.0
# the SLO name under which a pool's replica-seconds per minute are stored (no configured SLO can be
# called so: names start with a letter or digit)
SPEND_ROW = "~replica_seconds"


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
    source: str = "histograms"  # where the events came from: SOURCES, or "traces" (exact latency)
    absent: bool = False  # SLOMetricAbsent: the SLI's series missing for absent_for while instances are up
    metric_last_seen: float | None = None  # when a scraped instance last had them (None: not yet)
    exclusions: tuple[Window, ...] = ()  # maintenance windows in force at evaluated_at

    @property
    def model_name(self) -> str | None:
        return self.key.model_name or None

    @property
    def excluded(self) -> bool:
        return bool(self.exclusions)

    @property
    def exhausted(self) -> bool:
        """ErrorBudgetExhausted (never during a maintenance window, which pages no one)."""
        return self.evaluation.exhausted and not self.excluded

    def fired_severities(self) -> tuple[str, ...]:
        """`page` and/or `ticket`: a ticket pair firing during a page is reported too, so that
        Alertmanager can inhibit it explicitly instead of it appearing when the page clears."""
        return self.evaluation.severities()



class SloEngine:
    """Counts, keeps and evaluates every configured SLO per pool (and per model where relevant)."""

    def __init__(self, slos: Sequence[SloConfig], pools: Sequence[str], *, keep_rows: bool = True,
                 health_checked: bool = True, trace_settle_s: float = 20.0, trace_min_coverage: float = 0.9,
                 costs: Mapping[str, CostConfig | None] | None = None) -> None:
        """`keep_rows`: remember changed minutes for `take_rows` (False when nothing persists);
        `health_checked`: availability requires /health 200 (False for the prometheus source, which
        cannot see /health); `trace_settle_s`, `trace_min_coverage`: when a minute's spans count."""
        self.keep_rows = keep_rows
        self.health_checked = health_checked
        self.trace_settle_s = trace_settle_s
        self.trace_min_coverage = trace_min_coverage
        self._tracks: dict[SloKey, SloTrack] = {}
        self._previous: dict[tuple[str, str], tuple[float, ModelSample]] = {}  # (instance, model) -> last
        self.multi_model: set[str] = set()  # pools seen serving more than one model_name
        self.statuses: list[SloStatus] = []
        self.evaluated_at: float | None = None
        self._traces: TraceRecount | None = None  # exact SLIs from traces (`use_traces`)
        # complete alerting: absent series, maintenance windows, replica-seconds for the cost budgets
        self._presence = MetricPresence()
        self._maintenance = MaintenanceWindows()
        self.spend = SpendMeter(keep_dirty=keep_rows)
        self.costs: dict[str, CostConfig] = {}
        self.cost_budgets: list[CostBudgetStatus] = []
        self.configure(slos, pools, costs=costs)

    def configure(self, slos: Sequence[SloConfig], pools: Sequence[str],
                  costs: Mapping[str, CostConfig | None] | None = None) -> None:
        """Take a new set of SLOs and pools (a reload). An SLO that keeps its name keeps the minutes
        already counted, and counts new ones by its new definition (as a restart would: the stored
        minutes are counts, not requests); a renamed SLO starts a fresh budget; a pool or SLO that
        is gone is dropped (its rows stay in the database until retention). `costs`: each pool's
        `cost` (daily budgets); None keeps the ones given before."""
        if costs is not None:
            self.costs = {pool: cost for pool, cost in costs.items() if cost is not None}
        self._maintenance.forget_cached()
        self.slos = tuple(slos)
        pool_names = list(pools)
        self._slo_order = {s.name: i for i, s in enumerate(self.slos)}
        self._pool_order = {name: i for i, name in enumerate(pool_names)}
        self._by_name = {s.name: s for s in self.slos}
        self._by_pool: dict[str, list[SloConfig]] = {name: [] for name in pool_names}
        old, self._tracks = self._tracks, {}
        for slo in self.slos:
            for pool in slo.pools or pool_names:
                if pool in self._by_pool:
                    self._by_pool[pool].append(slo)
        # the histograms an interval's events are counted from: each latency SLI's, and e2e (trace coverage)
        self._histograms_read = {pool: frozenset({"e2e", *(s.indicator.metric for s in slos
                                                            if isinstance(s.indicator, LatencyIndicator))})
                                 for pool, slos in self._by_pool.items()}
        for key, track in old.items():
            kept = self._by_name.get(key.slo)
            if kept is not None and kept in self._by_pool.get(key.pool, ()):
                self._tracks[key] = SloTrack.carried(track, kept, self.keep_rows)
        for slo in self.slos:
            for pool in slo.pools or pool_names:
                key = SloKey(slo.name, pool)
                if pool in self._by_pool and key not in self._tracks:
                    self._tracks[key] = SloTrack(key, slo, self.keep_rows)

    def forget(self, instances: Collection[str]) -> None:
        """Instances gone from the fleet (dropped after draining): their last samples, the
        baselines of the next increase, go too, or churn would keep one per departed instance."""
        for key in [k for k in self._previous if k[0] in instances]:
            del self._previous[key]

    # -- counting ---------------------------------------------------------------------------------

    def observe(self, results: Iterable[ScrapeResult], *, not_serving: Collection[str] = ()) -> None:
        """Count the events of one scrape cycle (or any batch of scrape results, in time order).

        `not_serving`: instances not expected to serve (joined and still loading their model, left
        the fleet and draining): their availability is not counted, nor is an engine's that reports
        itself asleep, since none of these is an outage of the pool."""
        results = list(results)
        self._note_models(results)
        self._note_presence(results)
        for result in results:
            slos = self._by_pool.get(result.pool)
            if not slos:
                continue
            t = result.started_at
            counted = result.instance not in not_serving and not _asleep(result)
            for slo in slos:
                if isinstance(slo.indicator, AvailabilityIndicator) and counted:
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
                stats = stats_over([previous, (t, sample)], histograms=self._histograms_read.get(result.pool))
                if stats is None:
                    continue
                per_model = result.pool in self.multi_model
                if self._traces is not None:
                    self._traces.count_requests(result.pool, sample.model_name if per_model else None, previous[0], t,
                                         stats)
                for slo in slos:
                    if isinstance(slo.indicator, AvailabilityIndicator):
                        continue
                    events = count_events(slo.indicator, stats)
                    self._track(SloKey(slo.name, result.pool)).file(previous[0], t, events)
                    if per_model:
                        self._track(SloKey(slo.name, result.pool, sample.model_name)).file(previous[0], t, events)

    def _note_presence(self, results: Sequence[ScrapeResult]) -> None:
        """Which pools scraped fine this cycle, which SLIs' series they carried, and the replicas
        each pool is billed for (every member scraped, whatever the outcome)."""
        members: dict[str, list[ScrapeResult]] = {}
        for result in results:
            members.setdefault(result.pool, []).append(result)
        for pool, pool_results in members.items():
            self._presence.note(pool, pool_results, self._by_pool.get(pool, ()))
            self.spend.record(pool, min(r.started_at for r in pool_results), len(pool_results))

    def set_exclusions(self, exclusions: Iterable[Exclusion]) -> None:
        """The ad-hoc maintenance windows (POST /api/v1/exclusions), all of them: the configured
        ones come with the SLOs. Takes effect at the next evaluation."""
        self._maintenance.set_adhoc(exclusions)

    @property
    def adhoc_exclusions(self) -> tuple[Exclusion, ...]:
        return self._maintenance.adhoc

    def exclusion_windows(self, slo: SloConfig, pool: str, now: float) -> list[Window]:
        """The SLO's and pool's maintenance windows overlapping its retention up to now (recomputed
        once a minute, or when the windows change)."""
        return self._maintenance.windows(slo, pool, now)

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

    def _track(self, key: SloKey) -> SloTrack:
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = SloTrack(key, self._by_name[key.slo], self.keep_rows)
        return track

    # -- evaluating -------------------------------------------------------------------------------

    def evaluate(self, now: float) -> list[SloStatus]:
        """Evaluate every key at `now`; the result is also kept in `statuses` for the outputs."""
        if self._traces is not None:
            self._traces.recount(self._tracks.values(), now)
        statuses = []
        for key in sorted(self._tracks, key=self._sort_key):
            track = self._tracks[key]
            slo = track.config
            windows = self.exclusion_windows(slo, key.pool, now)
            evaluation = evaluate(track.series, now, slo.objective, slo.window, exact=track.exact,
                                  min_bad_events=slo.min_bad_events, pairs=slo_pairs(slo),
                                  excluded=minute_ranges(windows), budget_min_events=slo.budget_min_events,
                                  budget_min_coverage=slo.budget_min_coverage)
            in_force = tuple(w for w in windows if w.active(now))
            absent, seen = (False, None) if key.model_name else self._presence.absent(slo, key.pool, now)
            statuses.append(SloStatus(key, slo, evaluation, now, track.source, absent=absent and not in_force,
                                      metric_last_seen=seen, exclusions=in_force))
        self.statuses = statuses
        self.cost_budgets = budget_statuses(self.spend, self.costs, now, self._pool_order)
        self.evaluated_at = now
        return statuses

    # -- exact latency SLIs from traces -------------------------------------------------------------

    def use_traces(self, traces: TraceRecords, now: float) -> None:
        """Recount latency minutes from `traces` from the minute holding `now` on (see the module doc)."""
        if self._traces is None:
            self._traces = TraceRecount(traces, now, self.trace_settle_s, self.trace_min_coverage)
        else:
            self._traces.start(traces, now)

    def minutes(self, slo: str, pool: str, model_name: str = "",
                since: float | None = None) -> list[tuple[int, float, float]]:
        """One key's non-empty (minute_start, good, total) rows held in memory, oldest first: what the
        console's budget chart, status page and monthly report are computed from."""
        track = self._tracks.get(SloKey(slo, pool, model_name))
        return [] if track is None else track.series.rows(since)

    def _sort_key(self, key: SloKey) -> tuple[int, int, str]:
        return self._slo_order[key.slo], self._pool_order.get(key.pool, 1 << 30), key.model_name

    # -- persistence ------------------------------------------------------------------------------

    def horizon(self) -> float:
        """Seconds of history the longest SLO needs (its window, or 3 days for the 3d/6h ticket)."""
        return max((retention_for(s.window, slo_pairs(s)) for s in self.slos), default=0.0)

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
        spent = self.spend.take_dirty()
        if self.keep_rows:  # stored for the pools with a `cost`, the ones whose spend is shown
            rows.extend(SloEventRow(SPEND_ROW, pool, "", float(minute * MINUTE), seconds, seconds)
                        for pool, minute, seconds in spent if pool in self.costs)
        return rows

    def load(self, rows: Iterable[SloEventRow], now: float) -> int:
        """Rebuild the series from stored minutes; call before the first `observe`.

        Rows of SLOs or pools no longer configured are ignored (they stay in the database until
        retention, so putting an SLO back in the config brings its budget back). Returns rows used.
        """
        grouped: dict[SloKey, list[tuple[float, float, float]]] = {}
        used = 0
        for row in rows:
            if row.slo == SPEND_ROW:
                if row.minute >= now - 2 * 86400.0:
                    self.spend.load(row.pool, math.floor(row.minute / MINUTE), row.total)
                    used += 1
                continue
            slo = self._by_name.get(row.slo)
            if slo is None or row.pool not in (slo.pools or self._pool_order):
                continue
            if row.model_name and isinstance(slo.indicator, AvailabilityIndicator):
                continue  # availability is per instance, never per model
            grouped.setdefault(SloKey(row.slo, row.pool, row.model_name), []).append((row.minute, row.good, row.total))
        for key, key_rows in grouped.items():
            track = self._track(key)
            track.series = EventSeries.from_rows(key_rows, track.series.retention, now)
            used += len(key_rows)
            if key.model_name:
                self.multi_model.add(key.pool)
        return used


def _asleep(result: ScrapeResult) -> bool:
    """The page says the engine sleeps (`vllm:engine_sleep_state`): drained on purpose, not down."""
    return result.ok and any(m.gauges.get("sleep_level", 0.0) > 0 for m in result.models)
