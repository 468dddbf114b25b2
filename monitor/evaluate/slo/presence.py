"""SLOMetricAbsent: whether an SLI's series have gone missing from a pool that still scrapes fine.

Apart from the engine's counting because it reads only which pools scraped fine and which series
they carried, never the events: fires when no successfully scraped instance of the pool had the
series for `absent_for` while at least one scraped fine.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from monitor.evaluate.slo import indicator_present
from monitor.samples import ScrapeResult
from monitor.settings import AvailabilityIndicator, SloConfig


class MetricPresence:
    """When each (SLO, pool)'s series were last seen, and each pool's first and last good scrape."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._pool_ok_since: dict[str, float] = {}
        self._pool_up: dict[str, bool] = {}

    def note(self, pool: str, pool_results: Sequence[ScrapeResult], slos: Iterable[SloConfig]) -> None:
        """One cycle's results of one pool: whether it scraped fine, and which SLIs' series it carried."""
        ok = [r for r in pool_results if r.ok]
        self._pool_up[pool] = bool(ok)
        if not ok:
            return
        self._pool_ok_since.setdefault(pool, min(r.started_at for r in ok))
        for slo in slos:
            for result in ok:
                if any(indicator_present(slo.indicator, m) for m in result.models):
                    key = (slo.name, pool)
                    self._seen[key] = max(self._seen.get(key, result.started_at), result.started_at)

    def absent(self, slo: SloConfig, pool: str, now: float) -> tuple[bool, float | None]:
        """(SLOMetricAbsent fires, when the series were last seen) for a pool-wide key."""
        seen = self._seen.get((slo.name, pool))
        if isinstance(slo.indicator, AvailabilityIndicator) or not self._pool_up.get(pool):
            return False, seen
        since = seen if seen is not None else self._pool_ok_since.get(pool)
        return since is not None and now - since >= slo.absent_for, seen
