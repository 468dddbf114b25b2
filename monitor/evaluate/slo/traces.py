"""Exact latency SLIs from traces: which settled minutes of a pool the trace records cover, and
recounting those minutes from them (see `monitor.evaluate.slo.engine`'s module doc).

Apart from the engine because it keeps its own state (the requests the histograms counted per
minute, the newest minute already compared) that only the trace recount reads.
"""

from __future__ import annotations

import math
from typing import Iterable, Protocol

from monitor.evaluate.slo import MINUTE
from monitor.evaluate.slo.track import POOL_WIDE, SloTrack, portions
from monitor.evaluate.windows import WindowStats
from monitor.otlp.records import RequestRecord
from monitor.settings import LatencyIndicator

# traced minutes remembered so a late histogram increase is not added on top of their exact count
TRACED_MINUTES_KEPT = 360
MAX_MINUTES_PER_PASS = 1440  # a first pass long after `use_traces` looks back at most a day


class TraceRecords(Protocol):
    """What the engine reads traces from (`monitor.otlp.store.TraceStore`)."""

    def records(self, pool: str, *, since: float = ..., model: str | None = None) -> list[RequestRecord]: ...


class TraceRecount:
    """The trace records of every pool, and the histogram request counts their coverage is judged by."""

    def __init__(self, traces: TraceRecords, now: float, settle_s: float, min_coverage: float) -> None:
        """`settle_s`, `min_coverage`: when a minute's spans count (the engine's `trace_settle_s`,
        `trace_min_coverage`)."""
        self.settle_s = settle_s
        self.min_coverage = min_coverage
        # requests the histograms counted, per (pool, model_name or POOL_WIDE) and minute: the
        # denominator of a minute's trace coverage
        self._requests: dict[tuple[str, str], dict[int, float]] = {}
        self.start(traces, now)

    def start(self, traces: TraceRecords, now: float) -> None:
        """Recount from the minute holding `now` on."""
        self._traces = traces
        self._checked_to = math.floor(now / MINUTE) - 1  # the newest minute already compared with traces

    def count_requests(self, pool: str, model: str | None, start: float, end: float, stats: WindowStats) -> None:
        """File an interval's finished requests (e2e histogram count, else the finished counters) by
        minute, as the latency events are filed, so a minute's trace coverage compares like with like."""
        e2e = stats.histograms.get("e2e")
        n = e2e.count if e2e is not None else stats.finished_total
        if n <= 0:
            return
        for key in ((pool, POOL_WIDE), (pool, model)) if model is not None else ((pool, POOL_WIDE),):
            minutes = self._requests.setdefault(key, {})
            for t, share in portions(start, end, earliest=end - MAX_MINUTES_PER_PASS * MINUTE):
                minute = math.floor(t / MINUTE)
                minutes[minute] = minutes.get(minute, 0.0) + n * share

    def recount(self, tracks: Iterable[SloTrack], now: float) -> None:
        """Compare every latency key's newly settled minutes with the pool's trace records."""
        last = math.floor((now - self.settle_s) / MINUTE) - 1  # the newest minute that has settled
        first = max(self._checked_to + 1, last - MAX_MINUTES_PER_PASS + 1)
        if last < first:
            return
        self._checked_to = last
        by_pool: dict[str, list[SloTrack]] = {}
        for track in tracks:
            if isinstance(track.config.indicator, LatencyIndicator):
                by_pool.setdefault(track.key.pool, []).append(track)
        for pool, pool_tracks in by_pool.items():
            minutes: dict[int, list[RequestRecord]] = {}
            for record in self._traces.records(pool, since=first * MINUTE - 1e-6):
                minute = math.floor(record.at / MINUTE)
                if first <= minute <= last:
                    minutes.setdefault(minute, []).append(record)
            for track in pool_tracks:
                model = track.key.model_name
                counted = self._requests.get((pool, model), {})
                for minute in range(first, last + 1):
                    records = minutes.get(minute, [])
                    if model:
                        records = [r for r in records if r.model == model]
                    track.use_trace_minute(minute, records, counted.get(minute, 0.0), self.min_coverage)
                if len(track.traced) > TRACED_MINUTES_KEPT:
                    track.traced = {m for m in track.traced if m > last - TRACED_MINUTES_KEPT}
        for counted in self._requests.values():
            for minute in [m for m in counted if m <= last]:
                del counted[minute]
