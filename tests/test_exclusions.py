"""Maintenance windows over the API: POST, GET and DELETE /api/v1/exclusions under the token, kept
in the `exclusions` table (migration 0006) on SQLite and PostgreSQL, handed to the SLO engine, and
refused with a reason naming the key when the request is wrong or too large."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest
from starlette.testclient import TestClient

from monitor.config import validate
from monitor.publish.exclusions import MAX_BODY, refresh_exclusions
from monitor.service.app import create_app
from monitor.service.core import Service
from monitor.store import Store, upgrade

TOKEN = "s3cret-exclusions"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_config(**extra):
    return validate({
        "pools": [{"name": "chat", "targets": ["http://127.0.0.1:9"]},
                  {"name": "batch", "targets": ["http://127.0.0.1:10"]}],
        "slos": [{"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99%",
                  "exclusions": [{"weekly": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                             "start": "00:00", "duration": "1m"}, "reason": "nightly restart",
                                  "pools": ["batch"]}]},
                 {"name": "ttft", "indicator": {"type": "latency", "metric": "ttft", "threshold": "500ms"},
                  "objective": "99%", "pools": ["chat"]}],
        "api": {"token": TOKEN},
        **extra,
    }).config


def at(seconds_from_now: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now)).isoformat()


@pytest.fixture
def app_with_store(db_url):
    upgrade(db_url)
    store = Store.open(db_url)
    app = create_app(make_config(), store=store)
    yield app, store
    store.close()


def test_a_posted_window_is_stored_listed_applied_and_ended_early(app_with_store):
    app, store = app_with_store
    client = TestClient(app)
    body = {"slo": "errors", "pool": "chat", "duration": "2h", "reason": "kernel upgrade"}
    assert client.post("/api/v1/exclusions", json=body).status_code == 401  # token-protected
    created = client.post("/api/v1/exclusions", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    window = created.json()
    assert window["state"] == "active" and window["source"] == "api" and window["reason"] == "kernel upgrade"
    assert window["created_by"] == "testclient"
    # in the database, with who and why (the audit record)
    [stored] = store.exclusions()
    assert (stored.id, stored.slo, stored.pool, stored.reason) == (window["id"], "errors", "chat", "kernel upgrade")
    assert stored.end - stored.start == pytest.approx(7200.0)
    # applied at the next evaluation: only errors/chat is excused
    service: Service = app.state.service
    service.slo.evaluate(time.time())
    excused = {(s.key.slo, s.key.pool) for s in service.slo.statuses if s.excluded}
    assert ("errors", "chat") in excused and ("ttft", "chat") not in excused
    listed = client.get("/api/v1/exclusions", headers=AUTH).json()
    assert [w["id"] for w in listed if w["source"] == "api"] == [window["id"]]
    # the configured weekly window of errors/batch is listed for the week ahead
    configured = [w for w in listed if w["source"] == "config"]
    assert configured and all((w["slo"], w["pool"], w["reason"]) == ("errors", "batch", "nightly restart")
                              for w in configured)
    # DELETE of a running window ends it now; it stays on record and cannot be deleted again
    ended = client.delete(f"/api/v1/exclusions/{window['id']}", headers=AUTH)
    assert ended.status_code == 200 and ended.json()["state"] == "ended"
    assert store.exclusions()[0].ended_at is not None
    assert client.delete(f"/api/v1/exclusions/{window['id']}", headers=AUTH).status_code == 409
    assert [w for w in client.get("/api/v1/exclusions", headers=AUTH).json() if w["source"] == "api"] == []
    assert [w["state"] for w in client.get("/api/v1/exclusions?all=true", headers=AUTH).json()
            if w["source"] == "api"] == ["ended"]
    assert client.delete("/api/v1/exclusions/999", headers=AUTH).status_code == 404


def test_a_scheduled_window_is_removed_and_a_restart_reads_the_stored_ones(app_with_store):
    app, store = app_with_store
    client = TestClient(app)
    later = client.post("/api/v1/exclusions", json={"start": at(3600), "end": at(7200), "reason": "planned"},
                        headers=AUTH)
    assert later.status_code == 201 and later.json()["state"] == "scheduled"
    assert later.json()["slo"] is None and later.json()["pool"] is None  # every SLO and pool
    kept = client.post("/api/v1/exclusions", json={"pool": "batch", "duration": "30m", "reason": "rack move"},
                       headers=AUTH).json()
    removed = client.delete(f"/api/v1/exclusions/{later.json()['id']}", headers=AUTH).json()
    assert removed["state"] == "removed"
    # another service on the same database (a restart, or another replica) picks them up
    other = Service(make_config(), store)
    asyncio.run(refresh_exclusions(other))
    assert sorted((e.id, e.removed_at is not None) for e in other.slo.adhoc_exclusions) == \
        [(later.json()["id"], True), (kept["id"], False)]
    other.slo.evaluate(time.time())
    assert {(s.key.slo, s.key.pool) for s in other.slo.statuses if s.excluded} == {("errors", "batch")}


@pytest.mark.parametrize(("body", "message"), [
    ({"slo": "nope", "duration": "1h", "reason": "x"}, "slo: no SLO named 'nope'"),
    ({"pool": "nope", "duration": "1h", "reason": "x"}, "pool: no pool named 'nope'"),
    ({"slo": "ttft", "pool": "batch", "duration": "1h", "reason": "x"}, "does not cover pool 'batch'"),
    ({"duration": "1h"}, "reason: required"),
    ({"duration": "1h", "reason": "x", "end": at(60)}, "give `end` (RFC 3339) or `duration`"),
    ({"start": at(-3600), "duration": "1h", "reason": "x"}, "start: in the past"),
    ({"end": "tomorrow", "reason": "x"}, "end: not an RFC 3339 time"),
    ({"end": "2030-01-01T00:00:00", "reason": "x"}, "no time zone"),
    ({"duration": "40d", "reason": "x"}, "at most 31d"),
    ({"duration": "1h", "reason": "x", "url": "http://x"}, "unknown key(s) url"),
    (["not", "an", "object"], "expected a JSON object"),
])
def test_a_wrong_request_is_refused_naming_the_key(body, message):
    client = TestClient(create_app(make_config()))
    answer = client.post("/api/v1/exclusions", json=body, headers=AUTH)
    assert answer.status_code == 400 and message in answer.json()["detail"], answer.text
    assert client.app.state.service.slo.adhoc_exclusions == ()


def test_a_body_over_the_cap_is_refused_before_it_is_read_whole():
    client = TestClient(create_app(make_config()))
    big = b'{"reason": "' + b"x" * MAX_BODY + b'", "duration": "1h"}'
    assert client.post("/api/v1/exclusions", content=big, headers=AUTH).status_code == 413

    def chunks():  # no Content-Length: cut while streaming
        yield b'{"reason": "'
        for _ in range(100):
            yield b"x" * 1024

    answer = client.post("/api/v1/exclusions", content=chunks(), headers=AUTH)
    assert answer.status_code == 413
    assert client.post("/api/v1/exclusions", content=b"{not json", headers=AUTH).status_code == 400


def test_without_a_database_windows_live_in_memory_and_slos_show_budget_with_and_without_them():
    app = create_app(make_config())
    client = TestClient(app)
    first = client.post("/api/v1/exclusions", json={"slo": "ttft", "duration": "10m", "reason": "a"}, headers=AUTH)
    second = client.post("/api/v1/exclusions", json={"slo": "ttft", "duration": "10m", "reason": "b"}, headers=AUTH)
    assert (first.json()["id"], second.json()["id"]) == (1, 2)
    app.state.service.slo.evaluate(time.time())
    [ttft] = [s for s in client.get("/api/v1/slos", headers=AUTH).json() if s["name"] == "ttft"]
    assert ttft["excluded"] is True and [w["reason"] for w in ttft["exclusions"]] == ["a", "b"]
    assert ttft["error_budget_remaining"] == ttft["error_budget_remaining_without_exclusions"] == 1.0
    assert ttft["window_set"] == "google-30d" and ttft["metric_absent"] is False
    assert ttft["error_budget_exhausted"] is False and ttft["absent_for_seconds"] == 600.0
    metrics = client.get("/metrics").text
    assert 'slo_monitor_exclusion_active{pool="chat",slo="ttft"} 1.0' in metrics
    assert 'slo_monitor_exclusion_active{pool="chat",slo="errors"} 0.0' in metrics
    assert 'slo_monitor_slo_metric_absent{pool="chat",slo="ttft"} 0.0' in metrics
