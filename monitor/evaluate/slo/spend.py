"""Today's GPU spend per pool against its daily budget (`pools[].cost.daily_budget`).

Spend so far = replica-seconds since midnight UTC / 3600 x gpus_per_instance x gpu_hour. The
replica-seconds are integrated from the scrape cycles (every member of a pool is scraped each
cycle, whether it serves, starts or fails: a reserved GPU is billed all the same) and kept per
minute, so the service can store them with its SLO minutes and a restart does not reset the day.
Alerts at 80% (`CostBudgetWarning`, ticket) and 100% (`CostBudgetExceeded`, page).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from monitor.evaluate.slo.periods import DAY, MINUTE
from monitor.settings import CostConfig

WARNING_AT = 0.8
EXCEEDED_AT = 1.0
MAX_GAP_S = 300.0  # a longer gap between two cycles (the service was paused) is not billed blindly
KEEP_S = 2 * DAY  # minutes kept in memory: today and yesterday (the rows outlive them in the database)


def day_start(now: float) -> float:
    """Midnight UTC of the day holding `now`."""
    return math.floor(now / DAY) * DAY


def spend(replica_seconds: float, cost: CostConfig) -> float:
    """What `replica_seconds` of the pool cost, in its currency."""
    return replica_seconds / 3600.0 * cost.gpus_per_instance * cost.gpu_hour


@dataclass(frozen=True, slots=True)
class CostBudgetStatus:
    """One pool's spend today (and its daily budget, if it has one) at one moment."""

    pool: str
    currency: str
    spend_today: float
    daily_budget: float | None
    replica_seconds_today: float
    day_start: float
    evaluated_at: float

    @property
    def ratio(self) -> float | None:
        return None if self.daily_budget is None else self.spend_today / self.daily_budget

    @property
    def warning(self) -> bool:
        return self.ratio is not None and self.ratio >= WARNING_AT

    @property
    def exceeded(self) -> bool:
        return self.ratio is not None and self.ratio >= EXCEEDED_AT

    def to_json(self) -> dict[str, object]:
        return {"pool": self.pool, "currency": self.currency, "spend_today": self.spend_today,
                "daily_budget": self.daily_budget, "budget_used_ratio": self.ratio,
                "replica_hours_today": self.replica_seconds_today / 3600.0}


class SpendMeter:
    """Replica-seconds per pool and minute, integrated from scrape cycles."""

    def __init__(self, keep_dirty: bool = True) -> None:
        """`keep_dirty`: remember changed minutes for `take_dirty` (False when nothing stores them)."""
        self._minutes: dict[str, dict[int, float]] = {}
        self._last: dict[str, tuple[float, int]] = {}  # pool -> (time, replicas) of the last cycle
        self.keep_dirty = keep_dirty
        self.dirty: set[tuple[str, int]] = set()

    def record(self, pool: str, t: float, replicas: int) -> None:
        """A cycle saw `replicas` members of `pool` at `t`: bill them since the previous cycle."""
        previous = self._last.get(pool)
        self._last[pool] = (t, replicas)
        if previous is None or not 0 < t - previous[0] <= MAX_GAP_S or replicas <= 0:
            return
        start = previous[0]
        minute = math.floor(start / MINUTE)
        while minute * MINUTE < t:
            lo, hi = max(minute * MINUTE, start), min((minute + 1) * MINUTE, t)
            if hi > lo:
                self.add(pool, minute, replicas * (hi - lo))
            minute += 1
        self._prune(t)

    def add(self, pool: str, minute: int, replica_seconds: float) -> None:
        minutes = self._minutes.setdefault(pool, {})
        minutes[minute] = minutes.get(minute, 0.0) + replica_seconds
        if self.keep_dirty:
            self.dirty.add((pool, minute))

    def load(self, pool: str, minute: int, replica_seconds: float) -> None:
        """A stored minute (after a restart): replaces what is held for it."""
        self._minutes.setdefault(pool, {})[minute] = replica_seconds

    def minute(self, pool: str, minute: int) -> float:
        return self._minutes.get(pool, {}).get(minute, 0.0)

    def today(self, pool: str, now: float) -> float:
        """Replica-seconds of `pool` since midnight UTC."""
        first = math.floor(day_start(now) / MINUTE)
        return sum(v for m, v in self._minutes.get(pool, {}).items() if m >= first)

    def take_dirty(self) -> list[tuple[str, int, float]]:
        out = [(pool, minute, self.minute(pool, minute)) for pool, minute in sorted(self.dirty)]
        self.dirty.clear()
        return out

    def _prune(self, now: float) -> None:
        oldest = math.floor((now - KEEP_S) / MINUTE)
        for minutes in self._minutes.values():
            for m in [m for m in minutes if m < oldest]:
                del minutes[m]


def budget_statuses(meter: SpendMeter, costs: dict[str, CostConfig], now: float,
                    pools: Iterable[str] | None = None) -> list[CostBudgetStatus]:
    """Every pool with a `cost` (the budget part only where it has a daily budget), at `now`."""
    out = []
    for pool in pools if pools is not None else costs:
        cost = costs.get(pool)
        if cost is None:
            continue
        seconds = meter.today(pool, now)
        out.append(CostBudgetStatus(pool, cost.currency, spend(seconds, cost), cost.daily_budget, seconds,
                                    day_start(now), now))
    return out


__all__ = ["EXCEEDED_AT", "WARNING_AT", "CostBudgetStatus", "SpendMeter", "budget_statuses", "day_start", "spend"]
