"""Remember: SQL through SQLAlchemy, migrated by Alembic (SQLite embedded, PostgreSQL in production)."""

from monitor.store.audit import AuditEntry  # noqa: F401
from monitor.store.db import Store, StoreBusy  # noqa: F401
from monitor.store.engine import PG_CONNECT_TIMEOUT_S, make_engine, migrations_dir, upgrade  # noqa: F401

__all__ = ["AuditEntry", "Store", "StoreBusy", "PG_CONNECT_TIMEOUT_S", "make_engine", "migrations_dir", "upgrade"]
