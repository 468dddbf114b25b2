"""Database work apart: database calls run on the store's own bounded threads with a statement
timeout (PostgreSQL `statement_timeout`, SQLite busy timeout), so a database that hangs — a lock held
by another connection — stalls database work only: /metrics and the check URL answer meanwhile. A
POST /api/v1/exclusions that timed out (503) may still commit, so a retry (same client `id`, or the
same window) never stores a second row. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError

import monitor.publish.exclusions as exclusions_api
from monitor.config import validate
from monitor.evaluate.slo import Exclusion
from monitor.service.app import create_app
from monitor.store import Store, StoreBusy, upgrade
from monitor.store.db import DB_BACKLOG
from monitor.store.models import ExclusionRecord

TOKEN = "s3cret-db"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TARGET = "127.0.0.1:9"


def make_config():
    return validate({
        "pools": [{"name": "chat", "targets": [f"http://{TARGET}"]}],
        "slos": [{"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99%"}],
        "api": {"token": TOKEN},
    }).config


@contextmanager
def held_lock(url: str):
    """Another connection holding the exclusions table (PostgreSQL: ACCESS EXCLUSIVE) or the whole
    file (SQLite: an exclusive transaction) until the block ends."""
    engine = create_engine(url)
    conn = engine.connect()
    trans = conn.begin()
    if conn.dialect.name == "postgresql":
        conn.execute(text("LOCK TABLE exclusions IN ACCESS EXCLUSIVE MODE"))
    else:
        conn.exec_driver_sql("INSERT INTO exclusions (starts_at, ends_at, reason, created_at, created_by) "
                             "VALUES ('2000-01-01', '2000-01-02', 'lock holder', '2000-01-01', 'test')")
    try:
        yield
    finally:
        trans.rollback()
        conn.close()
        engine.dispose()


def rows(store: Store, **where) -> int:
    with store.engine.connect() as conn:
        query = select(func.count()).select_from(ExclusionRecord)
        for key, value in where.items():
            query = query.where(getattr(ExclusionRecord, key) == value)
        return conn.execute(query).scalar_one()


def window(hours: float = 2.0) -> dict:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    return {"slo": "errors", "start": start.isoformat(), "end": (start + timedelta(hours=hours)).isoformat(),
            "reason": "kernel upgrade"}


@pytest.fixture
def stored(db_url):
    upgrade(db_url)
    store = Store.open(db_url, statement_timeout=60.0)  # a stalled call stays stalled while we look
    app = create_app(make_config(), store=store)
    yield app, store, db_url
    store.close()


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def until(condition, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def test_metrics_and_the_check_url_answer_while_database_writes_hang(stored, monkeypatch):
    app, store, url = stored
    monkeypatch.setattr(exclusions_api, "DB_TIMEOUT_S", 120.0)  # the POSTs wait for as long as the lock lasts
    service = app.state.service
    async with client(app) as api:
        with held_lock(url):
            posts = [asyncio.create_task(api.post("/api/v1/exclusions", headers=AUTH,
                                                  json={**window(1 + i), "id": f"maintenance-{i}"}))
                     for i in range(3)]
            service.history.store.queue_state("health", {"x": 1}, time.time())
            persist = asyncio.create_task(service.persist())
            # stalled: the POST's call, and the persist's (SQLite: its flush, the whole file being locked;
            # PostgreSQL: the flush does not touch the locked table and ends, then the exclusions' refresh
            # stalls; counting the flush there raced its end, which under load came before the assert)
            await until(lambda: store.backlog >= 2 and (url.startswith("sqlite") or store.pending == 0),
                        "database calls stalled on the lock")
            metrics = await api.get("/metrics")
            check = await api.get(f"/upstreams/chat/{TARGET}")
            health = await api.get("/healthz")
            # answered while every database call is still waiting on the lock
            assert not any(p.done() for p in posts) and not persist.done() and store.backlog >= 2
            assert metrics.status_code == 200 and "slo_monitor_storage_up" in metrics.text
            assert check.status_code == 200 and health.status_code == 200
        answers = await asyncio.gather(*posts)
        await persist
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert rows(store) == 3


async def test_a_post_that_timed_out_and_is_retried_is_one_window(stored, monkeypatch):
    app, store, url = stored
    monkeypatch.setattr(exclusions_api, "DB_TIMEOUT_S", 0.3)
    body = {**window(), "id": "change-4711"}
    async with client(app) as api:
        with held_lock(url):
            first = await api.post("/api/v1/exclusions", headers=AUTH, json=body)
            assert first.status_code == 503 and "retry" in first.json()["detail"]
        await until(lambda: store.backlog == 0, "the timed-out insert finished in its thread")
        assert rows(store, request_id="change-4711") == 1  # the first try committed after all
        retry = await api.post("/api/v1/exclusions", headers=AUTH, json=body)
        again = await api.post("/api/v1/exclusions", headers=AUTH, json=body)
    assert retry.status_code in (200, 201) and again.status_code == 200
    assert retry.json()["id"] == again.json()["id"] and again.json()["request_id"] == "change-4711"
    assert rows(store) == 1
    assert len(app.state.service.slo.adhoc_exclusions) == 1


async def test_the_same_window_posted_twice_without_an_id_is_one_window(stored):
    app, store, _ = stored
    body = window()
    async with client(app) as api:
        first = await api.post("/api/v1/exclusions", headers=AUTH, json=body)
        second = await api.post("/api/v1/exclusions", headers=AUTH, json=body)
        other = await api.post("/api/v1/exclusions", headers=AUTH, json={**body, "reason": "another change"})
        bad = await api.post("/api/v1/exclusions", headers=AUTH, json={**body, "id": ["not", "a", "string"]})
    assert (first.status_code, second.status_code, other.status_code) == (201, 200, 201)
    assert first.json()["id"] == second.json()["id"] != other.json()["id"]
    assert bad.status_code == 400 and bad.json()["detail"].startswith("id:")
    assert rows(store) == 2


def test_a_statement_waiting_on_a_lock_ends_at_the_statement_timeout(db_url):
    upgrade(db_url)
    store = Store.open(db_url, statement_timeout=0.5)
    now = time.time() + 600
    try:
        with held_lock(db_url), pytest.raises(OperationalError) as failed:
            store.add_exclusion(Exclusion(id=0, start=now, end=now + 60, reason="r", created_at=now, created_by="t"))
        message = str(failed.value)
        assert "statement timeout" in message or "database is locked" in message
        store.add_exclusion(Exclusion(id=0, start=now, end=now + 60, reason="r", created_at=now, created_by="t"))
        assert rows(store) == 1
    finally:
        store.close()


async def test_database_calls_past_the_backlog_are_refused_at_once_not_queued(db_url):
    upgrade(db_url)
    store = Store.open(db_url, statement_timeout=60.0)
    now = time.time() + 600

    def add(i: int) -> Exclusion:
        return store.add_exclusion(Exclusion(id=0, start=now, end=now + 60, reason=f"r{i}", created_at=now,
                                             created_by="t"))

    try:
        with held_lock(db_url):
            calls = [asyncio.ensure_future(store.run(add, i)) for i in range(DB_BACKLOG)]
            await asyncio.sleep(0)
            assert store.backlog == DB_BACKLOG
            with pytest.raises(StoreBusy):
                await store.run(add, DB_BACKLOG)
        await asyncio.gather(*calls)
        assert rows(store) == DB_BACKLOG and store.backlog == 0
    finally:
        store.close()
