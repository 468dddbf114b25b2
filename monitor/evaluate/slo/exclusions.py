"""Maintenance windows the error budget does not pay for (`slos[].exclusions` and the ad-hoc ones of
`POST /api/v1/exclusions`): which moments of an SLO and pool they cover, as minute ranges the series
leaves out.

Events are stored as they happened; exclusions are applied when a window is read. A window is
excluded minute by minute: every minute it overlaps counts neither good nor bad events (the same
minute the per-minute rows and the generated rules' one-minute evaluations see). Pure: the times
come from the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Sequence
from zoneinfo import ZoneInfo

from monitor.evaluate.slo.periods import MINUTE
from monitor.settings import ExclusionConfig, SloConfig
from monitor.settings.exclusions import DAYS

WEEK = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class Exclusion:
    """An ad-hoc maintenance window, as posted and stored. `slo` / `pool` None: every SLO / pool."""

    id: int
    start: float  # unix seconds
    end: float
    reason: str
    slo: str | None = None
    pool: str | None = None
    created_at: float = 0.0
    created_by: str = ""  # the client address the POST came from: who to ask
    ended_at: float | None = None  # DELETE of a running window ends it there
    removed_at: float | None = None  # DELETE of one not started yet

    def applies(self, slo: str, pool: str) -> bool:
        return self.removed_at is None and self.slo in (None, slo) and self.pool in (None, pool)

    @property
    def effective_end(self) -> float:
        return min(self.end, self.ended_at) if self.ended_at is not None else self.end

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "slo": self.slo, "pool": self.pool, "start": self.start, "end": self.end,
                "reason": self.reason, "created_at": self.created_at, "created_by": self.created_by,
                "ended_at": self.ended_at, "removed_at": self.removed_at}


@dataclass(frozen=True, slots=True)
class Window:
    """One occurrence of a maintenance window: [start, end) in unix seconds, and why."""

    start: float
    end: float
    reason: str
    source: str  # "config" or "api:<id>"

    def active(self, t: float) -> bool:
        return self.start <= t < self.end


def weekly_occurrences(days: Sequence[str], start: str, duration: float, zone: str,
                       since: float, until: float) -> list[tuple[float, float]]:
    """Every (start, end) of a weekly window that overlaps [since, until), in the window's own time
    zone (a daylight-saving change moves it with the wall clock, as a maintenance plan does)."""
    tz = ZoneInfo(zone)
    hour, minute = (int(x) for x in start.split(":"))
    wanted = {DAYS.index(d) for d in days}
    first = datetime.fromtimestamp(since - duration - 86400.0, tz).date()
    last = datetime.fromtimestamp(until + 86400.0, tz).date()
    out = []
    day = first
    while day <= last:
        if day.weekday() in wanted:
            begin = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).timestamp()
            if begin < until and begin + duration > since:
                out.append((begin, begin + duration))
        day += timedelta(days=1)
    return out


def config_windows(exclusion: ExclusionConfig, since: float, until: float) -> list[Window]:
    """The occurrences of one configured exclusion within [since, until)."""
    one_off = exclusion.timestamps()
    if one_off is not None:
        start, end = one_off
        return [Window(start, end, exclusion.reason, "config")] if start < until and end > since else []
    weekly = exclusion.weekly
    assert weekly is not None
    return [Window(a, b, exclusion.reason, "config")
            for a, b in weekly_occurrences(weekly.days, weekly.start, weekly.duration, weekly.timezone, since, until)]


def slo_windows(slo: SloConfig, pool: str, adhoc: Iterable[Exclusion], since: float, until: float) -> list[Window]:
    """Every maintenance window of one SLO and pool overlapping [since, until), sorted by start."""
    found: list[Window] = []
    for exclusion in slo.exclusions:
        if exclusion.pools is None or pool in exclusion.pools:
            found.extend(config_windows(exclusion, since, until))
    for e in adhoc:
        if e.applies(slo.name, pool) and e.start < until and e.effective_end > since and e.effective_end > e.start:
            found.append(Window(e.start, e.effective_end, e.reason, f"api:{e.id}"))
    return sorted(found, key=lambda w: (w.start, w.end))


def minute_ranges(windows: Iterable[Window]) -> list[tuple[int, int]]:
    """The minutes the windows overlap, as sorted, merged [first, end) minute numbers."""
    spans = sorted((math.floor(w.start / MINUTE), math.ceil(w.end / MINUTE)) for w in windows if w.end > w.start)
    merged: list[tuple[int, int]] = []
    for first, end in spans:
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((first, end))
    return merged


def active(windows: Iterable[Window], t: float) -> list[Window]:
    """The windows in force at `t`."""
    return [w for w in windows if w.active(t)]


__all__ = ["Exclusion", "Window", "active", "config_windows", "minute_ranges", "slo_windows", "weekly_occurrences"]
