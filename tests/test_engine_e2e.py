"""Every hang shape and a sleeping engine, end to end: `slo-monitor simulate` under `slo-monitor load`, watched
by `slo-monitor serve` (tests/helpers/engine_stack.py), as issue 15 asks.

- vllm#39863: the EngineCore is dead, the API server still answers /health 200 and /metrics with running 0
  and waiting climbing. Ejected, reason "hung: ...", while the simulator's /health says 200.
- A sleeping engine (vLLM's sleep mode, level 1): `sleeping`, drained (NGINX `down`, check URL 503), and a
  failure nowhere: no ejection, no availability bad event, no failing open.
- /health timing out while /metrics answers; a page frozen with requests in flight (and a dead engine).
- The healthy instances beside them keep 200 at their check URLs throughout.
"""

from __future__ import annotations

import re

import pytest

from tests.helpers.engine_stack import EngineStack

pytestmark = pytest.mark.e2e  # every test here starts processes on real ports

SERVICE = {
    "scrape": {"interval": "500ms", "timeout": "400ms"},
    "evaluation": {"window": "5s"},
    "slos": [{"name": "availability", "indicator": {"type": "availability"}, "objective": "99%"}],
}
HEALTH = {"hang_intervals": 4, "failure_threshold": 3, "base_ejection_time": "60s"}


def _metric(text: str, name: str, labels: str) -> float | None:
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def test_a_dead_engine_is_ejected_as_hung_and_a_sleeping_one_drained_beside_healthy_ones(tmp_path):
    with EngineStack(tmp_path, 4, SERVICE, health=HEALTH, rate=6.0) as stack:
        healthy, hung, asleep = stack.instances[:2], stack.instances[2], stack.instances[3]
        stack.wait(lambda: all(r["state"] == "healthy" for r in stack.by_instance().values()), 30, "all healthy")

        assert stack.fault(2, {"engine_dead": True}) == {"engine_dead": True}
        assert stack.fault(3, {"sleep": 1}) == {"sleep": 1}

        rows = stack.wait(lambda: (r := stack.by_instance())[hung]["state"] == "ejected"
                          and r[asleep]["state"] == "sleeping" and r, 30, "hung ejected and the sleeper sleeping")
        assert stack.sim_health(2) == 200  # vLLM's own /health still says all is well
        assert any(reason.startswith("hung: ") for reason in rows[hung]["reasons"]), rows[hung]["reasons"]
        assert rows[hung]["metrics"]["requests_running"] == 0 and rows[hung]["metrics"]["requests_waiting"] > 0
        check = stack.check_url(2)
        assert check.status_code == 503 and check.text.startswith("ejected: hung: "), check.text

        # the sleeper: drained, said why, and a failure nowhere
        assert any("sleep" in reason for reason in rows[asleep]["reasons"]), rows[asleep]["reasons"]
        assert stack.check_url(3).status_code == 503
        stack.wait(lambda: f"server {asleep} down;" in stack.upstream_file.read_text()
                   and f"server {hung} down;" in stack.upstream_file.read_text(), 10, "both down in the upstream file")
        for instance in healthy:
            assert f"server {instance};" in stack.upstream_file.read_text()
            assert rows[instance]["state"] == "healthy", rows[instance]
        for index in (0, 1):
            assert stack.check_url(index).status_code == 200
        # the healthy ones' figures come from current vLLM's families, and the API says which
        served = rows[healthy[0]]
        assert served["sources"]["tpot"] == "vllm:request_time_per_output_token_seconds"
        assert served["sources"]["itl"] == "vllm:inter_token_latency_seconds"
        assert served["metrics"]["itl_p99_s"] is not None and served["metrics"]["kv_capacity_tokens"] > 0

        # some cycles later nothing has changed its mind (a sleeper with a queue is not hung)
        cycles = stack.api("/healthz")["cycles"]
        stack.wait(lambda: stack.api("/healthz")["cycles"] >= cycles + 10, 20, "ten more cycles")
        later = stack.by_instance()
        assert later[asleep]["state"] == "sleeping" and later[hung]["state"] == "ejected"
        assert later[asleep]["metrics"]["requests_waiting"] > 0  # queued while asleep, yet not hung
        audit = stack.api("/api/v1/decisions", instance=asleep, kind="health")
        assert audit and all(d["to"] != "ejected" for d in audit)
        assert any(d["to"] == "sleeping" for d in audit)
        exposition = stack.api_text("/metrics")
        assert f'slo_monitor_instance_itl_seconds{{instance="{healthy[0]}"' in exposition
        assert f'slo_monitor_instance_kv_capacity_tokens{{instance="{healthy[0]}"' in exposition
        assert _metric(exposition, "slo_monitor_pool_fail_open", 'pool="llama"') == 0.0
        assert all(not any(r.startswith("failing open") for r in row["reasons"]) for row in later.values())
        [availability] = [s for s in stack.api("/api/v1/slos") if s["name"] == "availability"]
        assert availability["total"] > 0 and availability["good"] == availability["total"]

        # scaling: neither the sleeper nor the hung one is a serving replica; both queues shown
        scaling = stack.api("/api/v1/pools/llama/scaling")
        assert scaling["signals"]["replicas_reporting"] == 2
        assert "requests_waiting" in scaling["signals"] and "requests_waiting_capacity" in scaling["signals"]
        assert scaling["signals"]["requests_waiting_capacity"] is not None  # the latest page splits its queue

        # waking: it is judged again (the requests it queued while asleep finish with the sleep in their
        # TTFT, so what it is judged on is the health rules' business, not the sleep's)
        assert stack.fault(3, {}) == {}
        stack.wait(lambda: stack.by_instance()[asleep]["state"] != "sleeping", 10, "the sleeper awake")


def test_a_health_timeout_and_a_frozen_page_with_requests_in_flight_are_hangs(tmp_path):
    with EngineStack(tmp_path, 5, SERVICE, health=HEALTH, rate=8.0, output_tokens=60) as stack:
        timeout_i, frozen_i = stack.instances[3], stack.instances[4]
        stack.wait(lambda: all(r["state"] == "healthy" for r in stack.by_instance().values()), 30, "all healthy")

        # freeze the page at a moment it shows work: requests in flight that will never finish
        def frozen_busy() -> bool:
            stack.fault(4, {})
            stack.wait(lambda: _busy(stack.page(4)), 10, "requests in flight on instance 4")
            stack.fault(4, {"metrics_frozen": True, "engine_dead": True})
            return _busy(stack.page(4))

        stack.wait(frozen_busy, 30, "a frozen page that shows requests in flight")
        frozen_page = stack.page(4)
        assert stack.fault(3, {"health_timeout": True}) == {"health_timeout": True}

        rows = stack.wait(lambda: (r := stack.by_instance())[timeout_i]["state"] == "ejected"
                          and r[frozen_i]["state"] == "ejected" and r, 30, "both ejected")
        assert stack.sim_health(3, timeout_s=1.0) is None  # /health never answers ...
        assert rows[timeout_i]["scrape"]["error"] is None  # ... while /metrics does
        assert any(r.startswith("hung: /metrics answers but /health timed out") for r in rows[timeout_i]["reasons"]), \
            rows[timeout_i]["reasons"]
        assert stack.sim_health(4) == 200 and stack.page(4) == frozen_page  # health fine, page byte for byte the same
        assert any(r.startswith("hung: ") for r in rows[frozen_i]["reasons"]), rows[frozen_i]["reasons"]
        for index in (3, 4):
            assert stack.check_url(index).status_code == 503
        for index in (0, 1, 2):
            assert rows[stack.instances[index]]["state"] == "healthy", rows[stack.instances[index]]
            assert stack.check_url(index).status_code == 200


def _busy(page: str) -> bool:
    running = re.search(r'^vllm:num_requests_running\{[^}]*\} (\S+)$', page, re.M)
    waiting = re.search(r'^vllm:num_requests_waiting\{[^}]*\} (\S+)$', page, re.M)
    return bool(running and waiting) and float(running.group(1)) + float(waiting.group(1)) > 0
