"""Shared fixtures. Real parts only: SQLite files and the PostgreSQL server at 127.0.0.1:5432.

Outside CI a missing PostgreSQL skips its tests with the reason; with CI=true it fails them, so a
broken CI machine can never pass quietly (tests.helpers.ci.require). Helpers that are not fixtures
live in tests/helpers/ and are imported from there, never from here or from another test module.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests.helpers.ci import require

PG_URL = os.environ.get("SLO_MONITOR_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """No `-q` count drops the final summary line (`N passed, M skipped in T s`): pytest prints it down
    to -q, and -qq, easily reached when a wrapper adds its own -q, would leave a run that says nothing."""
    config.option.verbose = max(config.option.verbose, -1)


@pytest.fixture
def pg_url():
    """A fresh schema in the test database, dropped afterwards, so parallel runs never collide."""
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        require(False, f"PostgreSQL at {PG_URL} not reachable: {type(exc).__name__}: {exc}")
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/slo-monitor.db"
    else:
        yield request.getfixturevalue("pg_url")
