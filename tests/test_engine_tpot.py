"""Per-request TPOT from traces and from vLLM's histogram mean the same thing (issue 15 item 3).

The simulator records `vllm:request_time_per_output_token_seconds` as vLLM does (one observation per
finished request: decode time / (output tokens − 1), and 0 for a request with one output token) and
sends each request's `llm_request` span, from which the receiver derives TPOT = (e2e − TTFT) /
(output tokens − 1), None below two tokens. On the same traffic:
- with every request at two tokens or more, each quantile from the histogram lies within one bucket of
  the exact quantile of the spans (pool-wide and per instance);
- one-token requests are a 0 in the histogram and have no TPOT in a span; both count them as meeting a
  TPOT objective, so the SLI's good/valid events are the same from either source, while quantiles
  are compared over requests of two tokens or more only (docs/health-and-scaling.md).
"""

from __future__ import annotations

import asyncio
import bisect
import math

import httpx
import pytest
import uvicorn

from monitor.collect.vllm import parse_page
from monitor.config import validate
from monitor.evaluate.windows import add_histograms, fraction_at_or_below, quantile
from monitor.loadgen.runner import LoadRun
from monitor.loadgen.workload import Workload
from monitor.otlp.goodput import LatencyObjective, latency_counts
from monitor.service import create_app
from monitor.sim.fleet import QuietServer, SimFleet
from monitor.sim.params import InstanceParams
from tests.helpers.ports import free_port
from tests.helpers.sim_truth import wait_for_rows

pytestmark = pytest.mark.e2e  # the simulator and the receiver on real ports

QUANTILES = (0.5, 0.9, 0.99)
TPOT_FAMILY = "vllm:request_time_per_output_token_seconds"


def bucket_of(value: float, bounds: tuple[float, ...]) -> int:
    """Index of the bucket (lower, upper] holding `value`."""
    return bisect.bisect_left(bounds, value)


def exact_quantile(values: list[float], q: float) -> float:
    """The nearest-rank quantile: the value at rank ceil(q × n), as a histogram's rank is placed."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def _pages(client: httpx.AsyncClient, urls: list[str]) -> dict[str, object]:
    out = {}
    for url in urls:
        [sample] = parse_page((await client.get(url + "/metrics")).text)
        out[url.split("//", 1)[1]] = sample
    return out


async def test_traces_and_the_histogram_agree_on_per_request_tpot_within_one_bucket(tmp_path):
    truth = tmp_path / "truth.jsonl"
    # three speeds, so per-request TPOT spreads over several of vLLM's buckets (10 ms .. 150 ms)
    params = [InstanceParams(seed=7, speed=1.0), InstanceParams(seed=8, speed=0.35),
              InstanceParams(seed=9, speed=0.12)]
    port = free_port()
    fleet = SimFleet(params, ground_truth=truth, otlp_endpoint=f"http://127.0.0.1:{port}/v1/traces",
                     otlp_service_name="llama")
    urls = fleet.bind()
    config = validate({"pools": [{"name": "llama", "targets": urls}]}).config
    app = create_app(config, store=None)  # the receiver and the API only: nothing scrapes
    monitor = QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None,
                                         log_level="warning", access_log=False))
    served = asyncio.get_running_loop().create_task(monitor.serve())
    try:
        while not monitor.started:
            await asyncio.sleep(0.01)
        await fleet.start()
        async with httpx.AsyncClient(timeout=60) as client:
            run = LoadRun(urls, rate=24, duration_s=3.0, workload=Workload(prompt_tokens=150, output_tokens=16, seed=3))
            await run.run()
            rows = await wait_for_rows(truth, run.sent)
            assert len(rows) == run.sent and all(r["generation_tokens"] >= 2 for r in rows)
            assert await asyncio.to_thread(fleet.spans.force_flush)
            multi = await _pages(client, urls)
            multi_records = list(app.state.service.traces.records("llama"))

            # then one-token requests (a classifier's answers): a 0 in the histogram, no TPOT in a span
            singles = [client.post(url + "/v1/completions", json={"prompt": f"yes or no {i}", "max_tokens": 1})
                       for i in range(4) for url in urls]
            assert all(r.status_code == 200 for r in await asyncio.gather(*singles))
            rows = await wait_for_rows(truth, run.sent + len(singles))
            assert len(rows) == run.sent + len(singles)
            assert await asyncio.to_thread(fleet.spans.force_flush)
            mixed = await _pages(client, urls)
            mixed_records = list(app.state.service.traces.records("llama"))
    finally:
        await fleet.stop()
        monitor.should_exit = True
        await served

    assert len(multi_records) == run.sent and all(r.tpot_s is not None for r in multi_records)
    assert all(s.sources["tpot"] == TPOT_FAMILY for s in multi.values())
    pooled = None
    for instance, sample in multi.items():
        pooled = add_histograms(pooled, sample.histograms["tpot"])
        values = [r.tpot_s for r in multi_records if r.instance == instance]
        _agree(sample.histograms["tpot"], values, instance)
    values = [r.tpot_s for r in multi_records]
    _agree(pooled, values, "pool")
    spread = {bucket_of(v, pooled.bounds) for v in values}
    assert len(spread) >= 3, spread  # the comparison crosses buckets: it means something

    # with one-token requests: the same good/valid events from either source at any boundary
    assert len(mixed_records) == run.sent + len(singles)
    assert sum(1 for r in mixed_records if r.tpot_s is None) == len(singles)
    mixed_pooled = None
    for sample in mixed.values():
        mixed_pooled = add_histograms(mixed_pooled, sample.histograms["tpot"])
    assert mixed_pooled.count == len(mixed_records)
    for threshold in (0.025, 0.05, 0.1):
        from_histogram = fraction_at_or_below(mixed_pooled, threshold)
        good, total = latency_counts(mixed_records, LatencyObjective("tpot", "tpot", threshold))
        assert from_histogram.exact and (from_histogram.good, from_histogram.total) == (good, total), threshold
    # ... while the quantiles move: the zeros pull the histogram's low quantiles down
    assert quantile(0.01, mixed_pooled) < quantile(0.01, pooled)


def _agree(hist, values: list[float], where: str) -> None:
    assert hist.count == len(values), where
    for q in QUANTILES:
        from_histogram = quantile(q, hist)
        exact = exact_quantile(values, q)
        gap = abs(bucket_of(from_histogram, hist.bounds) - bucket_of(exact, hist.bounds))
        assert gap <= 1, f"{where} p{q * 100:g}: histogram {from_histogram:.4f} vs traces {exact:.4f}"
