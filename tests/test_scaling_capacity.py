"""Capacity apart from sickness (issue 20): scaling reads the instances in rotation, a latency or burn
signal scales up only when a capacity signal agrees, scale-up is limited per period as the HPA's
`behavior` limits it, `max_replicas` is finite when unset, and the reason names every signal."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from monitor.cli.advice import advice
from monitor.config import validate
from monitor.decide.scaling import (
    PoolScaler,
    ScalingSettings,
    ScalingSignals,
    ready_replicas,
    step_limit,
)
from monitor.publish.api import install_routes
from monitor.service import Service
from tests.helpers.hand_scraper import HandScraper

T0 = 1_700_000_000.0
SICK = "10.0.0.4:8000"


def light_load_with_one_ejected(burn: float = 22.9) -> ScalingSignals:
    """The issue's pool: 4 members, one ejected for a 3 s TTFT; the 3 in rotation have no queue, KV
    at 30% and a fast p99; the pool's TTFT SLO still burns at 22.9 (the sick one's requests)."""
    return ScalingSignals(3, requests_waiting=0.0, kv_cache_usage=0.3, ttft_p99_s=0.12, requests=600.0,
                          ttft_burn_rate=burn, requests_waiting_for_scaling=0.0,
                          out_of_rotation={SICK: "ejected (latency)"})


def test_one_ejected_slow_instance_under_light_load_asks_for_no_replica():
    scaler = PoolScaler("chat")  # every default: 60 s up, 300 s down, step policy, max_replicas unset
    desired = [scaler.recommend(4, light_load_with_one_ejected(), T0 + 5 * i).desired_replicas for i in range(30)]
    assert max(desired) <= 4  # was 74 (ttft_burn_rate 22.9 wanted 92, held at 74 by stabilisation)
    last = scaler.last
    assert last is not None
    burn = last.signals["metrics"]["ttft_burn_rate"]
    assert burn["counted"] is False and burn["set_aside"].startswith("health, not capacity")
    assert f"{SICK} ejected (latency)" in burn["set_aside"]
    assert last.signals["out_of_rotation"] == {SICK: "ejected (latency)"}
    assert "ttft_burn_rate 22.9 vs 1" in last.reason and "set aside (health, not capacity" in last.reason


def test_a_pool_held_at_four_stays_at_four_while_its_sick_member_is_out():
    scaler = PoolScaler("chat", ScalingSettings(min_replicas=4))
    for i in range(30):
        decision = scaler.recommend(4, light_load_with_one_ejected(), T0 + 5 * i)
        assert decision.desired_replicas == 4
    assert decision.reason.startswith("hold 4 -> 4: ")
    assert decision.signals["deciding_signal"] in ("kv_cache_usage", "waiting_per_replica", "ttft_p99_s")


def test_the_three_replica_pool_of_the_issue_asks_for_no_replica_either():
    # 3 replicas, 0 waiting, KV 0.3%, one slowed node (ejected): was 27
    scaler = PoolScaler("chat", ScalingSettings(scale_up_stabilization="0s"))
    signals = ScalingSignals(2, requests_waiting=0.0, kv_cache_usage=0.003, ttft_p99_s=0.1, requests=400.0,
                             ttft_burn_rate=9.0, out_of_rotation={SICK: "ejected (latency)"})
    assert scaler.recommend(3, signals, T0).desired_replicas <= 3


def test_a_hung_instance_burn_is_health_not_capacity():
    scaler = PoolScaler("chat", ScalingSettings(scale_up_stabilization="0s", min_replicas=4))
    signals = ScalingSignals(3, requests_waiting=0.0, kv_cache_usage=0.3, ttft_p99_s=None, requests=0.0,
                             ttft_burn_rate=40.0, out_of_rotation={SICK: "ejected (hang)"})
    decision = scaler.recommend(4, signals, T0)
    assert decision.desired_replicas == 4
    assert "ejected (hang)" in decision.signals["metrics"]["ttft_burn_rate"]["set_aside"]


def test_slowness_without_load_in_a_whole_pool_is_not_capacity():
    scaler = PoolScaler("chat", ScalingSettings(scale_up_stabilization="0s", min_replicas=4))
    decision = scaler.recommend(4, ScalingSignals(4, 0.0, 0.2, 2.0, 500.0, 8.0, degraded=("10.0.0.1:8000",)), T0)
    assert decision.desired_replicas == 4
    ttft = decision.signals["metrics"]["ttft_p99_s"]
    assert ttft["counted"] is False and "degraded: 10.0.0.1:8000" in ttft["set_aside"]


def test_latency_with_a_queue_behind_it_still_scales_up():
    scaler = PoolScaler("chat", ScalingSettings(scale_up_stabilization="0s"))
    # 3 waiting per replica (0.6 of the target of 5) corroborates a p99 twice its target
    decision = scaler.recommend(4, ScalingSignals(4, 12.0, 0.3, 1.0, 500.0, None), T0)
    assert decision.desired_replicas == 8 and decision.signals["deciding_signal"] == "ttft_p99_s"
    assert decision.signals["metrics"]["ttft_p99_s"]["counted"] is True


def test_running_against_max_num_seqs_is_a_capacity_signal():
    settings = ScalingSettings(scale_up_stabilization="0s", max_num_seqs=64)
    # 60 of 64 sequences running on each replica, no queue yet, KV low: the batch is full
    decision = PoolScaler("chat", settings).recommend(
        4, ScalingSignals(4, 0.0, 0.2, 1.0, 500.0, None, requests_running=240.0), T0)
    assert decision.signals["metrics"]["running_share"]["value"] == 240 / 4 / 64
    assert decision.desired_replicas == 8 and decision.signals["metrics"]["ttft_p99_s"]["counted"] is True


def test_real_overload_scales_up_at_most_doubling_or_four_per_minute_and_never_above_max_replicas():
    scaler = PoolScaler("chat", ScalingSettings(max_replicas=20))
    current, t, seen = 4, T0, []
    for _ in range(60):  # 5 minutes, every 5 s; the autoscaler acts on each answer at once
        per_replica = 80.0 / current  # the same 80 queued requests spread over what runs
        decision = scaler.recommend(current, ScalingSignals(current, 80.0, 0.95, 2.0, 5000.0, 10.0), t)
        seen.append((t, current, decision.desired_replicas))
        assert decision.desired_replicas <= decision.signals["max_replicas"] == 20
        assert per_replica > 0
        current, t = decision.desired_replicas, t + 5
    for t_now, _, desired in seen:
        base = min(c for t_c, c, _ in seen if t_now - 60 < t_c <= t_now)
        assert desired <= max(2 * base, base + 4)
    assert [d for _, _, d in seen][-1] == 20
    assert sorted({c for _, c, _ in seen}) == [4, 8, 16, 20]  # a step per minute, then the cap
    limited = next(d for _, c, d in seen if c == 8 and d > 8)
    assert limited == 16
    decision = scaler.last
    assert decision is not None and decision.signals["deciding_signal"] == "ttft_burn_rate"
    assert "clamped to max_replicas 20" in decision.reason


def test_the_step_policy_reason_names_the_limit():
    scaler = PoolScaler("chat", ScalingSettings(scale_up_stabilization="0s"))
    decision = scaler.recommend(4, ScalingSignals(4, 200.0, 0.95), T0)  # 50 waiting per replica wants 40
    assert decision.desired_replicas == 8 and decision.signals["limited_by"] == "scale_up_policy"
    assert "limited to 8 by the scale-up policy (+100% or +4 per 60s from 4" in decision.reason
    assert decision.to_json()["limited_by"] == "scale_up_policy"
    assert step_limit(10, 100.0, 4) == 20 and step_limit(2, 100.0, 4) == 6 and step_limit(0, 100.0, 4) == 4
    assert step_limit(10, None, None) is None and step_limit(10, 50.0, None) == 15


def test_max_replicas_unset_is_finite_and_never_shrinks_a_larger_pool():
    settings = ScalingSettings(scale_up_stabilization="0s", scale_up_max_percent=None, scale_up_max_replicas=None)
    decision = PoolScaler("chat", settings).recommend(50, ScalingSignals(50, 50 * 40.0, 0.95), T0)
    assert decision.desired_replicas == 100 == decision.to_json()["max_replicas"]
    assert "clamped to max_replicas 100 (unset: the default)" in decision.reason
    decision = PoolScaler("chat", settings).recommend(150, ScalingSignals(150, 150 * 40.0, 0.95), T0)
    assert decision.desired_replicas == 150 == decision.signals["max_replicas"]


def test_check_warns_when_max_replicas_is_unset():
    config = validate({"pools": [{"name": "chat", "targets": ["http://10.0.0.1:8000"]},
                                 {"name": "code", "targets": ["http://10.0.0.2:8000"],
                                  "scaling": {"max_replicas": 8}}]}).config
    warnings = [w for w in advice(config) if "max_replicas" in w]
    assert len(warnings) == 1 and warnings[0].startswith("pools[0].scaling.max_replicas: unset")
    assert "100" in warnings[0]


def test_the_explanation_names_every_signal_and_which_one_decided():
    scaler = PoolScaler("chat", ScalingSettings(scale_up_stabilization="0s", max_num_seqs=64))
    signals = ScalingSignals(4, 12.0, 0.9, 0.6, 500.0, 1.5, requests_running=200.0)
    decision = scaler.recommend(4, signals, T0)
    body = decision.to_json()
    assert body["deciding_signal"] == "ttft_burn_rate"
    assert decision.reason.split(": ", 1)[1].startswith("ttft_burn_rate 1.5 vs target 1 wants 6")
    for name in ("waiting_per_replica", "kv_cache_usage", "running_share", "ttft_p99_s", "ttft_burn_rate"):
        assert name in decision.reason and name in body["signals"]["metrics"]
    roles = {name: m["role"] for name, m in body["signals"]["metrics"].items()}
    assert roles == {"waiting_per_replica": "capacity", "kv_cache_usage": "capacity", "running_share": "capacity",
                     "ttft_p99_s": "latency", "ttft_burn_rate": "latency"}


def test_starting_replicas_are_not_asked_for_twice():
    # 8 members, 4 of them starting: the 4 serving at twice their target need 8 in all, which there are
    assert ready_replicas(8, 4, 2.0, 0.1) == 8
    assert ready_replicas(4, 4, 2.0, 0.1) == 8  # everyone reporting: the HPA formula
    # scaling down, an ejected member counts as at target: an ejection never shrinks the pool
    assert ready_replicas(4, 3, 0.5, 0.1) == 3  # ceil(3 x 0.5 + 1) = 3, not ceil(4 x 0.5) = 2
    assert ready_replicas(4, 3, 1.2, 0.1) == 4  # 3.6 replicas' worth: the 4 there are


# --- through the service: the issue's scenario end to end, in-process ----------------------------------

async def _issue_scenario() -> dict:
    targets = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", SICK]
    config = validate({
        "scrape": {"interval": "200ms", "timeout": "100ms"},
        "pools": [{"name": "chat", "targets": [f"http://{t}" for t in targets],
                   "health": {"min_requests": 1, "base_ejection_time": "60s"},
                   "scaling": {"scale_up_stabilization": "0s"}}],
        "slos": [{"name": "ttft", "pools": ["chat"], "objective": "99%",
                  "indicator": {"type": "latency", "metric": "ttft", "threshold": "500ms"}}],
    }).config
    service = Service(config)
    scraper = HandScraper()
    service.scraper = scraper
    scraper.slow.add(SICK)
    app = FastAPI()
    install_routes(app, service)
    for _ in range(40):
        await service.scrape_cycle()
        verdict = service.decisions.verdict("chat", SICK)
        if verdict is not None and verdict.state == "ejected" and service.decisions.recommendation("chat"):
            break
    for _ in range(3):  # a few cycles with the sick one out
        await service.scrape_cycle()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return (await client.get("/api/v1/pools/chat/scaling")).json()


def test_the_scaling_endpoint_answers_the_pool_size_while_one_sick_member_is_ejected():
    body = asyncio.run(_issue_scenario())
    assert body["current_replicas"] == 4 and body["desired_replicas"] <= 4 <= body["max_replicas"]
    assert body["signals"]["out_of_rotation"].get(SICK, "").startswith("ejected")
    assert body["deciding_signal"] in body["reason"]
    burn = body["signals"]["metrics"]["ttft_burn_rate"]  # a quarter of the requests take 3 s: burn 25
    assert burn["value"] > 20 and burn["recommendation"] > 70  # what it alone would have asked for
    assert burn["counted"] is False and "health, not capacity" in burn["set_aside"] and SICK in burn["set_aside"]
    assert body["deciding_signal"] != "ttft_burn_rate"
