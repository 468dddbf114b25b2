"""What the service remembers: per-minute rollups, scrape outcomes, SLO minutes and GPU minutes
written on a schedule, brought back at start, and kept within retention.

A follower replica writes nothing (the leader writes the same history) but keeps the last
STANDBY_KEEP_S ready, so that on a takeover it writes again what a crashed leader may have lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterable, Mapping

from sqlalchemy.exc import SQLAlchemyError

from monitor.evaluate.fleet import FleetView, InstanceTrack, minute_floor, take_outcomes
from monitor.evaluate.slo import MINUTE
from monitor.evaluate.slo.engine import SloEngine, SloEventRow
from monitor.gpu.rollup import GpuRollups
from monitor.store import Store, StoreBusy
from monitor.units import counted

log = logging.getLogger("monitor.service")

SHUTDOWN_FLUSH_S = 10.0  # how long an exit keeps trying to write held rows
SHUTDOWN_RETRY_S = 1.0
HEALTH_STATE_KEY = "health"
# A follower keeps this much recent history unwritten, so that when it takes over it rewrites the
# minutes a crashed leader may not have flushed (at most PERSIST_EVERY_S plus the minute filling)
STANDBY_KEEP_S = 120.0
DB_START_TIMEOUT_S = 30.0  # how long the start waits for a saved state or SLO history before going on without


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class History:
    """The service's writes to and reads from the database."""

    def __init__(self, store: Store, fleet: FleetView, slo: SloEngine, gpu_rollups: GpuRollups | None, *,
                 settle_s: float, retention_s: float, started_at: float) -> None:
        """`settle_s`: how long after a minute's end its last scrape may still arrive."""
        self.store = store
        self.fleet = fleet
        self.slo = slo
        self.gpu_rollups = gpu_rollups
        self.settle_s = settle_s
        self.retention_s = retention_s
        self.rolled_up_to = minute_floor(started_at)
        self.standby_slo_rows: dict[tuple[str, str, str, float], SloEventRow] = {}
        self._lock = asyncio.Lock()

    async def restore_health(self) -> Mapping[str, Any] | None:
        """Who was ejected and until when: a restart must not hand traffic back to an instance that
        has not earned it. None when nothing was saved or the database did not answer."""
        try:
            return await self.store.run(self.store.load_state, HEALTH_STATE_KEY, timeout=DB_START_TIMEOUT_S)
        except (SQLAlchemyError, StoreBusy, TimeoutError) as exc:
            log.warning("health state not restored (starting fresh): %s", _first_line(exc))
            return None

    async def reload_slo_events(self) -> None:
        """Rebuild the SLO series from the stored minutes, so budgets and the 1h..3d windows survive
        a restart. A database that does not answer costs history, never the start."""
        if not self.slo.slos:
            return
        now = time.time()
        try:
            rows = await self.store.run(self.store.slo_events, now - self.slo.horizon() - MINUTE,
                                        timeout=DB_START_TIMEOUT_S)
        except (SQLAlchemyError, StoreBusy, TimeoutError) as exc:
            log.warning("SLO history not reloaded (budgets start empty): %s", _first_line(exc))
            return
        used = self.slo.load(rows, now)
        log.info("SLO history: reloaded %s for %s", counted(used, "per-minute row"), counted(len(self.slo.slos), "SLO"))

    def save_health(self, snapshot: Mapping[str, Any], now: float) -> None:
        self.store.queue_state(HEALTH_STATE_KEY, snapshot, now)

    async def persist(self, *, leader: bool, final: bool = False, in_flight_since: float | None = None) -> None:
        """Queue the rollups of every finished minute and the SLO minutes that changed, and flush.

        A minute is rolled up once its last scrape had time to arrive (`settle_s`) and no cycle that
        began before its end is still in flight (`in_flight_since`): a cycle slowed past `settle_s` (a
        loaded machine, a reload) ingests a reading of the minute after the minute was written, and the
        next minute takes that reading as its baseline: its requests were in neither (seen under load
        in tests/test_reload_under_load.py, one scrape interval's requests short)."""
        async with self._lock:
            now = time.time()
            if not leader:
                self._stand_by(now)
                return
            ready_before = now if final else now - self.settle_s
            if in_flight_since is not None and not final:
                ready_before = min(ready_before, in_flight_since)
            rollups = []
            while self.rolled_up_to + 60.0 <= ready_before:
                rollups.extend(self.fleet.rollups(self.rolled_up_to))
                self.rolled_up_to += 60.0
            if final:
                rollups.extend(self.fleet.rollups(self.rolled_up_to))
            before = float("inf") if final else self.rolled_up_to
            self.store.queue(rollups, take_outcomes(self.fleet.tracks.values(), before))
            self.store.queue_slo_events(self.slo.take_rows())
            if self.gpu_rollups is not None:
                self.store.queue_gpu_rollups(self.gpu_rollups.take(before))
            await self._flush()

    async def _flush(self) -> None:
        """One flush on the database's own threads; a database too busy to take it is retried by the
        next persist (rows stay queued, bounded)."""
        try:
            await self.store.run(self.store.flush)
        except StoreBusy as exc:
            log.warning("database write deferred: %s", exc)

    def retire(self, tracks: Iterable[InstanceTrack], *, leader: bool) -> None:
        """Instances dropped from the fleet after draining: the minutes of theirs not rolled up yet
        are queued now (written at the next flush), since they will not be in the fleet when those
        minutes settle. Their history is theirs whether they left or not."""
        tracks = list(tracks)
        if not leader or not tracks:
            return
        last = max((series[-1][0] for t in tracks for series in t.samples.values() if series), default=None)
        rollups = []
        minute = self.rolled_up_to
        while last is not None and minute <= last:
            rollups.extend(self.fleet.rollups(minute, tracks))
            minute += 60.0
        self.store.queue(rollups, take_outcomes(tracks, float("inf")))

    def _stand_by(self, now: float) -> None:
        keep_from = minute_floor(now) - STANDBY_KEEP_S
        self.rolled_up_to = max(self.rolled_up_to, keep_from)
        take_outcomes(self.fleet.tracks.values(), self.rolled_up_to)  # older tallies: the leader's
        if self.gpu_rollups is not None:
            self.gpu_rollups.take(self.rolled_up_to)  # older GPU minutes: the leader's too
        for row in self.slo.take_rows():
            self.standby_slo_rows[(row.slo, row.pool, row.model_name, row.minute)] = row
        for key in [k for k in self.standby_slo_rows if k[3] < keep_from]:
            del self.standby_slo_rows[key]

    def take_over(self) -> None:
        """Elected: the SLO minutes kept while following are written again."""
        self.store.queue_slo_events(list(self.standby_slo_rows.values()))
        self.standby_slo_rows.clear()

    async def flush_before_exit(self) -> None:
        """Rows the database refused are held in memory while serving; at exit they have nowhere
        else to go, so the database gets a few more tries (well inside Kubernetes' 30 s grace
        period), and what is still refused after them is reported as lost, with its count."""
        deadline = time.monotonic() + SHUTDOWN_FLUSH_S
        while self.store.pending and time.monotonic() < deadline:
            await asyncio.sleep(SHUTDOWN_RETRY_S)
            await self._flush()
        if self.store.pending:
            log.error("exit: %d rows of history could not be written in %gs (%s) and are lost",
                      self.store.pending, SHUTDOWN_FLUSH_S, self.store.last_error)

    async def cleanup(self) -> None:
        now = time.time()
        deleted = await self.store.run(self.store.cleanup, now - self.retention_s)
        # SLO minutes live as long as the longest SLO window needs them (a 90d SLO outlives 30d rollups)
        keep = max(self.retention_s, self.slo.horizon()) + MINUTE
        deleted += await self.store.run(self.store.cleanup_slo_events, now - keep)
        if deleted:
            log.info("retention: deleted %d rows older than %gs", deleted, self.retention_s)
