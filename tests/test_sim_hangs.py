"""The simulator's hang shapes, sleep, speculative decoding, deferred waits, admission limits and the
live metric-version switch, each seen the way a monitor sees it: /health, /metrics and requests."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from monitor.collect.vllm import parse_page
from monitor.sim.fleet import running_fleet
from monitor.sim.params import FaultError, Faults, InstanceParams

pytestmark = pytest.mark.e2e  # every test here starts servers on real ports

FAST = InstanceParams(time_scale=0.2, seed=5)


async def _sample(client: httpx.AsyncClient, url: str):
    return parse_page((await client.get(url + "/metrics")).text)[0]


async def _faults(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    r = await client.post(url + "/sim/faults", json=body)
    assert r.status_code == 200, r.text
    return r.json()["faults"]


async def _eventually(check, what: str, deadline_s: float = 10.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    last = None
    while loop.time() < end:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _send(client: httpx.AsyncClient, url: str, n: int, max_tokens: int = 20) -> list[asyncio.Task]:
    return [asyncio.create_task(client.post(url + "/v1/completions",
                                            json={"prompt": f"r{i} " + "w " * 30, "max_tokens": max_tokens,
                                                  "ignore_eos": True}))
            for i in range(n)]


async def _cancel(tasks: list[asyncio.Task]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_engine_dead_keeps_health_200_and_metrics_while_waiting_climbs_and_nothing_moves():
    async with running_fleet([FAST]) as fleet, httpx.AsyncClient(timeout=10) as client:
        url = fleet.urls[0]
        warm = _send(client, url, 2, max_tokens=3)
        await asyncio.gather(*warm)
        assert await _faults(client, url, {"engine_dead": True}) == {"engine_dead": True}
        before = await _sample(client, url)
        stuck = _send(client, url, 3)

        async def three_waiting():
            s = await _sample(client, url)
            return s if s.gauges["waiting"] == 3 else None

        during = await _eventually(three_waiting, "3 waiting requests")
        await asyncio.sleep(0.3)
        later = await _sample(client, url)
        assert (await client.get(url + "/health")).status_code == 200
        assert later.gauges["running"] == 0 and later.gauges["waiting"] == 3
        assert later.gauges["waiting_capacity"] == 3 and later.gauges["waiting_deferred"] == 0
        for key in ("engine_iterations", "generation_tokens"):
            assert later.counters[key] == during.counters[key] == before.counters[key], key
        assert sum(later.finished.values()) == sum(before.finished.values())
        assert not any(t.done() for t in stuck)

        assert await _faults(client, url, {}) == {}  # the engine comes back: the queue drains
        results = await asyncio.wait_for(asyncio.gather(*stuck), 20)
        assert all(r.status_code == 200 for r in results)


async def test_health_timeout_leaves_metrics_and_requests_working():
    async with running_fleet([FAST]) as fleet, httpx.AsyncClient(timeout=10) as client:
        url = fleet.urls[0]
        await _faults(client, url, {"health_timeout": True})
        with pytest.raises(httpx.TimeoutException):
            await client.get(url + "/health", timeout=0.5)
        r = await client.post(url + "/v1/completions", json={"prompt": "a b c", "max_tokens": 3})
        assert r.status_code == 200
        assert (await _sample(client, url)).finished["length"] + (await _sample(client, url)).finished["stop"] == 1
        await _faults(client, url, {})
        assert (await client.get(url + "/health", timeout=2)).status_code == 200


async def test_metrics_frozen_serves_an_identical_page_while_health_answers():
    async with running_fleet([FAST]) as fleet, httpx.AsyncClient(timeout=10) as client:
        url = fleet.urls[0]
        await _faults(client, url, {"metrics_frozen": True})
        first = (await client.get(url + "/metrics")).content
        tasks = _send(client, url, 2, max_tokens=4)
        await asyncio.gather(*tasks)
        assert (await client.get(url + "/metrics")).content == first
        assert (await client.get(url + "/health")).status_code == 200
        await _faults(client, url, {})
        assert (await client.get(url + "/metrics")).content != first


async def test_sleep_reports_the_level_queues_requests_and_wakes_up():
    async with running_fleet([FAST]) as fleet, httpx.AsyncClient(timeout=10) as client:
        url = fleet.urls[0]
        awake = await _sample(client, url)
        assert awake.gauges["engines_asleep"] == 0 and awake.gauges["sleep_level"] == 0
        assert (await client.post(url + "/sleep?level=2")).status_code == 200  # vLLM's own endpoint
        assert (await client.get(url + "/is_sleeping")).json() == {"is_sleeping": True}
        asleep = await _sample(client, url)
        assert asleep.gauges["engines_asleep"] == 1 and asleep.gauges["sleep_level"] == 2
        page = (await client.get(url + "/metrics")).text
        assert 'sleep_state="discard_all"} 1.0' in page and 'sleep_state="awake"} 0.0' in page
        assert (await client.get(url + "/health")).status_code == 200
        queued = _send(client, url, 2, max_tokens=3)
        await _eventually(lambda: _waiting(client, url, 2), "2 requests queued while asleep")
        assert await _faults(client, url, {"sleep": 1}) == {"sleep": 1}
        assert (await _sample(client, url)).gauges["sleep_level"] == 1
        assert (await client.post(url + "/wake_up")).status_code == 200
        results = await asyncio.wait_for(asyncio.gather(*queued), 20)
        assert all(r.status_code == 200 for r in results)
        assert (await _sample(client, url)).gauges["engines_asleep"] == 0


async def _waiting(client: httpx.AsyncClient, url: str, n: int) -> bool:
    return (await _sample(client, url)).gauges["waiting"] == n


async def test_speculative_decoding_accepts_about_the_rate_and_itl_differs_from_per_request_tpot():
    params = FAST.with_(spec_decode_acceptance=0.7, num_speculative_tokens=4)
    async with running_fleet([params]) as fleet, httpx.AsyncClient(timeout=30) as client:
        url = fleet.urls[0]
        await asyncio.gather(*_send(client, url, 8, max_tokens=120))
        sample = await _sample(client, url)
    drafts = sample.counters["spec_decode_drafts"]
    draft_tokens = sample.counters["spec_decode_draft_tokens"]
    accepted = sample.counters["spec_decode_accepted_tokens"]
    assert draft_tokens == 4 * drafts and drafts > 100
    assert 0.6 < accepted / draft_tokens < 0.8
    assert sample.counters["generation_tokens"] == 8 * 120
    # several tokens per output event: fewer ITL observations than tokens after the first
    assert sample.histograms["itl"].count < 8 * 119 * 0.6
    assert sample.histograms["tpot"].count == 8
    per_request = sample.histograms["tpot"].sum / 8
    per_event = sample.histograms["itl"].sum / sample.histograms["itl"].count
    assert per_request < per_event / 2


async def test_spec_decode_acceptance_as_a_fault_turns_the_families_on():
    async with running_fleet([FAST]) as fleet, httpx.AsyncClient(timeout=30) as client:
        url = fleet.urls[0]
        assert "spec_decode" not in (await client.get(url + "/metrics")).text
        await _faults(client, url, {"spec_decode_acceptance": 0.0})
        await asyncio.gather(*_send(client, url, 2, max_tokens=10))
        sample = await _sample(client, url)
    assert sample.counters["spec_decode_drafts"] == 2 * 9 and sample.counters["spec_decode_accepted_tokens"] == 0


async def test_kv_transfer_delay_shows_as_deferred_waiting():
    async with running_fleet([FAST]) as fleet, httpx.AsyncClient(timeout=10) as client:
        url = fleet.urls[0]
        await _faults(client, url, {"kv_transfer_delay_s": 5})  # × time_scale 0.2 = 1 s
        tasks = _send(client, url, 2, max_tokens=3)
        s = await _eventually(lambda: _deferred(client, url), "deferred requests")
        assert s.gauges["waiting"] == 2 and s.gauges["waiting_capacity"] == 0
        results = await asyncio.wait_for(asyncio.gather(*tasks), 20)
        assert all(r.status_code == 200 for r in results)
        assert (await _sample(client, url)).gauges["waiting_deferred"] == 0


async def _deferred(client: httpx.AsyncClient, url: str):
    s = await _sample(client, url)
    return s if s.gauges.get("waiting_deferred") == 2 else None


async def test_admission_limit_answers_503_and_counts_the_rejection():
    async with running_fleet([FAST.with_(max_num_queued_reqs=1)]) as fleet, httpx.AsyncClient(timeout=10) as client:
        url = fleet.urls[0]
        await _faults(client, url, {"sleep": 1})  # nothing is scheduled, so the queue fills
        first = _send(client, url, 1)
        await _eventually(lambda: _waiting(client, url, 1), "one queued request")
        r = await client.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 2})
        assert r.status_code == 503 and r.json()["error"]["code"] == 503
        sample = await _sample(client, url)
        assert sample.counters["admission_rejections"] == 1
        assert sample.counters["admission_rejections_queued_reqs"] == 1
        await _cancel(first)


async def test_metrics_version_switches_live_and_counters_start_again():
    async with running_fleet([FAST]) as fleet, httpx.AsyncClient(timeout=10) as client:
        url = fleet.urls[0]
        await asyncio.gather(*_send(client, url, 2, max_tokens=3))
        assert (await client.get(url + "/version")).json()["version"] == "0.33.0"
        latest = (await client.get(url + "/metrics")).text
        assert "vllm:num_requests_waiting_by_reason" in latest and "vllm:admission_rejections_total" in latest
        r = await client.post(url + "/sim/control", json={"metrics_version": "v0"})
        assert r.status_code == 200 and r.json()["metrics_version"] == "v0"
        v0 = (await client.get(url + "/metrics")).text
        assert "vllm:gpu_cache_usage_perc" in v0 and "_created" not in v0
        assert "vllm:time_to_first_token_seconds_count{model_name" in v0
        assert parse_page(v0)[0].histograms["ttft"].count == 0
        await _faults(client, url, {})  # clearing faults leaves the version alone
        assert (await client.get(url + "/sim/control")).json()["metrics_version"] == "v0"
        await asyncio.gather(*_send(client, url, 1, max_tokens=3))
        assert parse_page((await client.get(url + "/metrics")).text)[0].histograms["ttft"].count == 1
        bad = await client.post(url + "/sim/control", json={"metrics_version": "v9"})
        assert bad.status_code == 400 and "metrics_version" in bad.json()["error"]["message"]


def test_fault_bodies_are_checked_by_key():
    assert Faults.from_json({"sleep": 2, "engine_dead": True}).active == {"sleep": 2, "engine_dead": True}
    for body, key in (({"sleep": 3}, "sleep"), ({"engine_dead": 1}, "engine_dead"),
                      ({"spec_decode_acceptance": 1.5}, "spec_decode_acceptance"),
                      ({"kv_transfer_delay_s": -1}, "kv_transfer_delay_s"),
                      ({"max_num_queued_reqs": 0}, "max_num_queued_reqs"), ({"metrics_version": "v0"}, "metrics_version")):
        with pytest.raises(FaultError, match=key):
            Faults.from_json(body)
