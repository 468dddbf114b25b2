"""Cost per million generated tokens and per request from `pools[].cost`, in the API and on /metrics,
worked out by hand from scrapes and spans fed to the service (nothing scrapes: no lifespan)."""

from __future__ import annotations

import time

import pytest

from monitor.config import ConfigError, validate
from monitor.otlp.records import RequestRecord
from monitor.service import create_app

from tests.helpers.asgi_client import AUTH, Client
from tests.helpers.slo_scrapes import Server, result

CONFIG = {
    "pools": [{"name": "llama", "targets": ["http://10.0.0.1:8000", "http://10.0.0.2:8000"],
               "cost": {"gpu_hour": 2.5, "gpus_per_instance": 2, "currency": "EUR"}},
              {"name": "free", "targets": ["http://10.0.0.3:8000"]}],
    "slos": [{"name": "ttft", "indicator": {"type": "latency", "metric": "ttft", "threshold": "500ms"},
              "objective": "99%"}],
    "api": {"token": "s3cret"},
}
PER_HOUR = 2 * 2 * 2.5  # two targets of two GPUs at 2.50 an hour


def traffic_app(now: float) -> Client:
    app = create_app(validate(CONFIG).config, store=None)
    service = app.state.service
    for instance in ("10.0.0.1:8000", "10.0.0.2:8000"):
        server = Server(model="m")
        service.fleet.ingest([result("llama", instance, now - 50, server)])
        server.requests(100)  # 100 requests, 1,000 generated tokens (Server counts 10 per request) in 40 s
        service.fleet.ingest([result("llama", instance, now - 10, server)])
    # spans: 30 requests over the last 60 s, 20 of them within the 500 ms TTFT objective
    service.traces.add([RequestRecord(pool="llama", instance="10.0.0.1:8000", model="m", at=now - 60 + 2 * i,
                                      e2e_s=1.0, ttft_s=0.2 if i % 3 else 0.9, trace_id=f"{i + 1:032x}",
                                      span_id=f"{i + 1:016x}") for i in range(30)])
    return Client(app)


def test_cost_per_token_request_and_good_request():
    now = time.time()
    client = traffic_app(now)
    assert client.get("/api/v1/pools/llama/cost").status_code == 401
    body = client.get("/api/v1/pools/llama/cost", headers=AUTH).json()
    assert (body["pool"], body["currency"], body["gpus"], body["cost_per_hour"]) == ("llama", "EUR", 4, PER_HOUR)
    assert body["requests_per_s"] == pytest.approx(2 * 100 / 40)
    assert body["generation_tokens_per_s"] == pytest.approx(2 * 1000 / 40)
    assert body["cost_per_million_tokens"] == pytest.approx(PER_HOUR / 3600 / 50 * 1e6)  # 55.56 per M tokens
    assert body["cost_per_request"] == pytest.approx(PER_HOUR / 3600 / 5)
    # goodput: 20 good requests over the ~60 s the spans cover
    assert body["goodput_rps"] == pytest.approx(20 / 60, rel=0.02)
    assert body["cost_per_good_request"] == pytest.approx(PER_HOUR / 3600 / body["goodput_rps"])
    assert body["window"] == "1m"

    assert client.get("/api/v1/pools/free/cost", headers=AUTH).status_code == 404  # no `cost` configured
    assert client.get("/api/v1/pools/nope/cost", headers=AUTH).status_code == 404

    text = client.get("/metrics").text
    line = next(x for x in text.splitlines()
                if x.startswith('slo_monitor_pool_cost_per_million_generated_tokens{currency="EUR",pool="llama"}'))
    assert float(line.split()[-1]) == pytest.approx(PER_HOUR / 3600 / 50 * 1e6, rel=0.05)
    assert f'slo_monitor_pool_cost_per_hour{{currency="EUR",pool="llama"}} {PER_HOUR}' in text
    assert 'slo_monitor_pool_cost_per_request{currency="EUR",pool="llama"}' in text
    assert 'pool="free"' not in "\n".join(x for x in text.splitlines() if x.startswith("slo_monitor_pool_cost"))


def test_idle_pool_costs_per_hour_only():
    app = create_app(validate(CONFIG).config, store=None)
    body = Client(app).get("/api/v1/pools/llama/cost", headers=AUTH).json()
    assert body["cost_per_hour"] == PER_HOUR
    assert body["cost_per_million_tokens"] is None and body["cost_per_request"] is None  # not infinite
    assert body["cost_per_good_request"] is None


def test_cost_config_is_checked():
    bad = {**CONFIG, "pools": [{"name": "x", "targets": ["http://h:1"], "cost": {"gpu_hour": 0, "gpus": 8}}]}
    with pytest.raises(ConfigError) as exc:
        validate(bad)
    problems = "\n".join(exc.value.problems)
    assert "pools[0].cost.gpu_hour" in problems and "pools[0].cost.gpus: unknown key" in problems
