"""Each fault changes what it should: latency up; 500s and their counter; KV usage climbing;
/health silent when hung and 503 when dead; `{}` clears them all."""

from __future__ import annotations

import statistics

import httpx
import pytest

from monitor.collect.vllm import parse_page
from monitor.sim.fleet import running_fleet
from monitor.sim.params import InstanceParams

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port


async def _ttft(client: httpx.AsyncClient, url: str) -> float:
    """The server's own TTFT of one request: the increase of the TTFT histogram's sum. Prompts differ,
    so every request pays its full prefill (no prefix-cache hits)."""
    before = parse_page((await client.get(url + "/metrics")).text)[0].histograms["ttft"]
    prompt = " ".join(f"q{before.count:g}w{i}" for i in range(800))
    r = await client.post(url + "/v1/completions", json={"prompt": prompt, "max_tokens": 4, "ignore_eos": True})
    assert r.status_code == 200
    return parse_page((await client.get(url + "/metrics")).text)[0].histograms["ttft"].sum - before.sum


async def _faults(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    r = await client.post(url + "/sim/faults", json=body)
    assert r.status_code == 200, r.text
    return r.json()["faults"]


async def _sample(client: httpx.AsyncClient, url: str):
    return parse_page((await client.get(url + "/metrics")).text)[0]


@pytest.fixture
async def instance():
    async with running_fleet([InstanceParams(num_gpu_blocks=512, time_scale=0.5, seed=9)]) as fleet:
        async with httpx.AsyncClient(timeout=10) as client:
            yield client, fleet.urls[0]


async def test_latency_multiplier_raises_latency():
    # real time and 800-token prompts: a ~90 ms prefill, large next to any scheduling noise of a busy CI box
    async with running_fleet([InstanceParams(seed=9)]) as fleet, httpx.AsyncClient(timeout=10) as client:
        await _check_latency_multiplier(client, fleet.urls[0])


async def _check_latency_multiplier(client: httpx.AsyncClient, url: str) -> None:
    before = statistics.median([await _ttft(client, url) for _ in range(3)])
    assert await _faults(client, url, {"latency_multiplier": 4}) == {"latency_multiplier": 4.0}
    during = statistics.median([await _ttft(client, url) for _ in range(3)])
    assert await _faults(client, url, {}) == {}
    after = statistics.median([await _ttft(client, url) for _ in range(3)])
    assert during > 2.5 * before
    assert after < during / 2


async def test_error_rate_answers_500_and_counts_finished_reason_error(instance):
    client, url = instance
    await _faults(client, url, {"error_rate": 1.0})
    for _ in range(5):
        r = await client.post(url + "/v1/completions", json={"prompt": "hello", "max_tokens": 3})
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "InternalServerError"
    r = await client.post(url + "/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert r.status_code == 500
    sample = await _sample(client, url)
    assert sample.finished["error"] == 6
    assert sample.finished["length"] == 0
    assert (await client.get(url + "/health")).status_code == 200  # the engine itself is fine
    await _faults(client, url, {})
    r = await client.post(url + "/v1/completions", json={"prompt": "hello", "max_tokens": 3})
    assert r.status_code == 200
    assert (await _sample(client, url)).finished["error"] == 6


async def test_kv_cache_leak_makes_usage_climb_until_cleared(instance):
    client, url = instance
    await _faults(client, url, {"kv_cache_leak": True})
    usage = [(await _sample(client, url)).gauges["kv_cache_usage"]]
    for batch in range(3):
        for i in range(2):
            prompt = f"b{batch} r{i} " + "tok " * 100
            body = {"prompt": prompt, "max_tokens": 20, "ignore_eos": True}
            r = await client.post(url + "/v1/completions", json=body)
            assert r.status_code == 200
        sample = await _sample(client, url)
        assert sample.gauges["running"] == 0  # idle, yet the blocks are still taken
        usage.append(sample.gauges["kv_cache_usage"])
    assert usage[0] == 0.0
    assert usage[1] > 0 and usage[1] < usage[2] < usage[3]
    await _faults(client, url, {})
    assert (await _sample(client, url)).gauges["kv_cache_usage"] == 0.0


async def test_hang_makes_health_silent_and_requests_stall(instance):
    client, url = instance
    await _faults(client, url, {"hang": True})
    with pytest.raises(httpx.TimeoutException):
        await client.get(url + "/health", timeout=0.5)
    with pytest.raises(httpx.TimeoutException):
        await client.post(url + "/v1/completions", json={"prompt": "hello", "max_tokens": 3}, timeout=0.5)
    assert (await client.get(url + "/metrics")).status_code == 200  # the API server still answers
    await _faults(client, url, {})
    assert (await client.get(url + "/health")).status_code == 200
    r = await client.post(url + "/v1/completions", json={"prompt": "hello", "max_tokens": 3})
    assert r.status_code == 200


async def test_dead_answers_503_on_health_and_500_to_requests(instance):
    client, url = instance
    await _faults(client, url, {"dead": True})
    assert (await client.get(url + "/health")).status_code == 503
    r = await client.post(url + "/v1/completions", json={"prompt": "hello", "max_tokens": 3})
    assert r.status_code == 500
    assert sum((await _sample(client, url)).finished.values()) == 0  # a dead engine counts nothing
    await _faults(client, url, {})
    assert (await client.get(url + "/health")).status_code == 200


async def test_fault_bodies_are_validated(instance):
    client, url = instance
    for body in ({"latency_multiplier": 0}, {"error_rate": 2}, {"hang": "yes"}, {"slow": True}, [1]):
        r = await client.post(url + "/sim/faults", json=body)
        assert r.status_code == 400, body
    assert (await client.get(url + "/sim/faults")).json()["faults"] == {}
