"""Remember: SQL through SQLAlchemy, migrated by Alembic (SQLite embedded, PostgreSQL in production)."""

from monitor.store.audit import AuditEntry
from monitor.store.db import Store, StoreBusy
from monitor.store.engine import PG_CONNECT_TIMEOUT_S, make_engine, migrations_dir, upgrade

__all__ = ["AuditEntry", "Store", "StoreBusy", "PG_CONNECT_TIMEOUT_S", "make_engine", "migrations_dir", "upgrade"]
