"""Shared fixtures. Real parts only: SQLite files and the PostgreSQL server at 127.0.0.1:5432.

Outside CI a missing PostgreSQL skips its tests with the reason; with CI=true it fails them, so a
broken CI machine can never pass quietly.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

PG_URL = os.environ.get("SLO_MONITOR_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI, when a real dependency of the test is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a required part is missing: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
