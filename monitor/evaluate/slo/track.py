"""One SLO key's event series as the engine keeps it: which minutes it counted, from where, and
which minutes the store has not seen yet.

Apart from `engine` so that the engine module holds the counting loop and the evaluation only;
the per-key bookkeeping (filing an interval's events into minutes, recounting a minute from traces,
exactness) is the same whichever engine drives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from monitor.collect.vllm import threshold_warning
from monitor.evaluate.slo import MINUTE, Events, EventSeries, retention_for, slo_pairs
from monitor.otlp.goodput import LatencyObjective, latency_counts
from monitor.otlp.records import RequestRecord
from monitor.settings import LatencyIndicator, SloConfig

POOL_WIDE = ""  # the model_name of a key that covers every model a pool serves
# where each indicator's events come from, for the API's `source` (latency: "traces" once they cover it)
SOURCES = {"latency": "histograms", "error_ratio": "counters", "saturation": "gauges", "availability": "scrapes"}
TRACED = "traces"


@dataclass(frozen=True, slots=True)
class SloKey:
    """What one event series and one evaluation belong to."""

    slo: str
    pool: str
    model_name: str = POOL_WIDE


def predicted_exact(slo: SloConfig) -> bool:
    """Whether a latency threshold sits on one of vLLM's default bucket bounds (what `check` says).

    Used for `exact` until this process has seen real histograms: after a restart the stored
    minutes hold counts only, and the API must not claim an interpolated SLI is exact meanwhile.
    """
    if not isinstance(slo.indicator, LatencyIndicator):
        return True
    return threshold_warning(slo.indicator.metric, slo.indicator.threshold) is None


def portions(start: float, end: float, earliest: float = float("-inf")) -> list[tuple[float, float]]:
    """Where one scrape interval's events are filed: (time, share) pairs. Up to a minute long, all at
    the interval's midpoint (as EventSeries asks); a longer one (scrapes failed in between, the
    increase covers the gap) spread evenly over the minutes it spans, from `earliest` on, so a
    10-minute gap does not pile 10 minutes of errors into one and spike the 5m window."""
    if end - start <= MINUTE:
        return [((start + end) / 2.0, 1.0)]
    span = end - start
    out = []
    minute = math.floor(max(start, earliest) / MINUTE) * MINUTE
    while minute < end:
        lo, hi = max(minute, start), min(minute + MINUTE, end)
        if hi > lo:
            out.append(((lo + hi) / 2.0, (hi - lo) / span))
        minute += MINUTE
    return out


class SloTrack:
    """One key's series, exactness and the minutes not yet written to the database."""

    __slots__ = ("key", "config", "series", "predicted_exact", "observed_exact", "dirty", "source", "traced")

    def __init__(self, key: SloKey, config: SloConfig, keep_rows: bool) -> None:
        self.key = key
        self.config = config
        self.series = EventSeries(retention_for(config.window, slo_pairs(config)))
        self.predicted_exact = predicted_exact(config)
        self.observed_exact: bool | None = None  # None until an interval with events was counted
        # minute numbers (unix seconds // 60) not yet handed to the store; None without a store,
        # where nobody would ever drain it
        self.dirty: set[int] | None = set() if keep_rows else None
        self.source = SOURCES[config.indicator.type]
        self.traced: set[int] = set()  # minutes recounted from traces

    @classmethod
    def carried(cls, old: SloTrack, config: SloConfig, keep_rows: bool) -> SloTrack:
        """The same key under a (possibly changed) definition: the counted minutes stay."""
        track = cls(old.key, config, keep_rows)
        track.series = old.series
        if old.config == config:
            track.observed_exact, track.source, track.traced = old.observed_exact, old.source, old.traced
        if keep_rows and old.dirty:
            track.dirty = set(old.dirty)
        return track

    @property
    def exact(self) -> bool:
        if self.source == TRACED:
            return True
        return self.predicted_exact if self.observed_exact is None else self.observed_exact

    def use_trace_minute(self, minute: int, records: Sequence[RequestRecord], requests: float,
                         min_coverage: float) -> None:
        """Recount one settled minute from its trace records if they cover the `requests` the
        histograms counted in it; otherwise keep the histogram count and say so. Only records that
        carry the SLO's metric count towards coverage (spans without `time_in_queue` cannot cover a
        queue SLO)."""
        indicator = self.config.indicator
        assert isinstance(indicator, LatencyIndicator)
        good, total = latency_counts(records, LatencyObjective(self.config.name, indicator.metric,
                                                               indicator.threshold)) if records else (0, 0)
        if total == 0 or total < min_coverage * requests:
            if records or requests > 0:
                self.source = SOURCES["latency"]
            return
        self.series.set_minute(minute * MINUTE, float(good), float(total))
        self.traced.add(minute)
        if self.dirty is not None:
            self.dirty.add(minute)
        self.source = TRACED

    def file(self, start: float, end: float, events: Events) -> None:
        """Add one interval's events, filed where `portions` says.

        Only finite, non-negative counts are filed (good clamped into [0, total]): a NaN would stay
        in the series' running sums for the whole SLO window and make `burn > factor` never true,
        and a negative good count (a hostile page's buckets) would be refused by the series with an
        exception that costs the cycle. Such an interval is dropped, not judged."""
        total = events.total
        if not (total > 0 and math.isfinite(total) and math.isfinite(events.good)
                and math.isfinite(start) and math.isfinite(end)):
            return
        self.observed_exact = events.exact if self.observed_exact is None else self.observed_exact and events.exact
        good = min(max(events.good, 0.0), total)
        # older minutes would be pruned anyway
        for t, share in portions(start, end, earliest=end - self.series.retention - MINUTE):
            self._add(t, good * share, total * share)

    def _add(self, t: float, good: float, total: float) -> None:
        if self.traced and math.floor(t / MINUTE) in self.traced:
            return  # a late histogram increase for a minute already counted exactly from traces
        self.series.add(t, good, total)
        if self.dirty is not None:
            self.dirty.add(math.floor(t / MINUTE))
