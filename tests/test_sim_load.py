"""The engine model behaves like a server under load: latency and queueing rise with offered load,
and a KV cache too small for the batch makes requests wait and running requests get preempted."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from monitor.collect.vllm import parse_page
from monitor.evaluate.windows import histogram_increase
from monitor.loadgen.runner import LoadRun
from monitor.loadgen.workload import Workload
from monitor.sim.fleet import running_fleet
from monitor.sim.groundtruth import read_rows
from monitor.sim.params import InstanceParams

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port


async def _watch_waiting(client: httpx.AsyncClient, url: str, seen: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        seen.append((await client.get(url + "/sim/state")).json()["waiting"])
        await asyncio.sleep(0.05)


async def _phase(client: httpx.AsyncClient, url: str, rate: float, duration_s: float, seed: int):
    """One load level: the client's view (loadgen summary), the server's queue-time histogram over the
    phase, and the most requests seen waiting."""
    before = parse_page((await client.get(url + "/metrics")).text)[0]
    seen: list[int] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_waiting(client, url, seen, stop))
    run = LoadRun([url], rate=rate, duration_s=duration_s, drain_s=30.0,
                  workload=Workload(prompt_tokens=64, output_tokens=16, range_ratio=0.0, seed=seed))
    summary = await run.run()
    stop.set()
    await watcher
    after = parse_page((await client.get(url + "/metrics")).text)[0]
    queue = histogram_increase([before.histograms["queue"], after.histograms["queue"]])
    return summary, queue.sum / queue.count, max(seen)


async def test_latency_and_queueing_rise_with_offered_load():
    # 2 batch slots and ~16 tokens of ~13 ms: about 10 requests/s of capacity
    params = InstanceParams(max_num_seqs=2, seed=5)
    async with running_fleet([params]) as fleet:
        url = fleet.urls[0]
        async with httpx.AsyncClient(timeout=30) as client:
            low, low_queue, low_waiting = await _phase(client, url, rate=4.0, duration_s=2.0, seed=1)
            high, high_queue, high_waiting = await _phase(client, url, rate=30.0, duration_s=1.0, seed=2)
    assert low.completed >= 4 and high.completed >= 20
    assert high.failed == 0 and high.incomplete == 0
    # three times the capacity: requests queue for seconds, not milliseconds
    assert high.ttft.median > 5 * low.ttft.median
    assert high.e2el.median > 2 * low.e2el.median
    assert high_queue > 10 * max(low_queue, 0.01)
    assert high_waiting >= 10 and low_waiting <= 3


async def test_a_small_kv_cache_makes_requests_wait_and_preempts_running_ones(tmp_path):
    # 40 blocks of 16 tokens hold 640 tokens; 8 requests of 100 + 150 tokens need 2000 at the end
    params = InstanceParams(num_gpu_blocks=40, time_scale=0.2, seed=6)
    truth = tmp_path / "truth.jsonl"
    async with running_fleet([params], ground_truth=truth) as fleet:
        url = fleet.urls[0]
        async with httpx.AsyncClient(timeout=60) as client:
            async def one(i: int) -> int:
                prompt = " ".join(f"r{i}w{j}" for j in range(100))
                r = await client.post(url + "/v1/completions",
                                      json={"prompt": prompt, "max_tokens": 150, "ignore_eos": True})
                return r.status_code

            statuses = await asyncio.gather(*(one(i) for i in range(8)))
            [sample] = parse_page((await client.get(url + "/metrics")).text)
    assert statuses == [200] * 8
    rows = read_rows(truth)
    assert len(rows) == 8 and all(r["status"] == "length" and r["generation_tokens"] == 150 for r in rows)
    assert sample.counters["preemptions"] > 0
    assert sum(r["preemptions"] for r in rows) == sample.counters["preemptions"]
    # KV blocks, not batch slots (128), kept some requests waiting
    assert sum(1 for r in rows if r["scheduled"] - r["arrival"] > 0.05) >= 2
    assert sample.histograms["queue"].sum > 0.1
