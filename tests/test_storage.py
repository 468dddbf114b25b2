"""Storage on SQLite and PostgreSQL: migrations from empty, rollups, outcomes, retention."""

from __future__ import annotations

import math

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from monitor.config import validate
from monitor.evaluate.fleet import FleetView, OutcomeTally, Rollup, take_outcomes
from monitor.evaluate.windows import window_stats
from monitor.samples import Histogram, ModelSample, ScrapeResult
from monitor.store import Store, make_engine, upgrade
from monitor.store.models import Base

CONFIG = validate({"pools": [{"name": "llama", "targets": ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]}]}).config


def members(config) -> dict[str, dict[str, str]]:
    """pool -> {host:port: url}: the fleet as `Store.sync_fleet` and `FleetView` take it."""
    return {p.name: {u.split("://", 1)[1]: u for u in p.targets} for p in config.pools}
T0 = 1_790_000_040.0  # a minute boundary


def sample(tokens: float, stop: float, ttft_counts: tuple[float, ...]) -> ModelSample:
    return ModelSample(
        "llama-70b",
        histograms={"ttft": Histogram((0.25, 0.5, math.inf), ttft_counts, 0.2 * ttft_counts[-1], ttft_counts[-1])},
        counters={"generation_tokens": tokens},
        gauges={"running": 2.0, "waiting": 1.0, "kv_cache_usage": 0.5},
        finished={"stop": stop, "error": 0.0},
    )


def rollup(instance: str, minute: float, stop_delta: float) -> Rollup:
    points = [(minute, sample(0, 0, (0, 0, 0))), (minute + 30, sample(600, stop_delta, (stop_delta, stop_delta, stop_delta)))]
    return Rollup("llama", instance, "llama-70b", minute, window_stats(points, minute + 30, 60))


def test_migrations_from_empty_match_the_models(db_url):
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"pools", "instances", "scrape_outcomes", "instance_rollups", "alembic_version"} <= tables
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        upgrade(db_url)  # idempotent: a second upgrade on the latest schema does nothing
    finally:
        engine.dispose()


def test_rollups_and_outcomes_round_trip(db_url):
    upgrade(db_url)
    store = Store.open(db_url)
    try:
        store.sync_fleet(members(CONFIG), T0)
        tally = OutcomeTally()
        tally.add(ScrapeResult("llama", "10.0.0.1:8000", "http://10.0.0.1:8000", T0, 0.05))
        tally.add(ScrapeResult("llama", "10.0.0.1:8000", "http://10.0.0.1:8000", T0 + 5, 2.0,
                               error="timed out after 2s", error_kind="timeout"))
        store.queue([rollup("10.0.0.1:8000", T0, 12), rollup("10.0.0.2:8000", T0, 3)],
                    [("10.0.0.1:8000", T0, tally)])
        assert store.flush() == 3
        assert store.pending == 0

        rows = store.rollups(instance="10.0.0.1:8000")
        assert len(rows) == 1
        row = rows[0]
        assert row.requests == 12 and row.errors == 0 and row.generation_tokens == 600
        assert row.model_name == "llama-70b" and row.finished == {"stop": 12, "error": 0}
        assert row.histograms["ttft"]["bounds"] == [0.25, 0.5]
        assert row.histograms["ttft"]["counts"] == [12, 12, 12]
        assert row.kv_cache_usage == 0.5 and row.requests_waiting == 1
        [outcome] = store.outcomes("10.0.0.1:8000")
        assert (outcome.scrapes, outcome.failures) == (2, 1)
        assert outcome.last_error_kind == "timeout" and outcome.max_duration_s == 2.0

        # the same minute written again (a restart inside it) replaces the row
        store.queue([rollup("10.0.0.1:8000", T0, 20)], [])
        store.flush()
        assert [r.requests for r in store.rollups(instance="10.0.0.1:8000")] == [20]
    finally:
        store.close()


def test_retention_deletes_only_old_rows(db_url):
    upgrade(db_url)
    store = Store.open(db_url)
    try:
        store.sync_fleet(members(CONFIG), T0)
        store.queue([rollup("10.0.0.1:8000", T0 - 86400 * 40, 1), rollup("10.0.0.1:8000", T0, 2)], [])
        store.flush()
        assert store.cleanup(older_than=T0 - 86400 * 30) == 1
        assert [r.requests for r in store.rollups()] == [2]
    finally:
        store.close()


def test_instances_removed_from_config_keep_history_but_go_inactive(db_url):
    upgrade(db_url)
    store = Store.open(db_url)
    try:
        store.sync_fleet(members(CONFIG), T0)
        store.queue([rollup("10.0.0.2:8000", T0, 5)], [])
        store.flush()
        smaller = validate({"pools": [{"name": "llama", "targets": ["http://10.0.0.1:8000"]}]}).config
        store.sync_fleet(members(smaller), T0 + 60)
        assert [r.requests for r in store.rollups(instance="10.0.0.2:8000")] == [5]
        # its last minutes, queued after it left (it drains, then is dropped), are still its history
        store.queue([rollup("10.0.0.2:8000", T0 + 60, 7)], [])
        store.flush()
        assert [r.requests for r in store.rollups(instance="10.0.0.2:8000")] == [5, 7]
        store.queue([rollup("10.0.0.9:8000", T0 + 60, 1)], [])  # never a member: nothing to file it under
        store.flush()
        assert store.rollups(instance="10.0.0.9:8000") == []
    finally:
        store.close()


def test_writes_are_held_while_the_database_is_down_and_flushed_after(tmp_path):
    good_url = f"sqlite:///{tmp_path}/ok.db"
    upgrade(good_url)
    store = Store.open(good_url)
    store.sync_fleet(members(CONFIG), T0)
    good_engine = store.engine
    store.engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    store.queue([rollup("10.0.0.1:8000", T0, 4)], [])
    assert store.flush() == 0
    assert store.pending == 1 and store.last_error
    store.engine = good_engine
    assert store.flush() == 1
    assert store.last_error is None
    assert [r.requests for r in store.rollups()] == [4]
    store.close()


def test_fleet_rollups_partition_minutes_exactly():
    """Every request lands in exactly one minute's rollup, whichever scrape boundary it crossed."""
    fleet = FleetView(CONFIG.evaluation.window, CONFIG.scrape.interval, members(CONFIG))
    per_minute: dict[float, float] = {}
    next_minute = T0 - 60
    for i in range(30):  # scrapes 5 s apart from T0 - 10 to T0 + 135, 3 requests finished between each
        t = T0 - 10 + 5 * i
        fleet.ingest([ScrapeResult("llama", "10.0.0.1:8000", "http://10.0.0.1:8000", t, 0.01,
                                   models=(sample(10 * i, 3 * i, (3 * i,) * 3),))])
        while next_minute + 60 <= t:  # as the service does: roll a minute up once it is over
            per_minute[next_minute] = sum(r.stats.finished_total for r in fleet.rollups(next_minute))
            next_minute += 60
    # T0-10 -> T0-5; T0-5 -> T0+55 (12 intervals); T0+55 -> T0+115 (12 intervals)
    assert per_minute == {T0 - 60: 3, T0: 36, T0 + 60: 36}
    outcomes = take_outcomes(fleet.tracks.values(), before=T0 + 60)
    assert sorted((m, t.scrapes) for _, m, t in outcomes) == [(T0 - 60, 2), (T0, 12)]


def test_last_seen_is_the_last_minute_with_a_successful_scrape_and_never_goes_back(db_url):
    from datetime import datetime, timezone

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from monitor.store.models import Instance

    def tally(ok: bool) -> OutcomeTally:
        t = OutcomeTally()
        t.add(ScrapeResult("llama", "x", "http://x", T0, 0.1, error=None if ok else "down", error_kind=None if ok else "down"))
        return t

    def seen() -> dict[str, datetime | None]:
        with Session(store.engine) as session:
            return {i.address: i.last_seen for i in session.scalars(select(Instance))}

    upgrade(db_url)
    store = Store.open(db_url)
    try:
        store.sync_fleet(members(CONFIG), T0)
        store.queue([], [("10.0.0.1:8000", T0 + 60, tally(True)), ("10.0.0.2:8000", T0 + 60, tally(False))])
        store.flush()
        store.queue([], [("10.0.0.1:8000", T0, tally(True))])  # an older minute written late
        store.flush()
        got = {k: v and v.replace(tzinfo=v.tzinfo or timezone.utc).timestamp() for k, v in seen().items()}
        assert got == {"10.0.0.1:8000": T0 + 60, "10.0.0.2:8000": None}
    finally:
        store.close()
