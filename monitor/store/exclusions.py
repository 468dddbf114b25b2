"""Maintenance windows (POST /api/v1/exclusions) in the database: written at once, not queued, so
the API can answer with the stored id or say the database refused.

A mixin of `monitor.store.db.Store`, apart from its write queue for that reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from monitor.evaluate.slo import Exclusion
from monitor.store.models import ExclusionRecord
from monitor.store.rows import aware, utc


class ExclusionStore:
    """The ad-hoc maintenance windows `Store` keeps."""

    engine: Engine

    def add_exclusion(self, exclusion: Exclusion, request_id: str | None = None) -> Exclusion:
        """Store a new ad-hoc maintenance window; returns it with its id. Idempotent: a window with
        the same `request_id`, or (without one) the same SLO, pool, start, end and reason not
        removed, is returned as stored instead of a second row (a retry after a timeout whose first
        try committed after all)."""
        try:
            return self._add_exclusion(exclusion, request_id)
        except IntegrityError:  # the same request_id committed by a concurrent try: that row it is
            return self._add_exclusion(exclusion, request_id)

    def _add_exclusion(self, exclusion: Exclusion, request_id: str | None) -> Exclusion:
        with Session(self.engine) as session, session.begin():
            if request_id is not None:
                same = select(ExclusionRecord).where(ExclusionRecord.request_id == request_id)
            else:
                same = select(ExclusionRecord).where(
                    _same(ExclusionRecord.slo, exclusion.slo), _same(ExclusionRecord.pool, exclusion.pool),
                    ExclusionRecord.starts_at == utc(exclusion.start), ExclusionRecord.ends_at == utc(exclusion.end),
                    ExclusionRecord.reason == exclusion.reason, ExclusionRecord.removed_at.is_(None))
            found = session.scalars(same.order_by(ExclusionRecord.id).limit(1)).first()
            if found is not None:
                return _exclusion(found)
            row = ExclusionRecord(slo=exclusion.slo, pool=exclusion.pool, starts_at=utc(exclusion.start),
                                  ends_at=utc(exclusion.end), reason=exclusion.reason,
                                  created_at=utc(exclusion.created_at), created_by=exclusion.created_by,
                                  request_id=request_id)
            session.add(row)
            session.flush()
            return _exclusion(row)

    def exclusions(self, *, since: float | None = None, include_removed: bool = True) -> list[Exclusion]:
        """Stored maintenance windows, oldest first: those ending after `since` (all when None)."""
        with Session(self.engine) as session:
            query = select(ExclusionRecord).order_by(ExclusionRecord.starts_at, ExclusionRecord.id)
            if since is not None:
                query = query.where(ExclusionRecord.ends_at >= utc(since))
            if not include_removed:
                query = query.where(ExclusionRecord.removed_at.is_(None))
            return [_exclusion(row) for row in session.scalars(query)]

    def close_exclusion(self, exclusion_id: int, *, ended_at: float | None = None,
                        removed_at: float | None = None) -> Exclusion | None:
        """End a running window early (`ended_at`) or remove one not started yet (`removed_at`)."""
        with Session(self.engine) as session, session.begin():
            row = session.get(ExclusionRecord, exclusion_id)
            if row is None:
                return None
            if ended_at is not None:
                row.ended_at = utc(ended_at)
            if removed_at is not None:
                row.removed_at = utc(removed_at)
            session.flush()
            return _exclusion(row)


def _same(column: Any, value: str | None) -> Any:
    return column.is_(None) if value is None else column == value


def _exclusion(row: ExclusionRecord) -> Exclusion:
    def ts(value: datetime | None) -> float | None:
        return None if value is None else aware(value).timestamp()

    return Exclusion(id=row.id, start=aware(row.starts_at).timestamp(), end=aware(row.ends_at).timestamp(),
                     reason=row.reason, slo=row.slo, pool=row.pool, created_at=aware(row.created_at).timestamp(),
                     created_by=row.created_by, ended_at=ts(row.ended_at), removed_at=ts(row.removed_at))
