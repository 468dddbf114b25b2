"""Reads and retention: the stored history as the API, `slo-monitor` commands and a restarting
engine ask for it, and the deletes that keep it within `storage.retention`.

A mixin of `monitor.store.db.Store` (which holds `engine` and the write queue): reads and deletes
go straight to the database, never through the queue, so they live apart from it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from monitor.evaluate.slo.engine import SloEventRow
from monitor.store.audit import AuditEntry
from monitor.store.models import (
    DecisionRecord,
    GpuRollupRecord,
    Instance,
    InstanceRollup,
    ScrapeOutcome,
    ServiceState,
    SloEvent,
)
from monitor.store.rows import aware, rowcount, utc


class StoreReads:
    """What `Store` reads and deletes."""

    engine: Engine

    def rollups(self, instance: str | None = None, since: float | None = None) -> list[InstanceRollup]:
        with Session(self.engine) as session:
            query = select(InstanceRollup).order_by(InstanceRollup.minute)
            if instance is not None:
                query = query.join(Instance).where(Instance.address == instance)
            if since is not None:
                query = query.where(InstanceRollup.minute >= utc(since))
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
                query = query.where(GpuRollupRecord.minute >= utc(since))
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
                query = query.where(SloEvent.minute >= utc(since))
            return [SloEventRow(slo, pool, model, aware(minute).timestamp(), good, total)
                    for slo, pool, model, minute, good, total in session.execute(query)]

    def cleanup_slo_events(self, older_than: float) -> int:
        """Delete SLO minutes older than the longest SLO window needs (kept apart from `cleanup`:
        a 90d SLO must keep its events past a 30d `storage.retention`)."""
        with Session(self.engine) as session, session.begin():
            return rowcount(session.execute(delete(SloEvent).where(SloEvent.minute < utc(older_than))))

    def cleanup(self, older_than: float) -> int:
        """Delete history older than the retention horizon; returns rows deleted."""
        cutoff = utc(older_than)
        with Session(self.engine) as session, session.begin():
            deleted = rowcount(session.execute(delete(InstanceRollup).where(InstanceRollup.minute < cutoff)))
            deleted += rowcount(session.execute(delete(ScrapeOutcome).where(ScrapeOutcome.minute < cutoff)))
            deleted += rowcount(session.execute(delete(DecisionRecord).where(DecisionRecord.at < cutoff)))
            deleted += rowcount(session.execute(delete(GpuRollupRecord).where(GpuRollupRecord.minute < cutoff)))
        return deleted

    def decisions(self, *, pool: str | None = None, instance: str | None = None, kind: str | None = None,
                  since: float | None = None, limit: int = 100) -> list[AuditEntry]:
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
                query = query.where(DecisionRecord.at >= utc(since))
            return [AuditEntry(aware(r.at).timestamp(), r.kind, r.pool, r.instance, r.from_state, r.to_state,
                             tuple(r.reasons), r.signals) for r in session.scalars(query)]

    def load_state(self, key: str) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            row = session.get(ServiceState, key)
            return dict(row.value) if row is not None else None

