"""Histogram counts on /metrics agree with the ground-truth file: the same requests in the same buckets."""

from __future__ import annotations

import math

import httpx
import pytest

from monitor.collect.vllm import parse_page
from monitor.loadgen.runner import LoadRun
from monitor.loadgen.workload import Workload
from monitor.samples import Histogram
from monitor.sim.fleet import running_fleet
from monitor.sim.params import InstanceParams

from tests.helpers.sim_truth import wait_for_rows

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port


COUNTED = ("stop", "length", "abort", "error")


def expected_cumulative(values: list[float], bounds: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(float(sum(1 for v in values if v <= b)) for b in bounds)


def assert_same_buckets(hist: Histogram, values: list[float], what: str) -> None:
    assert hist.count == len(values), what
    assert hist.cumulative == expected_cumulative(values, hist.bounds), what
    assert math.isclose(hist.sum, sum(values), rel_tol=1e-9, abs_tol=1e-9), what


async def _abort_after_first_token(client: httpx.AsyncClient, url: str) -> None:
    """A client that goes away mid-stream: vLLM finishes the request as `abort`."""
    body = {"prompt": "abandon " * 30, "max_tokens": 400, "ignore_eos": True, "stream": True}
    async with client.stream("POST", url + "/v1/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                break


async def test_histograms_on_metrics_agree_with_the_ground_truth_file(tmp_path):
    truth = tmp_path / "truth.jsonl"
    params = [InstanceParams(time_scale=0.25, seed=3, max_num_seqs=8), InstanceParams(time_scale=0.25, seed=4)]
    async with running_fleet(params, ground_truth=truth) as fleet:
        async with httpx.AsyncClient(timeout=30) as client:
            # one instance fails some requests (500, finished_reason="error")
            await client.post(fleet.urls[1] + "/sim/faults", json={"error_rate": 0.3})
            run = LoadRun(fleet.urls, rate=25, duration_s=2.0,
                          workload=Workload(prompt_tokens=64, output_tokens=24, prefix_tokens=32, seed=7))
            summary = await run.run()
            for url in fleet.urls:
                await _abort_after_first_token(client, url)
                r = await client.post(url + "/v1/chat/completions",
                                      json={"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 6})
                assert r.status_code in (200, 500)
            rows = await wait_for_rows(truth, run.sent + 2 * len(fleet.urls))
            pages = {fleet.instances[i].engine.name: (await client.get(url + "/metrics")).text
                     for i, url in enumerate(fleet.urls)}

    assert summary.completed > 20 and summary.failed > 0
    assert len(rows) == run.sent + 2 * len(pages)
    assert {r["status"] for r in rows} >= {"length", "abort", "error"}
    for instance, page in pages.items():
        mine = [r for r in rows if r["instance"] == instance and r["status"] in COUNTED]
        assert mine, instance
        [sample] = parse_page(page)
        started = [r for r in mine if r["first_token"] is not None]
        assert_same_buckets(sample.histograms["ttft"], [r["first_token"] - r["arrival"] for r in started],
                            f"{instance} TTFT")
        assert_same_buckets(sample.histograms["e2e"], [r["finish"] - r["arrival"] for r in mine], f"{instance} e2e")
        assert_same_buckets(sample.histograms["queue"],
                            [(r["scheduled"] if r["scheduled"] is not None else r["finish"]) - r["arrival"]
                             for r in mine], f"{instance} queue")
        assert sample.histograms["itl"].count == sum(r["generation_tokens"] - 1 for r in started)
        # per-request TPOT: one observation per counted finished request, as vLLM records it
        assert sample.histograms["tpot"].count == len(mine)
        for reason in COUNTED:
            assert sample.finished[reason] == sum(1 for r in mine if r["status"] == reason), (instance, reason)
        assert sample.counters["prompt_tokens"] == sum(r["prompt_tokens"] for r in started)
        assert sample.counters["generation_tokens"] == sum(r["generation_tokens"] for r in mine)
        assert sample.counters["preemptions"] == sum(r["preemptions"] for r in mine)
    # the shared prefix is served from the prefix cache after the first requests
    assert any(r["cached_prompt_tokens"] >= 32 for r in rows)
