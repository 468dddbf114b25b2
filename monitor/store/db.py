"""The service's handle on the database: the fleet's pools and instances and the write queue (reads and
retention: `reads`; maintenance windows: `exclusions`).

Writes go through a bounded buffer: when the database is unreachable, evaluation and the API go on,
rows wait in memory and are written once it answers again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, TypeVar

from sqlalchemy import Engine, delete, insert, or_, select, tuple_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from monitor.evaluate.fleet import OutcomeTally, Rollup
from monitor.evaluate.slo.engine import SloEventRow
from monitor.evaluate.windows import instance_figures
from monitor.gpu.rollup import GpuRollup
from monitor.store.audit import AuditEntry
from monitor.store.engine import DEFAULT_STATEMENT_TIMEOUT_S, make_engine, serialize
from monitor.store.exclusions import ExclusionStore
from monitor.store.models import (
    DecisionRecord,
    GpuRollupRecord,
    Instance,
    InstanceRollup,
    Pool,
    ScrapeOutcome,
    ServiceState,
    SloEvent,
)
from monitor.store.reads import StoreReads
from monitor.store.rows import chunks, histogram_json, rowcount, utc

log = logging.getLogger(__name__)

T = TypeVar("T")
DB_WORKERS = 4  # threads the database has to itself: a flush, a lease renewal, an API read and one more
DB_BACKLOG = 32  # calls waiting or running at most; past that a call is refused at once (StoreBusy)


class StoreBusy(Exception):
    """The database's own workers are all taken and its queue is full: the database is not keeping
    up (or hangs), and this call is refused rather than queued without end."""


@dataclass(frozen=True, slots=True)
class PendingRollup:
    rollup: Rollup


@dataclass(frozen=True, slots=True)
class PendingOutcome:
    instance: str
    minute: float
    tally: OutcomeTally


@dataclass(frozen=True, slots=True)
class PendingState:
    key: str
    value: Mapping[str, Any]
    at: float


Pending = PendingRollup | PendingOutcome | SloEventRow | AuditEntry | PendingState | GpuRollup


class Store(StoreReads, ExclusionStore):
    """The service's one handle on the database."""

    def __init__(self, engine: Engine, *, max_pending: int = 200_000) -> None:
        self.engine = engine
        # Database calls run here, never in the event loop's default executor: a call the caller
        # gave up waiting for goes on running in its thread until the statement timeout ends it,
        # and /metrics rendering, the NGINX writer and reload (which use the default executor)
        # must never queue behind it. Bounded: DB_WORKERS threads, DB_BACKLOG calls in all.
        self._executor = ThreadPoolExecutor(max_workers=DB_WORKERS, thread_name_prefix="slo-monitor-db")
        self._backlog = 0
        self._backlog_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time, even one left running by a timed-out caller
        self._instance_ids: dict[str, int] = {}
        self._pending: deque[Pending] = deque()
        self.max_pending = max_pending
        self._pending_lock = threading.Lock()  # queue/_bound on the event loop, flush in a worker thread
        self.dropped = 0
        self.last_error: str | None = None

    @classmethod
    def open(cls, url: str, *, statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_S) -> Store:
        return cls(make_engine(url, statement_timeout=statement_timeout))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()

    @property
    def backlog(self) -> int:
        """Database calls running or waiting for one of the database's own threads."""
        return self._backlog

    async def run(self, call: Callable[..., T], *args: Any, timeout: float | None = None, **kwargs: Any) -> T:
        """`call(*args, **kwargs)` on the database's own threads. Raises StoreBusy at once when the
        backlog is full, TimeoutError after `timeout` (the call itself goes on until its statement
        timeout: a write may still commit, which is why every write is idempotent)."""
        with self._backlog_lock:
            if self._backlog >= DB_BACKLOG:
                raise StoreBusy(f"{self._backlog} database calls already running or waiting")
            self._backlog += 1
        try:
            future = self._executor.submit(functools.partial(call, *args, **kwargs))
        except RuntimeError:  # shut down
            with self._backlog_lock:
                self._backlog -= 1
            raise StoreBusy("the database's workers are shut down") from None
        future.add_done_callback(self._done)
        waiting = asyncio.wrap_future(future)
        if timeout is None:
            return await waiting
        return await asyncio.wait_for(asyncio.shield(waiting), timeout)

    def _done(self, _future: Any) -> None:
        with self._backlog_lock:
            self._backlog -= 1

    # -- fleet ------------------------------------------------------------------------------------

    def sync_fleet(self, members: Mapping[str, Mapping[str, str]], now: float) -> None:
        """Make the pools and instances tables match the fleet (pool -> {address: url}); instances no
        longer members are kept (their history stays) but marked inactive. Called at start and
        whenever membership changes (discovery, reload)."""
        with Session(self.engine) as session, session.begin():
            serialize(session.connection())  # two replicas inserting the same new pool: one waits
            pools = {p.name: p for p in session.scalars(select(Pool))}
            wanted: set[tuple[int, str]] = set()
            for pool_name, instances in members.items():
                pool = pools.get(pool_name)
                if pool is None:
                    pool = Pool(name=pool_name, created_at=utc(now))
                    session.add(pool)
                    session.flush()
                    pools[pool.name] = pool
                existing = {i.address: i for i in session.scalars(select(Instance).where(Instance.pool_id == pool.id))}
                for address, url in instances.items():
                    wanted.add((pool.id, address))
                    inst = existing.get(address)
                    if inst is None:
                        session.add(Instance(pool_id=pool.id, address=address, url=url,
                                             first_seen=utc(now), active=True))
                    else:
                        inst.url, inst.active = url, True
            for inst in session.scalars(select(Instance)):
                if (inst.pool_id, inst.address) not in wanted:
                    inst.active = False
            session.flush()
            self._instance_ids = {
                i.address: i.id for i in session.scalars(select(Instance).where(Instance.active.is_(True)))
            }

    # -- writes -----------------------------------------------------------------------------------

    def queue(self, rollups: Iterable[Rollup], outcomes: Iterable[tuple[str, float, OutcomeTally]]) -> None:
        for rollup in rollups:
            self._pending.append(PendingRollup(rollup))
        for instance, minute, tally in outcomes:
            self._pending.append(PendingOutcome(instance, minute, tally))
        self._bound()

    def queue_slo_events(self, rows: Iterable[SloEventRow]) -> None:
        """Queue per-minute SLO event counts. A minute may be queued again as it fills up (the
        current minute is written on every flush so a crash loses seconds, not the minute); the
        newest version of a row replaces the older ones, in the batch and in the database."""
        self._pending.extend(rows)
        self._bound()

    def queue_decisions(self, decisions: Iterable[AuditEntry]) -> None:
        self._pending.extend(decisions)
        self._bound()

    def queue_state(self, key: str, value: Mapping[str, Any], at: float) -> None:
        """Save a piece of decision state; only the newest queued version of a key is written."""
        self._pending.append(PendingState(key, value, at))
        self._bound()

    def queue_gpu_rollups(self, rows: Iterable[GpuRollup]) -> None:
        """Queue GPU minutes; a minute written again (a restart inside it) replaces the stored row."""
        self._pending.extend(rows)
        self._bound()

    def _bound(self) -> None:
        with self._pending_lock:
            while len(self._pending) > self.max_pending:
                self._pending.popleft()
                self.dropped += 1

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Write everything queued; on a database error keep it for the next try. Returns rows written.
        A flush still running (its caller stopped waiting) makes this one a no-op: two would write
        the same rows."""
        if not self._pending:
            return 0
        if not self._flush_lock.acquire(blocking=False):
            return 0
        try:
            return self._flush()
        finally:
            self._flush_lock.release()

    def _flush(self) -> int:
        with self._pending_lock:
            batch = list(self._pending)
        try:
            self._write(batch)
        except SQLAlchemyError as exc:
            self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            log.warning("database write failed, %d rows held for retry: %s", len(batch), self.last_error)
            return 0
        # Take out what was written, by identity: while the write ran (flush runs in a worker thread),
        # a full buffer may have dropped its oldest rows, and popping len(batch) would then take newer
        # rows that were never written, silently. The lock keeps `_bound` out while we compare and pop.
        with self._pending_lock:
            for item in batch:
                if self._pending and self._pending[0] is item:
                    self._pending.popleft()
        self.last_error = None
        return len(batch)

    def _write(self, batch: list[Pending]) -> None:
        rollups = [p.rollup for p in batch if isinstance(p, PendingRollup)]
        outcomes = [p for p in batch if isinstance(p, PendingOutcome)]
        # the last queued version of each SLO minute wins (the batch is in queue order)
        slo_rows = {(r.slo, r.pool, r.model_name, r.minute): r for r in batch if isinstance(r, SloEventRow)}
        decisions = [p for p in batch if isinstance(p, AuditEntry)]
        states = {p.key: p for p in batch if isinstance(p, PendingState)}
        with Session(self.engine) as session, session.begin():
            self._write_gpu_rollups(session, [p for p in batch if isinstance(p, GpuRollup)])
            if decisions:
                session.execute(insert(DecisionRecord), [
                    dict(at=utc(d.at), kind=d.kind, pool=d.pool, instance=d.instance, from_state=d.from_state,
                         to_state=d.to_state, reasons=list(d.reasons), signals=d.signals) for d in decisions])
            for state in states.values():
                # replaced without reading it back (the stored health state is the whole fleet's)
                values = dict(value=state.value, updated_at=utc(state.at))
                replaced = session.execute(update(ServiceState).where(ServiceState.key == state.key).values(**values)
                                           .execution_options(synchronize_session=False))
                if not rowcount(replaced):
                    session.execute(insert(ServiceState).values(key=state.key, **values))
            if slo_rows:
                keys3 = [(slo, pool, model, utc(minute)) for slo, pool, model, minute in slo_rows]
                for chunk in chunks(keys3, 200):
                    session.execute(delete(SloEvent).where(
                        tuple_(SloEvent.slo, SloEvent.pool, SloEvent.model_name, SloEvent.minute).in_(chunk)))
                session.execute(insert(SloEvent), [dict(slo=r.slo, pool=r.pool, model_name=r.model_name,
                                                        minute=utc(r.minute), good=r.good, total=r.total)
                                                   for r in slo_rows.values()])
            ids = self._ids_of(session, {r.instance for r in rollups} | {o.instance for o in outcomes})
            rollup_rows = [self._rollup_row(r, ids) for r in rollups if r.instance in ids]
            outcome_rows = [self._outcome_row(o, ids) for o in outcomes if o.instance in ids]
            # a minute written again (a restart inside it) replaces the earlier row
            if rollup_rows:
                keys = [(r["instance_id"], r["model_name"], r["minute"]) for r in rollup_rows]
                for chunk in chunks(keys, 300):
                    session.execute(delete(InstanceRollup).where(
                        tuple_(InstanceRollup.instance_id, InstanceRollup.model_name, InstanceRollup.minute).in_(chunk)))
                session.execute(insert(InstanceRollup), rollup_rows)
            if outcome_rows:
                keys2 = [(r["instance_id"], r["minute"]) for r in outcome_rows]
                for chunk in chunks(keys2, 300):
                    session.execute(delete(ScrapeOutcome).where(
                        tuple_(ScrapeOutcome.instance_id, ScrapeOutcome.minute).in_(chunk)))
                session.execute(insert(ScrapeOutcome), outcome_rows)
                last_seen: dict[int, datetime] = {}
                for outcome in outcome_rows:
                    if outcome["failures"] < outcome["scrapes"]:
                        instance_id, minute = outcome["instance_id"], outcome["minute"]
                        last_seen[instance_id] = max(last_seen.get(instance_id, minute), minute)
                # one UPDATE per distinct minute (usually one for the whole fleet), not a SELECT and
                # an UPDATE per instance: 1,000 round trips a minute at 1,000 targets
                by_minute: dict[datetime, list[int]] = {}
                for instance_id, seen in last_seen.items():
                    by_minute.setdefault(seen, []).append(instance_id)
                for seen, seen_ids in by_minute.items():
                    for chunk in chunks(seen_ids, 500):
                        session.execute(
                            update(Instance)
                            .where(Instance.id.in_(chunk), or_(Instance.last_seen.is_(None), Instance.last_seen < seen))
                            .values(last_seen=seen)
                            .execution_options(synchronize_session=False))

    @staticmethod
    def _write_gpu_rollups(session: Session, rows: list[GpuRollup]) -> None:
        latest = {r.key: r for r in rows}  # the last queued version of a GPU minute wins
        if not latest:
            return
        keys = [(host, uuid, mig, utc(minute)) for host, uuid, mig, minute in latest]
        for chunk in chunks(keys, 200):
            session.execute(delete(GpuRollupRecord).where(tuple_(
                GpuRollupRecord.host, GpuRollupRecord.uuid, GpuRollupRecord.mig_instance, GpuRollupRecord.minute
            ).in_(chunk)))
        session.add_all(GpuRollupRecord(**{**dataclasses.asdict(r), "minute": utc(r.minute)}) for r in latest.values())

    def _ids_of(self, session: Session, addresses: set[str]) -> dict[str, int]:
        """Instance ids of these addresses: the active members', and those of instances that left
        the fleet since their rows were queued (inactive now, but their last minutes are theirs).
        A copy: sync_fleet may replace the members' map from another thread meanwhile."""
        ids = dict(self._instance_ids)
        missing = sorted(addresses - ids.keys())
        for chunk in chunks(missing, 500):
            for address, instance_id in session.execute(
                    select(Instance.address, Instance.id).where(Instance.address.in_(chunk)).order_by(Instance.id)):
                ids[address] = instance_id  # the newest row of an address found in two pools
        return ids

    def _rollup_row(self, rollup: Rollup, ids: Mapping[str, int]) -> dict[str, Any]:
        """An `InstanceRollup` row as a plain dict: rows go in by one bulk INSERT, not the ORM's unit of
        work (an object, its bookkeeping and a primary key fetched back per row: 1,000 rows a minute at
        1,000 instances cost a fifth of a core-second)."""
        stats = rollup.stats
        figures = instance_figures(stats)
        return dict(
            instance_id=ids[rollup.instance],
            model_name=rollup.model_name,
            minute=utc(rollup.minute),
            span_s=stats.span,
            requests=stats.finished_total,
            errors=stats.errors,
            finished=dict(stats.finished),
            prompt_tokens=stats.increases.get("prompt_tokens"),
            generation_tokens=stats.increases.get("generation_tokens"),
            preemptions=stats.increases.get("preemptions"),
            ttft_p50_s=figures["ttft_p50_s"],
            ttft_p99_s=figures["ttft_p99_s"],
            tpot_p99_s=figures["tpot_p99_s"],
            e2e_p99_s=figures["e2e_p99_s"],
            queue_p99_s=figures["queue_p99_s"],
            kv_cache_usage=figures["kv_cache_usage"],
            requests_running=figures["requests_running"],
            requests_waiting=figures["requests_waiting"],
            histograms=histogram_json(stats),
        )

    def _outcome_row(self, pending: PendingOutcome, ids: Mapping[str, int]) -> dict[str, Any]:
        """A `ScrapeOutcome` row as a plain dict, for one bulk INSERT (see `_rollup_row`)."""
        t = pending.tally
        return dict(
            instance_id=ids[pending.instance],
            minute=utc(pending.minute),
            scrapes=t.scrapes,
            failures=t.failures,
            health_failures=t.health_failures,
            mean_duration_s=t.total_duration_s / t.scrapes if t.scrapes else 0.0,
            max_duration_s=t.max_duration_s,
            last_error_kind=t.last_error_kind,
            last_error=t.last_error,
        )
