"""Error budgets, burn rates and the multiwindow, multi-burn-rate alert verdict (SRE Workbook ch. 5).

Pure functions and plain data, no I/O and no clock: the service passes `now`, stores the per-minute
rows and pushes the alerts. Keeping the arithmetic here lets the tests drive days of simulated
traffic in milliseconds and check the numbers an on-call engineer is paged on against hand-worked
values (docs/slos-and-alerting.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Mapping, Sequence

from monitor.evaluate.slo.periods import DEFAULT_PERIOD, Alert, Severity
from monitor.evaluate.slo.series import EventSeries, MinuteRanges
from monitor.settings import BUILTIN_WINDOW_SETS, BurnWindow, SloConfig
from monitor.units import format_duration, parse_duration

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


def pairs_of(windows: Sequence[BurnWindow]) -> tuple[BurnPair, ...]:
    """A window set's pairs (settings: `BurnWindow`, percent of the budget) as the arithmetic uses
    them, page pairs first."""
    pairs = [BurnPair(w.severity, w.long, w.short, w.budget_percent / 100.0) for w in windows]
    return tuple(sorted(pairs, key=lambda p: 0 if p.severity == "page" else 1))


def slo_pairs(slo: SloConfig) -> tuple[BurnPair, ...]:
    """The pairs of an SLO's window set (`alerting.windows` / `alerting.pairs`, google-30d by default)."""
    return pairs_of(slo.burn_windows)


# Workbook Table 5-8, plus the 1d/2h ticket that Sloth and Grafana ship: the `google-30d` window set
# (monitor/settings/slos.py holds the sets as data). Page pairs first.
PAIRS: tuple[BurnPair, ...] = pairs_of(BUILTIN_WINDOW_SETS["google-30d"].pairs)

# Grafana SLO calls it `min_failures`. One failure in ten requests is a 1000x burn at 99.9%; five
# bad events in the long window keep a lone failure (or a handful) from paging at low traffic, yet
# a real outage at one request a second clears it within seconds.
DEFAULT_MIN_BAD_EVENTS = 5.0

# What an exhausted budget must stand on (`slos[].budget_min_events`, `slos[].budget_min_coverage`).
# Three minutes of errors on a fresh service read -1071% of a 30-day budget: true arithmetic, but a
# figure standing on 0.007% of its window, and no budget is spent until the window has had traffic
# to spend it against. A tenth of the window (3 days of a 30d SLO) and 100 valid events (a 99.9%
# budget of 0.1 events is no budget at all) before ErrorBudgetExhausted may fire; the burn-rate
# alerts are not held back by either, so a real outage of a new service still pages within minutes.
DEFAULT_BUDGET_MIN_EVENTS = 100.0
DEFAULT_BUDGET_MIN_COVERAGE = 0.1


def coverage_text(covered: float, period: float) -> str:
    """`3m of 30d`: how much of the SLO window the figures stand on, rounded to what a reader needs
    (whole minutes from a minute on, whole hours from a day on)."""
    if covered >= 86400.0:
        covered = round(covered / 3600.0) * 3600.0
    elif covered >= 60.0:
        covered = round(covered / 60.0) * 60.0
    else:
        covered = float(round(covered))
    return f"{format_duration(covered)} of {format_duration(period)}"


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

    Uses the very comparison `alert_verdict` makes (100% errors burn at 1/b), so `check` warns exactly
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
class BurnVerdict:
    alert: Alert
    fired: tuple[str, ...]  # pair names firing, page pairs first
    held: tuple[str, ...]  # pairs whose burn crossed but the minimum event count held back


def alert_verdict(
    burn_rates: Mapping[str, float | None],
    bad_events: Mapping[str, float],
    period: float = DEFAULT_PERIOD,
    *,
    min_bad_events: float = DEFAULT_MIN_BAD_EVENTS,
    pairs: Sequence[BurnPair] = PAIRS,
) -> BurnVerdict:
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
    return BurnVerdict(alert, tuple(ranked), tuple(held))


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
    pairs: tuple[BurnPair, ...] = PAIRS
    # the SLO window's (good, total) counting the minutes of maintenance windows too: what the budget
    # would be had nobody declared them (None when no exclusion touched the window)
    unexcluded: tuple[float, float] | None = None
    min_bad_events: float = DEFAULT_MIN_BAD_EVENTS
    # seconds of the SLO window the figures stand on (`EventSeries.covered`): the whole window
    # unless told otherwise, as for counts handed in from elsewhere
    covered_seconds: float | None = None
    budget_min_events: float = DEFAULT_BUDGET_MIN_EVENTS
    budget_min_coverage: float = DEFAULT_BUDGET_MIN_COVERAGE

    @property
    def pair(self) -> str | None:
        """The pair that decided the alert (the first page pair, else the first ticket pair)."""
        return self.fired[0] if self.fired else None

    @property
    def bad(self) -> float:
        return max(self.total - self.good, 0.0)

    @property
    def coverage(self) -> float:
        """Share of the SLO window the figures stand on, 0..1 (`covered_seconds / period`)."""
        if self.covered_seconds is None:
            return 1.0 if self.total > 0 else 0.0
        return min(max(self.covered_seconds / self.period, 0.0), 1.0) if self.period > 0 else 0.0

    @property
    def covered(self) -> str:
        """`3m of 30d`."""
        seconds = self.coverage * self.period if self.covered_seconds is None else self.covered_seconds
        return coverage_text(seconds, self.period)

    @property
    def valid_events(self) -> float:
        """Valid events over the SLO window (the budget's denominator)."""
        return self.total

    @property
    def budget_held(self) -> str | None:
        """Why the budget may not be called exhausted yet (too little of the window has data, too few
        events); None once it stands on enough. Burn-rate alerts are never held by this."""
        reasons = []
        if self.coverage < self.budget_min_coverage:
            reasons.append(f"{self.covered} has data, under budget_min_coverage "
                           f"{self.budget_min_coverage * 100:g}% of the window")
        if self.total < self.budget_min_events:
            reasons.append(f"{self.total:.0f} valid events, under budget_min_events {self.budget_min_events:g}")
        return "not enough data: " + "; ".join(reasons) if reasons else None

    @property
    def exhausted(self) -> bool:
        """ErrorBudgetExhausted: nothing left of the SLO window's budget, from at least
        `min_bad_events` bad events (one failure among ten requests is no exhausted budget), with
        enough of the window and enough events behind it (`budget_held`)."""
        return (self.total > 0 and self.error_budget_remaining <= 0 and self.bad >= self.min_bad_events
                and self.budget_held is None)

    @property
    def error_budget_remaining_unexcluded(self) -> float:
        """The budget left had the exclusions not been declared (equal to the budget without any)."""
        if self.unexcluded is None:
            return self.error_budget_remaining
        good, total = self.unexcluded
        return error_budget_remaining(max(total - good, 0.0), total, self.objective)

    def severities(self) -> tuple[str, ...]:
        """`page` and/or `ticket`, as fired by the evaluation's pairs."""
        fired = {p.severity for p in self.pairs if p.name in self.fired}
        return tuple(s for s in ("page", "ticket") if s in fired)


def evaluate_counts(
    windows: Mapping[str, tuple[float, float]],
    period_counts: tuple[float, float],
    objective: float,
    period: float = DEFAULT_PERIOD,
    *,
    exact: bool = True,
    min_bad_events: float = DEFAULT_MIN_BAD_EVENTS,
    pairs: Sequence[BurnPair] = PAIRS,
    unexcluded: tuple[float, float] | None = None,
    covered_seconds: float | None = None,
    budget_min_events: float = DEFAULT_BUDGET_MIN_EVENTS,
    budget_min_coverage: float = DEFAULT_BUDGET_MIN_COVERAGE,
) -> SloEvaluation:
    """Evaluation from (good, total) per window name and over the SLO window, wherever they came from
    (`covered_seconds`: how much of the window has data; None takes the whole window where it has events)."""
    rates = {name: burn_rate(total - good, total, objective) for name, (good, total) in windows.items()}
    bad = {name: max(total - good, 0.0) for name, (good, total) in windows.items()}
    verdict = alert_verdict(rates, bad, period, min_bad_events=min_bad_events, pairs=pairs)
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
        pairs=tuple(pairs),
        unexcluded=unexcluded,
        min_bad_events=min_bad_events,
        covered_seconds=covered_seconds,
        budget_min_events=budget_min_events,
        budget_min_coverage=budget_min_coverage,
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
    excluded: MinuteRanges = (),
    budget_min_events: float = DEFAULT_BUDGET_MIN_EVENTS,
    budget_min_coverage: float = DEFAULT_BUDGET_MIN_COVERAGE,
) -> SloEvaluation:
    """Evaluate one SLO's series at `now`. `exact` comes from the caller (the series stores counts
    only): False when the latency threshold sits between histogram buckets. `excluded`: minutes of
    maintenance windows (sorted, merged [first, end) minute numbers), counted neither good nor bad
    in any window; the SLO window's count with them is kept as `unexcluded`. `budget_min_events` and
    `budget_min_coverage` gate `exhausted` (see DEFAULT_BUDGET_MIN_EVENTS)."""
    names = dict(windows)
    for pair in pairs:
        for name in (pair.long, pair.short):
            names.setdefault(name, parse_duration(name))
    counts = {name: series.window(now, seconds, excluded) for name, seconds in names.items()}
    period_counts = series.window(now, period, excluded)
    unexcluded = series.window(now, period) if excluded else None
    return evaluate_counts(
        counts,
        period_counts,
        objective,
        period,
        exact=exact,
        min_bad_events=min_bad_events,
        pairs=pairs,
        unexcluded=unexcluded if unexcluded != period_counts else None,
        covered_seconds=series.covered(now, period),
        budget_min_events=budget_min_events,
        budget_min_coverage=budget_min_coverage,
    )
