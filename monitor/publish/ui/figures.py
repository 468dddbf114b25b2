"""The console's arithmetic over per-minute SLO rows, as pure functions: the budget burn-down, the
attainment over a span, the incidents of a month, the month a report covers.

Rows are the SLO engine's `(minute_start, good, total)` (monitor.evaluate.slo.engine.SloEngine.minutes);
`excluded` are merged `[first, end)` minute numbers of maintenance windows
(monitor.evaluate.slo.minute_ranges): those minutes count neither good nor bad, as in the evaluation.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

MINUTE = 60.0
Rows = Sequence[tuple[float, float, float]]
MinuteRanges = Sequence[tuple[int, int]]

_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")


def _is_excluded(minute: int, excluded: MinuteRanges) -> bool:
    i = bisect_right([first for first, _ in excluded], minute) - 1
    return i >= 0 and excluded[i][0] <= minute < excluded[i][1]


def _usable(good: float, total: float) -> bool:
    return math.isfinite(good) and math.isfinite(total) and total >= 0 and good >= 0


def counts(rows: Rows, since: float, until: float, excluded: MinuteRanges = ()) -> tuple[float, float]:
    """(good, total) over the minutes that start in [since, until), maintenance minutes left out."""
    good = total = 0.0
    for start, g, t in rows:
        if since <= start < until and _usable(g, t) and not _is_excluded(math.floor(start / MINUTE), excluded):
            good += min(g, t)
            total += t
    return good, total


def attainment(good: float, total: float) -> float | None:
    """The share of good events; None with no events (nothing to attain, not 100%)."""
    return good / total if total > 0 else None


def budget_spent(good: float, total: float, objective: float) -> float | None:
    """The share of the error budget the bad events used (1.0: all of it; above 1: overspent)."""
    if total <= 0 or objective >= 1:
        return None
    return (total - good) / ((1.0 - objective) * total)


def burn_down(rows: Rows, objective: float, period: float, now: float, excluded: MinuteRanges = (),
              points: int = 480) -> list[tuple[float, float]]:
    """The error budget left over the current SLO window, as (time, remaining) from the window's
    start to `now`: the bad events since the start against what the whole window's valid events
    allow, so the line starts at 1 and ends at the `error_budget_remaining` the API shows.

    At most about `points` points (the chart needs no more); minutes without events keep the line flat.
    """
    start = now - period
    _, total = counts(rows, start, now + MINUTE, excluded)
    allowed = (1.0 - objective) * total
    step = max(MINUTE, math.ceil(period / max(points, 1) / MINUTE) * MINUTE)
    usable = sorted((s, g, t) for s, g, t in rows if start <= s <= now and _usable(g, t)
                    and not _is_excluded(math.floor(s / MINUTE), excluded))
    out: list[tuple[float, float]] = []
    bad = 0.0
    i = 0
    t = start
    while True:
        while i < len(usable) and usable[i][0] < t:
            bad += usable[i][2] - min(usable[i][1], usable[i][2])
            i += 1
        out.append((t, 1.0 - bad / allowed if allowed > 0 else 1.0))
        if t >= now:
            return out
        t = min(t + step, now)


def incidents(rows: Rows, objective: float, factor: float, long_s: float, since: float, until: float,
              excluded: MinuteRanges = ()) -> list[tuple[float, float]]:
    """Spans in [since, until) while the page alert's long window burned at or above `factor`:
    the minutes a page would have been firing, reconstructed from the stored minutes (the short
    window, which only lets an alert clear sooner, is left out). Merged runs, (start, end)."""
    if until <= since or objective >= 1:
        return []
    budget = 1.0 - objective
    first = math.floor((since - long_s) / MINUTE)
    last = math.ceil(until / MINUTE)
    bad = [0.0] * (last - first + 1)
    total = [0.0] * (last - first + 1)
    for start, g, t in rows:
        m = math.floor(start / MINUTE)
        if first <= m <= last and _usable(g, t) and not _is_excluded(m, excluded):
            bad[m - first] += t - min(g, t)
            total[m - first] += t
    span = max(1, round(long_s / MINUTE))
    runs: list[tuple[float, float]] = []
    window_bad = window_total = 0.0
    for i in range(len(bad)):
        window_bad += bad[i]
        window_total += total[i]
        if i >= span:
            window_bad -= bad[i - span]
            window_total -= total[i - span]
        minute_start = (first + i) * MINUTE
        if minute_start < since or minute_start >= until:
            continue
        burning = window_total > 0 and window_bad > 0 and window_bad / window_total / budget >= factor
        if not burning:
            continue
        if runs and runs[-1][1] >= minute_start:
            runs[-1] = (runs[-1][0], minute_start + MINUTE)
        else:
            runs.append((minute_start, minute_start + MINUTE))
    return runs


def excluded_minutes(excluded: MinuteRanges, since: float, until: float) -> int:
    """How many minutes of [since, until) the maintenance windows excused."""
    lo, hi = math.floor(since / MINUTE), math.ceil(until / MINUTE)
    return sum(max(0, min(end, hi) - max(first, lo)) for first, end in excluded)


def month(period: str) -> tuple[float, float]:
    """A report's `period` (YYYY-MM, UTC) as [start, end) unix seconds. ValueError says the form."""
    found = _PERIOD.match(period.strip()) if isinstance(period, str) and len(period) <= 20 else None
    if found is None:
        raise ValueError(f"period: expected a month as YYYY-MM (e.g. 2026-11), got {period[:20]!r}")
    year, mon = int(found[1]), int(found[2])
    if not 1970 <= year <= 9998 or not 1 <= mon <= 12:
        raise ValueError(f"period: no such month {period.strip()!r} (YYYY-MM, 1970-01 or later)")
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def current_month(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m")


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One SLO and pool over one month: what the printable report and its CSV say."""

    slo: str
    pool: str
    indicator: str
    objective: float
    good: float
    total: float
    attainment: float | None
    budget_spent: float | None
    incidents: int
    incident_minutes: int
    excluded_minutes: int
    met: bool | None  # attainment >= objective (None: no events)


def report_row(slo: str, pool: str, indicator: str, objective: float, rows: Rows, since: float, until: float,
               excluded: MinuteRanges, page_factor: float | None, page_long_s: float | None) -> ReportRow:
    good, total = counts(rows, since, until, excluded)
    share = attainment(good, total)
    spans = incidents(rows, objective, page_factor, page_long_s, since, until, excluded) \
        if page_factor is not None and page_long_s is not None else []
    return ReportRow(slo, pool, indicator, objective, good, total, share, budget_spent(good, total, objective),
                     len(spans), round(sum(b - a for a, b in spans) / MINUTE), excluded_minutes(excluded, since, until),
                     None if share is None else share >= objective)


CSV_COLUMNS = ("period", "slo", "pool", "indicator", "objective", "attainment", "good_events", "valid_events",
               "budget_spent", "incidents", "incident_minutes", "excluded_minutes", "met")


def _cell(value: object) -> str:
    """One CSV cell: quoted when it holds a separator, a quote or a line break; a text cell that a
    spreadsheet would run as a formula (= + - @) gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else ""
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    if any(c in text for c in ',"\r\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text


def report_csv(period: str, rows: Iterable[ReportRow]) -> str:
    """RFC 4180 text (CRLF line ends), a header line first."""
    lines = [",".join(CSV_COLUMNS)]
    for r in rows:
        lines.append(",".join(_cell(v) for v in (
            period, r.slo, r.pool, r.indicator, r.objective, r.attainment, r.good, r.total, r.budget_spent,
            r.incidents, r.incident_minutes, r.excluded_minutes, r.met)))
    return "\r\n".join(lines) + "\r\n"
