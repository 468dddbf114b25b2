"""Maintenance windows as the engine applies them: the configured ones (`slos[].exclusions`) and the
ad-hoc ones posted to the API, resolved per SLO and pool.

Apart from the engine because the windows are applied when the series are read, not when events are
counted: the stored minutes keep every event (`monitor.evaluate.slo.exclusions` has the arithmetic).
"""

from __future__ import annotations

import math
from typing import Iterable

from monitor.evaluate.slo import MINUTE, Exclusion, Window, retention_for, slo_pairs, slo_windows
from monitor.settings import SloConfig


class MaintenanceWindows:
    """The ad-hoc windows, and each (SLO, pool)'s windows of the current minute."""

    def __init__(self) -> None:
        self.adhoc: tuple[Exclusion, ...] = ()
        self._cache: tuple[int, dict[tuple[str, str], list[Window]]] | None = None

    def set_adhoc(self, exclusions: Iterable[Exclusion]) -> None:
        self.adhoc = tuple(exclusions)
        self.forget_cached()

    def forget_cached(self) -> None:
        """Recompute at the next read (the windows or the SLOs changed)."""
        self._cache = None

    def windows(self, slo: SloConfig, pool: str, now: float) -> list[Window]:
        """The SLO's and pool's maintenance windows overlapping its retention up to now (recomputed
        once a minute, or when the windows change)."""
        minute = math.floor(now / MINUTE)
        if self._cache is None or self._cache[0] != minute:
            self._cache = (minute, {})
        cache = self._cache[1]
        key = (slo.name, pool)
        if key not in cache:
            retention = retention_for(slo.window, slo_pairs(slo))
            cache[key] = slo_windows(slo, pool, self.adhoc, now - retention - 2 * MINUTE, now + 2 * MINUTE)
        return cache[key]
