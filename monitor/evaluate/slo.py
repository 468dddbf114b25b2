"""SLO arithmetic: events per indicator, a per-minute event series, error budgets and burn-rate alerts.

Pure functions and plain data, no I/O and no clock: the service passes `now`, stores the per-minute
rows and pushes the alerts. Keeping the arithmetic here lets the tests drive days of simulated
traffic in milliseconds and check the numbers an on-call engineer is paged on against hand-worked
values (SRE Workbook ch. 5; see `shared/reference/slo-method.md`).

Everything is counted as events (good, total) and only divided at the end. Ratios of windows are
never averaged: under uneven traffic an average of ratios weighs a quiet hour like a busy one and
reports the wrong budget (the bug users hit in Sloth, slok/sloth #241).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Iterable, Literal, Mapping, Sequence

from monitor.config import (
    AvailabilityIndicator,
    ErrorRatioIndicator,
    LatencyIndicator,
    SaturationIndicator,
    parse_duration,
)
from monitor.evaluate.windows import WindowStats, fraction_at_or_below
from monitor.samples import ScrapeResult

MINUTE = 60
DAY = 86400.0
DEFAULT_PERIOD = 30 * DAY

Alert = Literal["none", "ticket", "page"]
Severity = Literal["page", "ticket"]

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
LATENCY_METRICS = ("ttft", "tpot", "e2e", "queue")


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


IndicatorConfig = LatencyIndicator | ErrorRatioIndicator | SaturationIndicator | AvailabilityIndicator


def count_events(indicator: IndicatorConfig, stats: WindowStats | None, *, available: bool | None = None) -> Events:
    """Events of one configured indicator over one interval (one scrape interval or one minute).

    Availability is not in the metrics (an unreachable instance has none), so the caller passes
    the verdict from the scrape; asking for it without one is a programming error, not a bad interval.
    """
    if isinstance(indicator, LatencyIndicator):
        return latency_events(stats, indicator.metric, indicator.threshold)
    if isinstance(indicator, ErrorRatioIndicator):
        return error_events(stats)
    if isinstance(indicator, SaturationIndicator):
        return saturation_events(stats, indicator.threshold, indicator.metric)
    if isinstance(indicator, AvailabilityIndicator):
        if available is None:
            raise ValueError("availability events need `available` (from instance_available)")
        return availability_events(available)
    raise TypeError(f"unknown indicator {indicator!r}")


# --- the per-minute event series ----------------------------------------------------------------

_REBASE_AT = 2.0**40  # keep prefix sums far below 2**53 so window differences stay exact


def _epoch_seconds(value: float | int | datetime) -> float:
    """Unix seconds; a naive datetime is taken as UTC, as databases hand back what was stored in UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return float(value)


def _minute(t: float) -> int:
    return math.floor(t / MINUTE)


class EventSeries:
    """Good/total events per minute for one SLO (and pool), answering any window ending at `now`.

    Dense per-minute buckets with prefix sums: a window of any length is two subtractions, so
    evaluating seven windows every second costs the same for 5 minutes as for 30 days. 30 days is
    43,200 buckets, about 1.4 MB per SLO, and the rows are what the database stores.

    The oldest bucket a window reaches is usually cut by the window's start; it is counted pro rata
    (events assumed spread evenly over the minute). Without that a 5m window read from minute
    buckets would swing between 4 and 5 minutes of traffic, 20% of its denominator.

    Events are filed under the minute containing the time given to `add`; pass a time inside the
    interval the events happened in (its midpoint), not its end, so a scrape at hh:mm:00 does not
    push the previous minute's requests into the next one.
    """

    __slots__ = ("retention", "_first", "_good", "_total", "_cum_good", "_cum_total")

    def __init__(self, retention: float = DEFAULT_PERIOD) -> None:
        if retention <= 0:
            raise ValueError("retention must be positive")
        self.retention = float(retention)
        self._first = 0  # minute number (unix seconds // 60) of position 0
        self._good: list[float] = []
        self._total: list[float] = []
        self._cum_good: list[float] = [0.0]  # _cum_good[i] = sum of _good[:i] (+ an arbitrary base)
        self._cum_total: list[float] = [0.0]

    # -- building

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[float | int | datetime, float, float]],
        retention: float = DEFAULT_PERIOD,
        now: float | None = None,
    ) -> EventSeries:
        """Rebuild from stored (minute_start, good, total) rows, so budgets survive a restart.

        Rows may come in any order and repeat a minute (added up); rows past the retention,
        measured from `now` or else from the newest row, are dropped.
        """
        series = cls(retention)
        buckets: dict[int, list[float]] = {}
        for minute_start, good, total in rows:
            bucket = buckets.setdefault(_minute(_epoch_seconds(minute_start)), [0.0, 0.0])
            bucket[0] += float(good)
            bucket[1] += float(total)
        if not buckets:
            return series
        first, last = min(buckets), max(buckets)
        series._first = first
        series._good = [0.0] * (last - first + 1)
        series._total = [0.0] * (last - first + 1)
        for minute, (good, total) in buckets.items():
            series._good[minute - first] = good
            series._total[minute - first] = total
        series._recompute_prefix()
        series.prune(now if now is not None else (last + 1) * MINUTE)
        return series

    def add(self, t: float, good: float, total: float) -> None:
        """Add events that happened at `t` (unix seconds); late events for a past minute are fine."""
        if total < 0 or good < 0 or good > total * (1 + 1e-9):
            raise ValueError(f"impossible events: good={good}, total={total}")
        if good == 0 and total == 0:
            return
        minute = _minute(t)
        if not self._good:
            self._first = minute
            self._append_zeros(1)
        elif minute < self._first:
            if minute < self._oldest_kept(self._last * MINUTE + MINUTE):
                return  # older than the retention: it would be pruned at once
            self._prepend_zeros(self._first - minute)
        elif minute > self._last:
            self._append_zeros(minute - self._last)
            self.prune(t)
        self._bump(minute - self._first, good, total)

    def set_minute(self, t: float, good: float, total: float) -> None:
        """Replace the events of the minute holding `t` by a better count of the same minute (an
        exact one from traces instead of a histogram's interpolation)."""
        if total < 0 or good < 0 or good > total * (1 + 1e-9):
            raise ValueError(f"impossible events: good={good}, total={total}")
        minute = _minute(t)
        if self._good and self._first <= minute <= self._last:
            i = minute - self._first
            self._bump(i, good - self._good[i], total - self._total[i])
            self._good[i], self._total[i] = good, total  # exactly, not old + (new - old)
        else:
            self.add(t, good, total)

    def add_events(self, t: float, events: Events) -> None:
        """`add` for an `Events`; exactness is not stored (rows hold counts only), see `evaluate`."""
        self.add(t, events.good, events.total)

    def prune(self, now: float) -> None:
        """Drop minutes that no window of the retention ending at `now` can reach."""
        keep_from = self._oldest_kept(now)
        if not self._good or keep_from <= self._first:
            return
        drop = min(keep_from - self._first, len(self._good))
        del self._good[:drop]
        del self._total[:drop]
        del self._cum_good[:drop]
        del self._cum_total[:drop]
        self._first += drop
        if not self._good:
            self._first, self._cum_good, self._cum_total = 0, [0.0], [0.0]
        elif self._cum_total[0] > _REBASE_AT or self._cum_good[0] > _REBASE_AT:
            self._recompute_prefix()

    # -- reading

    def window(self, now: float, seconds: float) -> tuple[float, float]:
        """(good, total) over (now - seconds, now]. Minutes after the one holding `now` are
        ignored, so a past moment can be evaluated at minute resolution."""
        if not self._good or seconds <= 0:
            return 0.0, 0.0
        start = now - seconds
        # the last minute begun before `now`: at hh:mm:00 exactly, minute hh:mm has not happened yet
        now_minute, start_minute = math.ceil(now / MINUTE) - 1, _minute(start)
        lo, hi = max(start_minute + 1, self._first), min(now_minute, self._last)
        good = total = 0.0
        if hi >= lo:
            good = self._cum_good[hi - self._first + 1] - self._cum_good[lo - self._first]
            total = self._cum_total[hi - self._first + 1] - self._cum_total[lo - self._first]
        if self._first <= start_minute <= self._last:
            share = self._share_in_window(start_minute, start, now)
            good += share * self._good[start_minute - self._first]
            total += share * self._total[start_minute - self._first]
        return max(good, 0.0), max(total, 0.0)

    def minute(self, t: float) -> tuple[int, float, float]:
        """The row (minute_start, good, total) holding `t`: what the service upserts after an add."""
        minute = _minute(t)
        if self._good and self._first <= minute <= self._last:
            i = minute - self._first
            return minute * MINUTE, self._good[i], self._total[i]
        return minute * MINUTE, 0.0, 0.0

    def rows(self, since: float | None = None) -> list[tuple[int, float, float]]:
        """Non-empty (minute_start, good, total) rows, oldest first, from the minute holding `since`."""
        start = 0 if since is None else max(_minute(since) - self._first, 0)
        return [
            ((self._first + i) * MINUTE, self._good[i], self._total[i])
            for i in range(start, len(self._good))
            if self._total[i] or self._good[i]
        ]

    def __len__(self) -> int:
        """Minutes held (empty ones between data included): the memory cost."""
        return len(self._good)

    # -- internals

    @property
    def _last(self) -> int:
        return self._first + len(self._good) - 1

    def _oldest_kept(self, now: float) -> int:
        # the minute holding the retention window's start is still read (pro rata)
        return _minute(now - self.retention)

    @staticmethod
    def _share_in_window(minute: int, start: float, now: float) -> float:
        """Share of a bucket's events after `start`; the current minute only runs up to `now`."""
        begin = minute * MINUTE
        end = min(begin + MINUTE, now)
        if end <= begin:
            return 0.0
        return min(max((end - start) / (end - begin), 0.0), 1.0)

    def _append_zeros(self, count: int) -> None:
        self._good.extend([0.0] * count)
        self._total.extend([0.0] * count)
        self._cum_good.extend([self._cum_good[-1]] * count)
        self._cum_total.extend([self._cum_total[-1]] * count)

    def _prepend_zeros(self, count: int) -> None:
        self._good[:0] = [0.0] * count
        self._total[:0] = [0.0] * count
        self._first -= count
        self._recompute_prefix()

    def _bump(self, i: int, good: float, total: float) -> None:
        self._good[i] += good
        self._total[i] += total
        # later prefix sums include this bucket too; usually i is the newest, so this is one step
        for j in range(i + 1, len(self._cum_good)):
            self._cum_good[j] += good
            self._cum_total[j] += total

    def _recompute_prefix(self) -> None:
        self._cum_good = [0.0] * (len(self._good) + 1)
        self._cum_total = [0.0] * (len(self._total) + 1)
        for i, (good, total) in enumerate(zip(self._good, self._total)):
            self._cum_good[i + 1] = self._cum_good[i] + good
            self._cum_total[i + 1] = self._cum_total[i] + total


# --- budgets and burn rates ---------------------------------------------------------------------

WINDOW_NAMES = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
WINDOWS: dict[str, float] = {name: parse_duration(name) for name in WINDOW_NAMES}


def sli(good: float, total: float) -> float | None:
    """Good / valid; None without events, since 'no traffic' is neither meeting nor missing an SLO."""
    return good / total if total > 0 else None


def error_budget(objective: float) -> float:
    """1 - objective, computed in decimal from the objective as written: in binary floating point
    1 - 0.999 is 0.0010000000000000009, and every burn rate would read 99.99999999999991 for 100."""
    if not 0.0 < objective < 1.0:
        raise ValueError(f"objective must be strictly between 0 and 1: {objective!r}")
    return float(Decimal(1) - Decimal(repr(objective)))


def burn_rate(bad: float, total: float, objective: float) -> float | None:
    """Error ratio / budget: 1 spends exactly the budget over the period. None without events, so
    an idle window never reads as 'burning nothing' in a dashboard nor fires an alert."""
    budget = error_budget(objective)
    return (bad / total) / budget if total > 0 else None


def error_budget_remaining(bad: float, total: float, objective: float) -> float:
    """1 - spent share of the budget over the period, from event counts (may go below 0).

    Counts, not an average of per-window ratios: one bad hour at 10 requests must not weigh as
    much as a good hour at 10,000.
    """
    budget = error_budget(objective)
    return 1.0 - (bad / total) / budget if total > 0 else 1.0


def exhaustion_seconds(burn: float, period: float = DEFAULT_PERIOD, remaining: float = 1.0) -> float:
    """How long the remaining budget lasts at a steady burn (Workbook Table 5-4: 1000x -> 43 min)."""
    if remaining <= 0:
        return 0.0
    if burn <= 0:
        return math.inf
    return remaining * period / burn


def burn_factor(share: float, period: float, long_window: float) -> float:
    """The burn that spends `share` of a `period`'s budget within `long_window`.

    Derived rather than hard-coded so a 28d or 7d SLO window pages on the same budget shares as
    the Workbook's 30d table (30d: 14.4 / 6 / 3 / 1; 28d: 13.44 / 5.6 / 2.8 / 0.933).
    """
    return share * period / long_window


@dataclass(frozen=True, slots=True)
class BurnPair:
    """One multiwindow alert: fires when both windows burn faster than the factor.

    The short window (1/12 of the long one) lets the alert clear soon after recovery; the long
    one stops a brief spike from paging.
    """

    severity: Severity
    long: str
    short: str
    budget_share: float

    @property
    def name(self) -> str:
        return f"{self.long}/{self.short}"

    def factor(self, period: float = DEFAULT_PERIOD) -> float:
        return burn_factor(self.budget_share, period, parse_duration(self.long))


# Workbook Table 5-8, plus the 1d/2h ticket that Sloth and Grafana ship. Page pairs first.
PAIRS: tuple[BurnPair, ...] = (
    BurnPair("page", "1h", "5m", 0.02),
    BurnPair("page", "6h", "30m", 0.05),
    BurnPair("ticket", "1d", "2h", 0.10),
    BurnPair("ticket", "3d", "6h", 0.10),
)

# Grafana SLO calls it `min_failures`. One failure in ten requests is a 1000x burn at 99.9%; five
# bad events in the long window keep a lone failure (or a handful) from paging at low traffic, yet
# a real outage at one request a second clears it within seconds.
DEFAULT_MIN_BAD_EVENTS = 5.0


def burn_factors(period: float = DEFAULT_PERIOD, pairs: Sequence[BurnPair] = PAIRS) -> dict[str, float]:
    """Factor per pair name for an SLO window (`1h/5m` -> 14.4 for 30 days)."""
    return {pair.name: pair.factor(period) for pair in pairs}


def retention_for(period: float, pairs: Sequence[BurnPair] = PAIRS) -> float:
    """How much history an SLO's series must keep: its window, or the longest alert window if
    longer (a 1d SLO still needs 3 days for the 3d/6h ticket)."""
    longest = max((parse_duration(w) for p in pairs for w in (p.long, p.short)), default=0.0)
    return max(period, longest, max(WINDOWS.values()))


def seconds_to_fire(error_ratio: float, objective: float, long_window: float, factor: float) -> float | None:
    """Seconds of a sudden, steady error ratio before a pair's long window crosses its factor
    (b * W * factor / e); None when that ratio can never get it there (e <= factor * b)."""
    budget = error_budget(objective)
    if error_ratio <= 0 or error_ratio / budget <= factor:
        return None
    return budget * long_window * factor / error_ratio


def never_firing_pairs(
    objective: float, period: float = DEFAULT_PERIOD, pairs: Sequence[BurnPair] = PAIRS
) -> list[tuple[BurnPair, float]]:
    """Pairs whose factor not even 100% errors can exceed (factor >= 1/b), with the factor.

    Uses the very comparison `decide` makes (100% errors burn at 1/b), so `check` warns exactly
    about the pairs that evaluation would never fire.
    """
    max_burn = 1.0 / error_budget(objective)
    return [(pair, pair.factor(period)) for pair in pairs if not max_burn > pair.factor(period)]


def objective_warnings(
    objective: float, period: float = DEFAULT_PERIOD, pairs: Sequence[BurnPair] = PAIRS, name: str | None = None
) -> list[str]:
    """`check`'s warnings for an objective too low for some burn-rate alerts to ever fire."""
    budget = error_budget(objective)
    prefix = f"SLO {name!r}: " if name else ""
    return [
        f"{prefix}objective {objective * 100:g}% leaves a {budget * 100:g}% error budget: the {pair.severity} "
        f"alert {pair.name} needs a burn rate above {factor:.4g}, but even 100% errors burn at only "
        f"{1.0 / budget:.4g}; it can never fire (raise the objective or accept that it stays silent)"
        for pair, factor in never_firing_pairs(objective, period, pairs)
    ]


def pair_fires(
    long_burn: float | None, short_burn: float | None, factor: float, long_bad: float, min_bad_events: float
) -> bool:
    """Both windows above the factor, and enough bad events in the long window to be no fluke."""
    if long_burn is None or short_burn is None:
        return False
    return long_burn > factor and short_burn > factor and long_bad >= min_bad_events


@dataclass(frozen=True, slots=True)
class Decision:
    alert: Alert
    fired: tuple[str, ...]  # pair names firing, page pairs first
    held: tuple[str, ...]  # pairs whose burn crossed but the minimum event count held back


def decide(
    burn_rates: Mapping[str, float | None],
    bad_events: Mapping[str, float],
    period: float = DEFAULT_PERIOD,
    *,
    min_bad_events: float = DEFAULT_MIN_BAD_EVENTS,
    pairs: Sequence[BurnPair] = PAIRS,
) -> Decision:
    """The multiwindow, multi-burn-rate verdict from burn rates and bad counts per window name.

    No `for:` duration: the long window already demands sustained burn, and a hold would only
    delay the page (the Workbook advises against it).
    """
    fired: list[str] = []
    held: list[str] = []
    for pair in pairs:
        factor = pair.factor(period)
        long_burn, short_burn = burn_rates.get(pair.long), burn_rates.get(pair.short)
        long_bad = bad_events.get(pair.long, 0.0)
        if pair_fires(long_burn, short_burn, factor, long_bad, min_bad_events):
            fired.append(pair.name)
        elif pair_fires(long_burn, short_burn, factor, math.inf, min_bad_events):
            held.append(pair.name)
    severities = {pair.severity for pair in pairs if pair.name in fired}
    alert: Alert = "page" if "page" in severities else "ticket" if "ticket" in severities else "none"
    order = {"page": 0, "ticket": 1}
    ranked = sorted(fired, key=lambda n: order[next(p.severity for p in pairs if p.name == n)])
    return Decision(alert, tuple(ranked), tuple(held))


@dataclass(frozen=True, slots=True)
class SloEvaluation:
    """One SLO (and pool) at one moment: what `/api/v1/slos`, `/metrics` and Alertmanager show."""

    objective: float
    period: float
    good: float  # events over the SLO window
    total: float
    sli: float | None
    error_budget_remaining: float
    burn_rates: Mapping[str, float | None]
    alert: Alert
    fired: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    exact: bool = True
    factors: Mapping[str, float] = field(default_factory=dict)
    # (good, total) behind each burn rate: a ratio without its denominator cannot tell ten
    # requests from ten thousand, and a restart must give back exactly these counts
    window_events: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def pair(self) -> str | None:
        """The pair that decided the alert (the first page pair, else the first ticket pair)."""
        return self.fired[0] if self.fired else None


def evaluate_counts(
    windows: Mapping[str, tuple[float, float]],
    period_counts: tuple[float, float],
    objective: float,
    period: float = DEFAULT_PERIOD,
    *,
    exact: bool = True,
    min_bad_events: float = DEFAULT_MIN_BAD_EVENTS,
    pairs: Sequence[BurnPair] = PAIRS,
) -> SloEvaluation:
    """Evaluation from (good, total) per window name and over the SLO window, wherever they came from."""
    rates = {name: burn_rate(total - good, total, objective) for name, (good, total) in windows.items()}
    bad = {name: max(total - good, 0.0) for name, (good, total) in windows.items()}
    verdict = decide(rates, bad, period, min_bad_events=min_bad_events, pairs=pairs)
    good, total = period_counts
    return SloEvaluation(
        objective=objective,
        period=period,
        good=good,
        total=total,
        sli=sli(good, total),
        error_budget_remaining=error_budget_remaining(max(total - good, 0.0), total, objective),
        burn_rates=rates,
        alert=verdict.alert,
        fired=verdict.fired,
        held=verdict.held,
        exact=exact,
        factors=burn_factors(period, pairs),
        window_events=dict(windows),
    )


def evaluate(
    series: EventSeries,
    now: float,
    objective: float,
    period: float = DEFAULT_PERIOD,
    *,
    exact: bool = True,
    min_bad_events: float = DEFAULT_MIN_BAD_EVENTS,
    pairs: Sequence[BurnPair] = PAIRS,
    windows: Mapping[str, float] = WINDOWS,
) -> SloEvaluation:
    """Evaluate one SLO's series at `now`. `exact` comes from the caller (the series stores counts
    only): False when the latency threshold sits between histogram buckets."""
    names = dict(windows)
    for pair in pairs:
        for name in (pair.long, pair.short):
            names.setdefault(name, parse_duration(name))
    counts = {name: series.window(now, seconds) for name, seconds in names.items()}
    return evaluate_counts(
        counts,
        series.window(now, period),
        objective,
        period,
        exact=exact,
        min_bad_events=min_bad_events,
        pairs=pairs,
    )
