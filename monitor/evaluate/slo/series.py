"""The per-minute event series of one SLO (and pool): any window ending at `now` in two subtractions."""

from __future__ import annotations

import bisect
import math
from datetime import UTC, datetime
from typing import Iterable, Sequence

from monitor.evaluate.slo.events import Events
from monitor.evaluate.slo.periods import DEFAULT_PERIOD, MINUTE

# minutes of maintenance windows: sorted, non-overlapping [first, end) minute numbers (unix s // 60)
MinuteRanges = Sequence[tuple[int, int]]

# --- the per-minute event series ----------------------------------------------------------------

_REBASE_AT = 2.0**40  # keep prefix sums far below 2**53 so window differences stay exact
# The most events one add may carry: far above any real interval (a million requests a second for
# twelve days), low enough that 30 days of minutes of it cannot reach the float range.
MAX_EVENTS = 2.0**40


def _usable(good: float, total: float) -> bool:
    """Whether counts may enter the running sums: finite and at most MAX_EVENTS. A NaN or infinity
    there would stay in every window difference until the retention ends (hours to 30 days),
    reading NaN burn rates that never page; such counts are dropped, never raised on."""
    return math.isfinite(good) and math.isfinite(total) and abs(total) <= MAX_EVENTS and abs(good) <= MAX_EVENTS


def _epoch_seconds(value: float | int | datetime) -> float:
    """Unix seconds; a naive datetime is taken as UTC, as databases hand back what was stored in UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
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
            good, total = float(good), float(total)
            at = _epoch_seconds(minute_start)
            if not (_usable(good, total) and good >= 0 and total >= 0 and math.isfinite(at)):
                continue  # a row stored before non-finite counts were kept out, or damaged
            bucket = buckets.setdefault(_minute(at), [0.0, 0.0])
            bucket[0] += good
            bucket[1] += total
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
        """Add events that happened at `t` (unix seconds); late events for a past minute are fine.
        Counts that are not finite (or absurdly large) are dropped: see `_usable`."""
        if not (_usable(good, total) and math.isfinite(t)):
            return
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
        if not (_usable(good, total) and math.isfinite(t)):
            return
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

    def window(self, now: float, seconds: float, excluded: MinuteRanges = ()) -> tuple[float, float]:
        """(good, total) over (now - seconds, now]. Minutes after the one holding `now` are
        ignored, so a past moment can be evaluated at minute resolution.

        `excluded` minutes (maintenance windows) count neither good nor bad: their events are taken
        out with the same prefix sums, one subtraction per excluded range, so a weekly window over
        30 days costs a handful of steps, not one per minute.
        """
        if not self._good or seconds <= 0:
            return 0.0, 0.0
        start = now - seconds
        # the last minute begun before `now`: at hh:mm:00 exactly, minute hh:mm has not happened yet
        now_minute, start_minute = math.ceil(now / MINUTE) - 1, _minute(start)
        lo, hi = max(start_minute + 1, self._first), min(now_minute, self._last)
        good = total = 0.0
        if hi >= lo:
            good, total = self._sum(lo, hi)
        share = 0.0
        if self._first <= start_minute <= self._last:
            share = self._share_in_window(start_minute, start, now)
            good += share * self._good[start_minute - self._first]
            total += share * self._total[start_minute - self._first]
        for first, end in excluded:
            a, b = max(first, lo), min(end - 1, hi)
            if b >= a and hi >= lo:
                g, t = self._sum(a, b)
                good, total = good - g, total - t
            if share and first <= start_minute < end:
                good -= share * self._good[start_minute - self._first]
                total -= share * self._total[start_minute - self._first]
        return max(good, 0.0), max(total, 0.0)

    def covered(self, now: float, seconds: float) -> float:
        """Seconds of (now - seconds, now] the figures stand on: from the start of the oldest minute
        in it that holds events up to `now` (0 when none does). What `coverage` reports: a budget
        read after three minutes of a 30-day window stands on 3m of 30d, however red it looks.

        Counted from the first data on, not minute by minute: a quiet minute of a low-traffic
        service is no traffic, not missing data. One binary search over the prefix sums (never
        decreasing: counts are not negative), so a 30-day window costs as little as a 5-minute one.
        """
        if not self._good or seconds <= 0:
            return 0.0
        start = now - seconds
        now_minute, start_minute = math.ceil(now / MINUTE) - 1, _minute(start)
        lo, hi = max(start_minute, self._first), min(now_minute, self._last)
        if hi < lo:
            return 0.0
        base = self._cum_total[lo - self._first]
        # the first position i (lo..hi) whose minute holds events: _cum_total[i + 1] > base
        found = bisect.bisect_right(self._cum_total, base + 1e-9, lo - self._first + 1, hi - self._first + 2)
        if found > hi - self._first + 1:
            return 0.0
        first_minute = self._first + found - 1
        return min(max(now - first_minute * MINUTE, 0.0), seconds)

    def _sum(self, lo: int, hi: int) -> tuple[float, float]:
        """(good, total) of minutes lo..hi inclusive, both inside the series."""
        return (self._cum_good[hi - self._first + 1] - self._cum_good[lo - self._first],
                self._cum_total[hi - self._first + 1] - self._cum_total[lo - self._first])

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
