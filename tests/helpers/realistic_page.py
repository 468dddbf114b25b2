"""A realistic vLLM V1 /metrics page (~55 KB): the serving families plus the request-size,
phase-time and iteration histograms, python/process and prometheus_fastapi_instrumentator's http
families, as a 0.11 single-process server prints them."""

from __future__ import annotations

import random
import sys

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.openmetrics.exposition import ALLOWUTF8
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from tests.helpers.vllm_pages import REQUEST_LATENCY_BUCKETS, FakeVllmV1


def build(seed: int = 0, requests: int = 500) -> str:
    """The page in the text format, as a vLLM server answers a text-format request."""
    return generate_latest(build_registry(seed, requests)).decode()


def build_openmetrics(seed: int = 0, requests: int = 500) -> str:
    """The same page (same seed, same values) in OpenMetrics 1.0, as vLLM answers Prometheus 3's Accept
    (`escaping=allow-utf-8`: the names keep their colon)."""
    return openmetrics_latest(build_registry(seed, requests), escaping=ALLOWUTF8).decode()


def build_registry(seed: int = 0, requests: int = 500) -> CollectorRegistry:
    return build_live(seed, requests).registry


def build_live(seed: int = 0, requests: int = 500) -> FakeVllmV1:
    """The page's server, to be advanced (`finish`, `set_load`) and rendered again: a page with traffic."""
    fake = FakeVllmV1(seed=seed, extra_families=False)
    fake.finish(requests, ttft=(0.05, 0.6), output_tokens=30)
    fake.set_load(12, 3, 0.61)
    r: CollectorRegistry = fake.registry
    labels = ["model_name", "engine"]
    child = (fake.models[0], "0")
    rng = random.Random(seed)
    size_buckets = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 131072]
    for name, doc in (("vllm:request_prompt_tokens", "Number of prefill tokens processed."),
                      ("vllm:request_generation_tokens", "Number of generation tokens processed."),
                      ("vllm:request_max_num_generation_tokens", "Histogram of maximum number of requested generation tokens."),
                      ("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter."),
                      ("vllm:request_prefill_kv_computed_tokens", "Histogram of new KV tokens computed during prefill.")):
        h = Histogram(name, doc, labels, buckets=size_buckets, registry=r)
        for _ in range(200):
            h.labels(*child).observe(rng.randint(1, 4000))
    Histogram("vllm:request_params_n", "Histogram of the n request parameter.", labels, buckets=[1, 2, 5, 10, 20],
              registry=r).labels(*child).observe(1)
    it = Histogram("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", labels,
                   buckets=[1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384], registry=r)
    it.labels(*child).observe(300)
    for phase in ("inference", "prefill", "decode"):
        Histogram(f"vllm:request_{phase}_time_seconds", f"Histogram of time spent in {phase.upper()} phase for request.",
                  labels, buckets=REQUEST_LATENCY_BUCKETS, registry=r).labels(*child).observe(rng.random() * 3)
    Histogram("vllm:request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds per request.",
              labels, buckets=[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                               20.0, 40.0, 80.0], registry=r).labels(*child).observe(0.03)
    Gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
          ["block_size", "cache_dtype", "enable_prefix_caching", "gpu_memory_utilization", "num_gpu_blocks", "engine"],
          registry=r).labels("16", "auto", "True", "0.9", "27000", "0").set(1)
    http = Counter("http_requests", "Total number of requests by method, status and handler.",
                   ["handler", "method", "status"], registry=r)
    dur = Histogram("http_request_duration_seconds", "Latency with only few buckets by handler.",
                    ["handler", "method"], buckets=[0.1, 0.5, 1.0], registry=r)
    highr = Histogram("http_request_duration_highr_seconds", "Latency with many buckets but no API specific labels.",
                      buckets=[0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0,
                               4.5, 5.0, 7.5, 10.0, 30.0, 60.0], registry=r)
    req_size = Summary("http_request_size_bytes", "Content length of incoming requests by handler.", ["handler"], registry=r)
    resp_size = Summary("http_response_size_bytes", "Content length of outgoing responses by handler.", ["handler"], registry=r)
    for handler in ("/v1/completions", "/v1/chat/completions", "/v1/models", "/tokenize", "/v1/embeddings"):
        for status in ("2xx", "4xx", "5xx"):
            http.labels(handler, "POST", status).inc(rng.randint(0, 1000))
        dur.labels(handler, "POST").observe(0.3)
        req_size.labels(handler).observe(1000)
        resp_size.labels(handler).observe(5000)
    highr.observe(0.5)
    GCCollector(registry=r)
    PlatformCollector(registry=r)
    ProcessCollector(registry=r)
    return fake


if __name__ == "__main__":
    sys.stdout.write(build())
