"""The simulator's /metrics pages: the spine's collector reads them, and they have vLLM's shape
(names, HELP text, label order, buckets, `_created` families on V1 and none on V0)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.collect.vllm import BUCKETS, parse_page
from monitor.sim.fleet import running_fleet
from monitor.sim.params import InstanceParams

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port


FAST = InstanceParams(time_scale=0.2, seed=1)
MODEL = FAST.model


async def _complete(client: httpx.AsyncClient, url: str, n: int, max_tokens: int = 5) -> None:
    for i in range(n):
        r = await client.post(url + "/v1/completions",
                              json={"prompt": f"request {i} " + "word " * 40, "max_tokens": max_tokens,
                                    "ignore_eos": True})
        assert r.status_code == 200, r.text


def _families(page: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(page)}


async def test_v1_page_parses_with_the_collector_and_has_v1_shape():
    async with running_fleet([FAST], version="v1") as fleet:
        url = fleet.urls[0]
        async with httpx.AsyncClient(timeout=10) as client:
            before = (await client.get(url + "/metrics")).text
            await _complete(client, url, 3)
            response = await client.get(url + "/metrics")
    page = response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")

    # V1 creates every finished_reason child at start-up, `error` included
    assert parse_page(before)[0].finished == {"stop": 0.0, "length": 0.0, "abort": 0.0, "error": 0.0}

    [sample] = parse_page(page)
    assert sample.model_name == MODEL
    assert set(sample.histograms) == {"ttft", "tpot", "itl", "e2e", "queue"}
    for key, hist in sample.histograms.items():
        assert hist.bounds[:-1] == BUCKETS[key], key
    assert sample.histograms["ttft"].count == 3
    assert sample.histograms["itl"].count == 3 * 4  # one inter-token interval per token after the first
    assert sample.histograms["tpot"].count == 3  # one per finished request (0.11+)
    assert sample.sources["tpot"] == "vllm:request_time_per_output_token_seconds"
    assert sample.counters["generation_tokens"] == 15
    assert sample.finished["length"] == 3
    assert {"running", "waiting", "kv_cache_usage"} <= set(sample.gauges)

    assert "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage." in page
    assert "# HELP vllm:request_success_total Count of successfully processed requests." in page
    assert "# TYPE vllm:request_success_created gauge" in page
    assert "# TYPE vllm:time_to_first_token_seconds_created gauge" in page
    assert "# HELP vllm:inter_token_latency_seconds Histogram of inter-token latency in seconds." in page
    assert "vllm:gpu_cache_usage_perc" not in page  # removed from V1 in 0.12
    # label names sorted in the exposition: engine, le, model_name
    assert f'vllm:time_to_first_token_seconds_bucket{{engine="0",le="0.001",model_name="{MODEL}"}}' in page
    assert f'vllm:request_success_total{{engine="0",finished_reason="error",model_name="{MODEL}"}} 0.0' in page
    assert page.startswith("# HELP python_gc_objects_collected_total")

    fam = _families(page)
    iteration = {s.name: s.value for s in fam["vllm:iteration_tokens_total"].samples}
    prompt = fam["vllm:prompt_tokens"].samples[0].value
    generation = fam["vllm:generation_tokens"].samples[0].value
    assert iteration["vllm:iteration_tokens_total_sum"] == prompt + generation
    by_source = {s.labels["source"]: s.value for s in fam["vllm:prompt_tokens_by_source"].samples
                 if s.name.endswith("_total")}
    assert by_source["local_compute"] + by_source["local_cache_hit"] == prompt


async def test_v0_page_parses_with_the_collector_and_has_v0_shape():
    async with running_fleet([FAST], version="v0") as fleet:
        url = fleet.urls[0]
        async with httpx.AsyncClient(timeout=10) as client:
            before = (await client.get(url + "/metrics")).text
            await _complete(client, url, 2)
            await client.post(url + "/sim/faults", json={"error_rate": 1.0})
            failed = await client.post(url + "/v1/completions", json={"prompt": "x y z", "max_tokens": 3})
            page = (await client.get(url + "/metrics")).text

    assert failed.status_code == 500
    # V0 creates a finished_reason child only when a request finished that way, and has no `error` reason
    assert parse_page(before)[0].finished == {}
    [sample] = parse_page(page)
    assert sample.finished == {"length": 2.0}
    assert set(sample.histograms) == {"ttft", "tpot", "itl", "e2e", "queue"}
    assert sample.sources["tpot"] == sample.sources["itl"] == "vllm:time_per_output_token_seconds"
    assert sample.histograms["tpot"].bounds[:-1] == BUCKETS["tpot"]
    assert sample.histograms["ttft"].count == 2
    assert "kv_cache_usage" in sample.gauges

    assert "_created" not in page
    assert 'engine="' not in page
    assert "# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage." in page
    assert "# HELP vllm:num_requests_running Number of requests currently running on GPU." in page
    assert "# TYPE vllm:time_per_output_token_seconds histogram" in page
    assert "vllm:kv_cache_usage_perc" not in page and "vllm:inter_token_latency_seconds" not in page
    assert f'vllm:request_success_total{{finished_reason="length",model_name="{MODEL}"}} 2.0' in page
    assert f'vllm:e2e_request_latency_seconds_bucket{{le="7680.0",model_name="{MODEL}"}} 2.0' in page
