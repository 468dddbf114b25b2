"""vLLM-shaped /metrics pages for tests, written the way vLLM writes them.

V1 pages come from a prometheus_client registry with vLLM's own metric names, labels and bucket
lists (vllm/v1/metrics/loggers.py, 0.11 style), so HELP/TYPE lines, label order and the `_created`
families are exactly what prometheus_client prints for a real server.
"""

from __future__ import annotations

import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import ALLOWUTF8
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
               40.0, 80.0]
REQUEST_LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                           120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]
FINISHED_REASONS = ("stop", "length", "abort", "error")


class FakeVllmV1:
    """One vLLM V1 server's metrics for one or more model names (one engine each)."""

    def __init__(self, models: tuple[str, ...] = ("meta-llama/Llama-3.1-8B-Instruct",), seed: int = 0,
                 extra_families: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.rng = random.Random(seed)
        self.models = models
        labels = ["model_name", "engine"]
        r = self.registry
        self.running = Gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                             labels, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                             labels, registry=r)
        self.kv = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels, registry=r)
        self.prefix_queries = Counter("vllm:prefix_cache_queries",
                                      "Prefix cache queries, in terms of number of queried tokens.", labels, registry=r)
        self.prefix_hits = Counter("vllm:prefix_cache_hits",
                                   "Prefix cache hits, in terms of number of cached tokens.", labels, registry=r)
        self.preemptions = Counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
                                   labels, registry=r)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Number of generation tokens processed.",
                                         labels, registry=r)
        self.success = Counter("vllm:request_success", "Count of successfully processed requests.",
                               labels + ["finished_reason"], registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              labels, buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                             labels, buckets=ITL_BUCKETS, registry=r)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                             labels, buckets=REQUEST_LATENCY_BUCKETS, registry=r)
        self.queue = Histogram("vllm:request_queue_time_seconds",
                               "Histogram of time spent in WAITING phase for request.", labels,
                               buckets=REQUEST_LATENCY_BUCKETS, registry=r)
        for model in models:
            child = (model, "0")
            for metric in (self.running, self.waiting, self.kv, self.prefix_queries, self.prefix_hits,
                           self.preemptions, self.prompt_tokens, self.generation_tokens, self.ttft, self.itl,
                           self.e2e, self.queue):
                metric.labels(*child)
            for reason in FINISHED_REASONS:
                self.success.labels(model, "0", reason)
        if extra_families:
            http = Counter("http_requests", "Total number of requests by method, status and handler.",
                           ["handler", "method", "status"], registry=r)
            http.labels("/v1/completions", "POST", "2xx").inc(12)
            Gauge("process_resident_memory_bytes", "Resident memory size in bytes.", registry=r).set(1.2e9)

    def finish(self, n: int, *, model: str | None = None, ttft: tuple[float, float] = (0.1, 0.25),
               itl: tuple[float, float] = (0.02, 0.05), output_tokens: int = 20, prompt_tokens: int = 100,
               reason: str = "stop") -> list[float]:
        """Record n finished requests with latencies drawn uniformly from the given ranges; returns the TTFTs."""
        model = model or self.models[0]
        child = (model, "0")
        ttfts = []
        for _ in range(n):
            first = self.rng.uniform(*ttft)
            ttfts.append(first)
            self.ttft.labels(*child).observe(first)
            total = first
            for _ in range(output_tokens - 1):
                gap = self.rng.uniform(*itl)
                self.itl.labels(*child).observe(gap)
                total += gap
            self.e2e.labels(*child).observe(total)
            self.queue.labels(*child).observe(first * 0.1)
            self.prompt_tokens.labels(*child).inc(prompt_tokens)
            self.generation_tokens.labels(*child).inc(output_tokens)
            self.success.labels(model, "0", reason).inc()
        return ttfts

    def set_load(self, running: float, waiting: float, kv: float, model: str | None = None) -> None:
        child = (model or self.models[0], "0")
        self.running.labels(*child).set(running)
        self.waiting.labels(*child).set(waiting)
        self.kv.labels(*child).set(kv)

    def render(self) -> str:
        return generate_latest(self.registry).decode()

    def render_openmetrics(self) -> str:
        """The same values in OpenMetrics 1.0 (`# EOF`, counters typed without `_total`), as vLLM answers
        Prometheus 3's Accept (`escaping=allow-utf-8`: the names keep their colon)."""
        return openmetrics_latest(self.registry, escaping=ALLOWUTF8).decode()


def send_text(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    """One text-format answer; a client that went away meanwhile is no error of the server's."""
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass


class PageServer:
    """A loopback HTTP server whose answer per path comes from `handler(path) -> (status, body)`.

    A handler may block (a hung target) or return garbage; the server never checks.
    """

    def __init__(self, handler: Callable[[str], tuple[int, bytes]]) -> None:
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                status, body = handler(self.path)
                send_text(self, status, body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        outer.hits = 0

    def __enter__(self) -> PageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ClockedVllm:
    """A V1 server whose counters advance with wall-clock time: `rps` requests a second finish, each
    with 10 generated tokens and a TTFT drawn uniformly from `ttft`."""

    def __init__(self, rps: float, ttft: tuple[float, float], kv: float, waiting: float, seed: int) -> None:
        """`ttft` may be changed while it runs (a latency fault)."""
        self.fake = FakeVllmV1(seed=seed)
        self.fake.set_load(running=4, waiting=waiting, kv=kv)
        self.rps, self.ttft = rps, ttft
        self.started = time.monotonic()
        self.done = 0
        self.lock = threading.Lock()

    def __call__(self, path: str) -> tuple[int, bytes]:
        if path == "/health":
            return 200, b""
        with self.lock:
            due = int((time.monotonic() - self.started) * self.rps)
            if due > self.done:
                self.fake.finish(due - self.done, ttft=self.ttft, output_tokens=10)
                self.done = due
            return 200, self.fake.render().encode()


class FaultableVllm:
    """A V1 server finishing `rps` requests a second of wall-clock time; a share `error_ratio` of them
    finish with reason `error`. Requests are accounted up to the moment the ratio changes, so the
    fault's onset is exact to the request."""

    def __init__(self, seed: int, rps: float = 20.0) -> None:
        self.rps = rps
        self.fake = FakeVllmV1(seed=seed, extra_families=False)
        self.fake.set_load(running=4, waiting=0, kv=0.3)
        self.error_ratio = 0.0
        self.paused = False
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self.carry = self.carry_bad = 0.0
        self.finished = self.errors = 0

    def _advance(self) -> None:
        now = time.monotonic()
        due = 0.0 if self.paused else (now - self.last) * self.rps + self.carry
        self.last = now
        n = int(due)
        self.carry = due - n
        bad_due = n * self.error_ratio + self.carry_bad  # whole requests: the fractions carry over
        bad = int(bad_due)
        self.carry_bad = bad_due - bad
        if n - bad:
            self.fake.finish(n - bad, output_tokens=2)
        if bad:
            self.fake.finish(bad, output_tokens=2, reason="error")
        self.finished += n
        self.errors += bad

    def set(self, *, error_ratio: float | None = None, paused: bool | None = None) -> None:
        with self.lock:
            self._advance()
            if error_ratio is not None:
                self.error_ratio = error_ratio
            if paused is not None:
                self.paused = paused

    def __call__(self, path: str) -> tuple[int, bytes]:
        if path == "/health":
            return 200, b""
        with self.lock:
            self._advance()
            return 200, self.fake.render().encode()
