"""Answers that do not pretend (issue 13 item 6): what the API says when it has nothing to say, or
when it is asked for something that does not exist. In-process, nothing scraped: the state a new
user meets in the first minute."""

from __future__ import annotations

from monitor.config import validate
from monitor.service import create_app

from tests.helpers.asgi_client import AUTH, Client

CONFIG = validate({
    "pools": [{"name": "chat", "targets": ["http://10.0.0.1:8000"]}],
    "slos": [{"name": "ttft", "indicator": {"type": "latency", "metric": "ttft", "threshold": "500ms"},
              "objective": "99%"}],
    "api": {"token": "s3cret"},
}).config


def client() -> Client:
    return Client(create_app(CONFIG, store=None))  # no lifespan: no span, no scrape


def test_goodput_with_no_span_received_says_it_covers_nothing_and_is_not_exact():
    body = client().get("/api/v1/pools/chat/goodput", headers=AUTH).json()
    assert body["requests"] == 0 and body["good_requests"] == 0
    assert body["covered_seconds"] == 0 and body["goodput_rps"] == 0
    assert body["exact"] is False and body["source"] == "none"
    assert body["window"] == "5m"  # the window asked about is still named
    assert [s["name"] for s in body["slos"]] == ["ttft"] and body["models"] == []


def test_decisions_of_an_unknown_kind_are_a_400_naming_the_allowed_kinds():
    answer = client().get("/api/v1/decisions?kind=bogus", headers=AUTH)
    assert answer.status_code == 400
    detail = answer.json()["detail"]
    assert "'bogus'" in detail and "health" in detail and "scaling" in detail
    assert client().get("/api/v1/decisions?kind=health", headers=AUTH).status_code == 200


def test_an_upstream_check_for_an_unknown_pool_is_a_404_saying_the_pool_is_unknown():
    answer = client().get("/upstreams/nope/x")
    assert answer.status_code == 404
    assert answer.text == "unknown pool 'nope' (pools: chat)\n"
    unknown_instance = client().get("/upstreams/chat/10.9.9.9:1")
    assert unknown_instance.status_code == 404 and "unknown instance 10.9.9.9:1 in pool chat" in unknown_instance.text
