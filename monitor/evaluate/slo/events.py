"""Events per indicator: how one interval of one instance counts as good and total events.

Everything is counted as events (good, total) and only divided at the end. Ratios of windows are
never averaged: under uneven traffic an average of ratios weighs a quiet hour like a busy one and
reports the wrong budget (the bug users hit in Sloth, slok/sloth #241).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import isfinite

from monitor.evaluate.windows import WindowStats, fraction_at_or_below
from monitor.samples import ModelSample, ScrapeResult
from monitor.settings import (
    AvailabilityIndicator,
    ErrorRatioIndicator,
    LatencyIndicator,
    SaturationIndicator,
)

# --- events per indicator -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Events:
    """Good and valid events of one SLI over one interval.

    Floats, not ints: an interpolated latency SLI counts fractional good requests and the
    saturation SLI counts seconds. `exact` is False once any part was interpolated inside a
    histogram bucket, so the API can say the figure is an estimate.
    """

    good: float
    total: float
    exact: bool = True

    @property
    def bad(self) -> float:
        return max(self.total - self.good, 0.0)

    def __add__(self, other: Events) -> Events:
        return Events(self.good + other.good, self.total + other.total, self.exact and other.exact)


NO_EVENTS = Events(0.0, 0.0, True)
LATENCY_METRICS = ("ttft", "tpot", "e2e", "queue", "itl")


def latency_events(stats: WindowStats | None, metric: str, threshold: float) -> Events:
    """Requests at or under `threshold` seconds, read from the histogram's increase.

    A threshold between bucket bounds is interpolated (and marked inexact) rather than refused:
    vLLM's TTFT buckets jump from 0.25 s to 0.5 s and a 300 ms objective is common.
    """
    if metric not in LATENCY_METRICS:
        raise ValueError(f"unknown latency metric {metric!r} (use one of {', '.join(LATENCY_METRICS)})")
    if stats is None:
        return NO_EVENTS
    fraction = fraction_at_or_below(stats.histograms.get(metric), threshold)
    return Events(fraction.good, fraction.total, fraction.exact)


def error_events(stats: WindowStats | None) -> Events:
    """Bad = finished with reason `error` + admission rejections; total = all finished + rejections.

    Client aborts stay in the total as good: the server did nothing wrong, and counting them bad
    would page on users closing their browser tab. Rejections never reach `finished`, so they are
    added to the total too, or a server shedding all load would show an error ratio above 100%.
    """
    if stats is None:
        return NO_EVENTS
    total = stats.finished_total + stats.increases.get("admission_rejections", 0.0)
    bad = min(stats.errors, total)
    return Events(total - bad, total, True)


def saturation_events(stats: WindowStats | None, threshold: float, metric: str = "kv_cache_usage") -> Events:
    """Seconds of the interval with usage at or under `threshold` (time-based, not request-based).

    The gauge is a point reading, so the whole interval takes the value read at its end: a breach
    counts from the first scrape that sees it, which errs towards reporting saturation early.
    """
    if stats is None or metric not in stats.gauges or stats.span <= 0:
        return NO_EVENTS
    seconds = stats.span
    return Events(seconds if stats.gauges[metric] <= threshold else 0.0, seconds, True)


def instance_available(scrape: ScrapeResult, health_checked: bool = True) -> bool:
    """Reachable and /health answered 200; a /health that timed out counts as unavailable.

    With the health probe switched off (`scrape.health_path: null`) reachability alone decides,
    since there is no answer to require.
    """
    if not scrape.ok:
        return False
    return not health_checked or scrape.health_status == 200


def availability_events(available: bool) -> Events:
    """One event per scrape interval: the unit is the interval, so a faster scrape weighs nothing more."""
    return Events(1.0 if available else 0.0, 1.0, True)


def _finite(events: Events) -> Events:
    """No events for an interval whose counts are not finite numbers (a hostile page's values past
    the float range; NaN and ±Inf never reach the windows): such an interval is not known, and one
    NaN in the SLO's running sums would hide its burn rate for as long as the window lasts."""
    return events if isfinite(events.good) and isfinite(events.total) else NO_EVENTS


IndicatorConfig = LatencyIndicator | ErrorRatioIndicator | SaturationIndicator | AvailabilityIndicator


def count_events(indicator: IndicatorConfig, stats: WindowStats | None, *, available: bool | None = None) -> Events:
    """Events of one configured indicator over one interval (one scrape interval or one minute).

    Availability is not in the metrics (an unreachable instance has none), so the caller passes
    the verdict from the scrape; asking for it without one is a programming error, not a bad interval.
    """
    if isinstance(indicator, LatencyIndicator):
        return _finite(latency_events(stats, indicator.metric, indicator.threshold))
    if isinstance(indicator, ErrorRatioIndicator):
        return _finite(error_events(stats))
    if isinstance(indicator, SaturationIndicator):
        return _finite(saturation_events(stats, indicator.threshold, indicator.metric))
    if isinstance(indicator, AvailabilityIndicator):
        if available is None:
            raise ValueError("availability events need `available` (from instance_available)")
        return availability_events(available)
    raise TypeError(f"unknown indicator {indicator!r}")


def indicator_present(indicator: IndicatorConfig, sample: ModelSample) -> bool | None:
    """Whether a page carries the series the indicator reads (any spelling: the reader maps every
    known name onto one key); None for availability, which reads no metric and so cannot go absent.

    A latency SLI needs its histogram, the error ratio the finished-requests counter, saturation its
    gauge. What renames a metric to a name the reader does not know leaves the key out, and the SLI
    would read "no events", which looks like a perfect SLO: SLOMetricAbsent says so instead.
    """
    if isinstance(indicator, LatencyIndicator):
        return indicator.metric in sample.histograms
    if isinstance(indicator, ErrorRatioIndicator):
        return bool(sample.finished)
    if isinstance(indicator, SaturationIndicator):
        return indicator.metric in sample.gauges
    return None
