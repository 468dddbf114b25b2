"""Database access: migrations, the fleet's pools and instances, rollups, retention.

Writes go through a bounded buffer: when the database is unreachable, evaluation and the API go on,
rows wait in memory and are written once it answers again.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from sqlalchemy import Engine, create_engine, delete, event, or_, select, text, tuple_, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from monitor.config import Config, instance_address
from monitor.evaluate.fleet import OutcomeTally, Rollup
from monitor.evaluate.slo_engine import SloEventRow
from monitor.evaluate.windows import instance_figures
from monitor.gpu.rollup import GpuRollup
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

log = logging.getLogger(__name__)


def migrations_dir() -> Path:
    """migrations/ of a source checkout, else the copy shipped inside the package."""
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").exists():
        return checkout
    import monitor.migrations

    return Path(monitor.migrations.__file__).parent


PG_CONNECT_TIMEOUT_S = 5


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    # Without a connect timeout psycopg waits for ever on a server that accepts the connection and
    # never answers (a hung database, a proxy in front of a dead one): the flush would hang in its
    # worker thread, every later flush would be skipped behind it, /metrics would go on saying
    # storage_up 1, and the shutdown's final flush would never return. A URL may set its own.
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=connect_args)


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    with engine.begin() as connection:
        serialize(connection)  # replicas started together must not run the same migration twice
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
    if isinstance(url_or_engine, str):
        engine.dispose()


# pg_advisory_xact_lock key ("SLOM"): held by a transaction that several replicas starting at once
# would otherwise run side by side (migrations, the first insert of pools and instances)
_ADVISORY_LOCK = 0x534C4F4D


def serialize(connection: Any) -> None:
    """On PostgreSQL, wait for any other replica's transaction holding the monitor's lock, and hold
    it until this transaction ends. SQLite serialises writers by itself."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def _histogram_json(stats) -> dict[str, Any]:
    out = {}
    for key, hist in stats.histograms.items():
        out[key] = {
            "bounds": [b for b in hist.bounds if not math.isinf(b)],  # +Inf is implied as the last count
            "counts": list(hist.cumulative),
            "sum": hist.sum,
            "count": hist.count,
        }
    return out


@dataclass(frozen=True, slots=True)
class PendingRollup:
    rollup: Rollup


@dataclass(frozen=True, slots=True)
class PendingOutcome:
    instance: str
    minute: float
    tally: OutcomeTally


@dataclass(frozen=True, slots=True)
class Decision:
    """One audit entry: a health state change or a changed scaling recommendation."""

    at: float
    kind: str  # health | scaling
    pool: str
    instance: str  # "" for pool-level decisions
    from_state: str
    to_state: str
    reasons: tuple[str, ...]
    signals: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "pool": self.pool, "instance": self.instance or None,
                "from": self.from_state, "to": self.to_state, "reasons": list(self.reasons),
                "signals": dict(self.signals)}


@dataclass(frozen=True, slots=True)
class PendingState:
    key: str
    value: Mapping[str, Any]
    at: float


Pending = PendingRollup | PendingOutcome | SloEventRow | Decision | PendingState | GpuRollup


class Store:
    """The service's one handle on the database."""

    def __init__(self, engine: Engine, *, max_pending: int = 200_000) -> None:
        self.engine = engine
        self._instance_ids: dict[str, int] = {}
        self._pending: deque[Pending] = deque()
        self.max_pending = max_pending
        self._pending_lock = threading.Lock()  # queue/_bound on the event loop, flush in a worker thread
        self.dropped = 0
        self.last_error: str | None = None

    @classmethod
    def open(cls, url: str) -> Store:
        return cls(make_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    # -- fleet ------------------------------------------------------------------------------------

    def sync_fleet(self, config: Config, now: float) -> None:
        """Make the pools and instances tables match the config; instances no longer configured are
        kept (their history stays) but marked inactive."""
        with Session(self.engine) as session, session.begin():
            serialize(session.connection())  # two replicas inserting the same new pool: one waits
            pools = {p.name: p for p in session.scalars(select(Pool))}
            wanted: set[tuple[int, str]] = set()
            for pool_cfg in config.pools:
                pool = pools.get(pool_cfg.name)
                if pool is None:
                    pool = Pool(name=pool_cfg.name, created_at=_dt(now))
                    session.add(pool)
                    session.flush()
                    pools[pool.name] = pool
                existing = {i.address: i for i in session.scalars(select(Instance).where(Instance.pool_id == pool.id))}
                for url in pool_cfg.targets:
                    address = instance_address(url)
                    wanted.add((pool.id, address))
                    inst = existing.get(address)
                    if inst is None:
                        session.add(Instance(pool_id=pool.id, address=address, url=url,
                                             first_seen=_dt(now), active=True))
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

    def queue_decisions(self, decisions: Iterable[Decision]) -> None:
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
        """Write everything queued; on a database error keep it for the next try. Returns rows written."""
        if not self._pending:
            return 0
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
        decisions = [p for p in batch if isinstance(p, Decision)]
        states = {p.key: p for p in batch if isinstance(p, PendingState)}
        with Session(self.engine) as session, session.begin():
            self._write_gpu_rollups(session, [p for p in batch if isinstance(p, GpuRollup)])
            session.add_all(DecisionRecord(at=_dt(d.at), kind=d.kind, pool=d.pool, instance=d.instance,
                                           from_state=d.from_state, to_state=d.to_state, reasons=list(d.reasons),
                                           signals=_jsonable(d.signals)) for d in decisions)
            for state in states.values():
                row = session.get(ServiceState, state.key)
                if row is None:
                    session.add(ServiceState(key=state.key, value=_jsonable(state.value), updated_at=_dt(state.at)))
                else:
                    row.value, row.updated_at = _jsonable(state.value), _dt(state.at)
            if slo_rows:
                keys3 = [(slo, pool, model, _dt(minute)) for slo, pool, model, minute in slo_rows]
                for chunk in _chunks(keys3, 200):
                    session.execute(delete(SloEvent).where(
                        tuple_(SloEvent.slo, SloEvent.pool, SloEvent.model_name, SloEvent.minute).in_(chunk)))
                session.add_all(SloEvent(slo=r.slo, pool=r.pool, model_name=r.model_name, minute=_dt(r.minute),
                                         good=r.good, total=r.total) for r in slo_rows.values())
            rollup_rows = [self._rollup_row(r) for r in rollups if r.instance in self._instance_ids]
            outcome_rows = [self._outcome_row(o) for o in outcomes if o.instance in self._instance_ids]
            # a minute written again (a restart inside it) replaces the earlier row
            if rollup_rows:
                keys = [(r.instance_id, r.model_name, r.minute) for r in rollup_rows]
                for chunk in _chunks(keys, 300):
                    session.execute(delete(InstanceRollup).where(
                        tuple_(InstanceRollup.instance_id, InstanceRollup.model_name, InstanceRollup.minute).in_(chunk)))
                session.add_all(rollup_rows)
            if outcome_rows:
                keys2 = [(r.instance_id, r.minute) for r in outcome_rows]
                for chunk in _chunks(keys2, 300):
                    session.execute(delete(ScrapeOutcome).where(
                        tuple_(ScrapeOutcome.instance_id, ScrapeOutcome.minute).in_(chunk)))
                session.add_all(outcome_rows)
                last_seen: dict[int, datetime] = {}
                for row in outcome_rows:
                    if row.failures < row.scrapes:
                        last_seen[row.instance_id] = max(last_seen.get(row.instance_id, row.minute), row.minute)
                # one UPDATE per distinct minute (usually one for the whole fleet), not a SELECT and
                # an UPDATE per instance: 1,000 round trips a minute at 1,000 targets
                by_minute: dict[datetime, list[int]] = {}
                for instance_id, seen in last_seen.items():
                    by_minute.setdefault(seen, []).append(instance_id)
                for seen, ids in by_minute.items():
                    for chunk in _chunks(ids, 500):
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
        keys = [(host, uuid, mig, _dt(minute)) for host, uuid, mig, minute in latest]
        for chunk in _chunks(keys, 200):
            session.execute(delete(GpuRollupRecord).where(tuple_(
                GpuRollupRecord.host, GpuRollupRecord.uuid, GpuRollupRecord.mig_instance, GpuRollupRecord.minute
            ).in_(chunk)))
        session.add_all(GpuRollupRecord(**{**dataclasses.asdict(r), "minute": _dt(r.minute)}) for r in latest.values())

    def _rollup_row(self, rollup: Rollup) -> InstanceRollup:
        stats = rollup.stats
        figures = instance_figures(stats)
        return InstanceRollup(
            instance_id=self._instance_ids[rollup.instance],
            model_name=rollup.model_name,
            minute=_dt(rollup.minute),
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
            histograms=_histogram_json(stats),
        )

    def _outcome_row(self, pending: PendingOutcome) -> ScrapeOutcome:
        t = pending.tally
        return ScrapeOutcome(
            instance_id=self._instance_ids[pending.instance],
            minute=_dt(pending.minute),
            scrapes=t.scrapes,
            failures=t.failures,
            health_failures=t.health_failures,
            mean_duration_s=t.total_duration_s / t.scrapes if t.scrapes else 0.0,
            max_duration_s=t.max_duration_s,
            last_error_kind=t.last_error_kind,
            last_error=t.last_error,
        )

    # -- reads and retention ------------------------------------------------------------------------

    def rollups(self, instance: str | None = None, since: float | None = None) -> list[InstanceRollup]:
        with Session(self.engine) as session:
            query = select(InstanceRollup).order_by(InstanceRollup.minute)
            if instance is not None:
                query = query.join(Instance).where(Instance.address == instance)
            if since is not None:
                query = query.where(InstanceRollup.minute >= _dt(since))
            return list(session.scalars(query))

    def outcomes(self, instance: str | None = None) -> list[ScrapeOutcome]:
        with Session(self.engine) as session:
            query = select(ScrapeOutcome).order_by(ScrapeOutcome.minute)
            if instance is not None:
                query = query.join(Instance).where(Instance.address == instance)
            return list(session.scalars(query))

    def gpu_rollups(self, *, since: float | None = None, host: str | None = None,
                    pool: str | None = None) -> list[GpuRollupRecord]:
        """Stored GPU minutes, oldest first (then by node and GPU)."""
        with Session(self.engine) as session:
            query = select(GpuRollupRecord).order_by(GpuRollupRecord.minute, GpuRollupRecord.host,
                                                     GpuRollupRecord.gpu_index, GpuRollupRecord.uuid)
            if since is not None:
                query = query.where(GpuRollupRecord.minute >= _dt(since))
            if host is not None:
                query = query.where(GpuRollupRecord.host == host)
            if pool is not None:
                query = query.where(GpuRollupRecord.pool == pool)
            return list(session.scalars(query))

    def slo_events(self, since: float | None = None) -> list[SloEventRow]:
        """Stored SLO minutes (all SLOs, pools and models), for the engine to rebuild its series."""
        with Session(self.engine) as session:
            query = select(SloEvent.slo, SloEvent.pool, SloEvent.model_name, SloEvent.minute, SloEvent.good,
                           SloEvent.total)
            if since is not None:
                query = query.where(SloEvent.minute >= _dt(since))
            return [SloEventRow(slo, pool, model, _aware(minute).timestamp(), good, total)
                    for slo, pool, model, minute, good, total in session.execute(query)]

    def cleanup_slo_events(self, older_than: float) -> int:
        """Delete SLO minutes older than the longest SLO window needs (kept apart from `cleanup`:
        a 90d SLO must keep its events past a 30d `storage.retention`)."""
        with Session(self.engine) as session, session.begin():
            return session.execute(delete(SloEvent).where(SloEvent.minute < _dt(older_than))).rowcount

    def cleanup(self, older_than: float) -> int:
        """Delete history older than the retention horizon; returns rows deleted."""
        cutoff = _dt(older_than)
        with Session(self.engine) as session, session.begin():
            deleted = session.execute(delete(InstanceRollup).where(InstanceRollup.minute < cutoff)).rowcount
            deleted += session.execute(delete(ScrapeOutcome).where(ScrapeOutcome.minute < cutoff)).rowcount
            deleted += session.execute(delete(DecisionRecord).where(DecisionRecord.at < cutoff)).rowcount
            deleted += session.execute(delete(GpuRollupRecord).where(GpuRollupRecord.minute < cutoff)).rowcount
        return deleted

    def decisions(self, *, pool: str | None = None, instance: str | None = None, kind: str | None = None,
                  since: float | None = None, limit: int = 100) -> list[Decision]:
        """Newest first."""
        with Session(self.engine) as session:
            query = select(DecisionRecord).order_by(DecisionRecord.at.desc(), DecisionRecord.id.desc()).limit(limit)
            if pool is not None:
                query = query.where(DecisionRecord.pool == pool)
            if instance is not None:
                query = query.where(DecisionRecord.instance == instance)
            if kind is not None:
                query = query.where(DecisionRecord.kind == kind)
            if since is not None:
                query = query.where(DecisionRecord.at >= _dt(since))
            return [Decision(_aware(r.at).timestamp(), r.kind, r.pool, r.instance, r.from_state, r.to_state,
                             tuple(r.reasons), r.signals) for r in session.scalars(query)]

    def load_state(self, key: str) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            row = session.get(ServiceState, key)
            return dict(row.value) if row is not None else None


def _jsonable(value: Any) -> Any:
    """Signals hold floats that may be inf/nan, which JSON columns refuse: store those as strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _aware(dt: datetime) -> datetime:
    """SQLite returns naive datetimes; they were stored as UTC."""
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]
