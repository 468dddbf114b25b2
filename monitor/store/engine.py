"""The database engine: connecting (bounded in time), migrating, and the lock replicas share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from monitor.store.rows import json_text


def migrations_dir() -> Path:
    """migrations/ of a source checkout, else the copy shipped inside the package."""
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").exists():
        return checkout
    import monitor.migrations

    return Path(monitor.migrations.__file__).parent


PG_CONNECT_TIMEOUT_S = 5
DEFAULT_STATEMENT_TIMEOUT_S = 10.0  # storage.statement_timeout's default


def make_engine(url: str, *, statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_S) -> Engine:
    """`statement_timeout`: how long one statement may run (PostgreSQL's statement_timeout, lock
    waits included) or wait for a lock (SQLite's busy timeout) before it fails, so that no database
    call holds one of the database's threads for ever. 0 switches it off."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        busy_ms = int(statement_timeout * 1000)
        engine = create_engine(url, connect_args={"timeout": statement_timeout}, json_serializer=json_text)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        return engine
    # Without a connect timeout psycopg waits for ever on a server that accepts the connection and
    # never answers (a hung database, a proxy in front of a dead one): the flush would hang in its
    # worker thread, every later flush would be skipped behind it, /metrics would go on saying
    # storage_up 1, and the shutdown's final flush would never return. A URL may set its own.
    connect_args: dict[str, Any] = {} if "connect_timeout" in parsed.query else {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    options = parsed.query.get("options", "")
    options = options[-1] if isinstance(options, tuple) else options
    if statement_timeout > 0 and "statement_timeout" not in options:  # a URL's own statement_timeout wins
        connect_args["options"] = f"{options} -c statement_timeout={int(statement_timeout * 1000)}".strip()
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=connect_args,
                         json_serializer=json_text)


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
