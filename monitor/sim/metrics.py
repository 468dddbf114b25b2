"""The /metrics page of one simulated instance, as vLLM prints it (docs/metrics.md).

Each instance owns a prometheus_client registry whose metrics are declared exactly as vLLM declares
them (names, HELP text, label names, buckets), so the text exposition — `_total` suffixes, sorted
label names, `_created` families, float formatting — comes out byte-for-byte in vLLM's shape.

- ``latest`` (the default) is vLLM 0.33's page as its source code declares it: everything of
  ``v1`` plus `vllm:num_requests_waiting_by_reason{reason}` (capacity / deferred, summing to
  `num_requests_waiting`), `vllm:admission_rejections_total{model_name,reason}` (no `engine`),
  `vllm:request_num_preemptions`, `vllm:prompt_tokens_cached_by_source_total`, the `repetition`
  finish reason, and without `vllm:prompt_tokens_recomputed` (gone after 0.17).
- ``v1`` is the V1 engine of vLLM 0.16 (single API server): labels `model_name` and `engine="0"`,
  every counter and histogram child created at start-up (so `finished_reason="error"` reads 0 before
  any traffic), `_created` families after every counter and histogram.
- ``v0`` is the V0 engine of vLLM 0.8.5 (`VLLM_USE_V1=0`, single-process page): label `model_name`
  only, `vllm:gpu_cache_usage_perc` and `vllm:time_per_output_token_seconds`, no `_created` families
  (V0 calls `disable_created_metrics()`, which is process-global, so here they are filtered out per
  registry instead), and a `finished_reason` child appears only once a request finished that way.
  V0 had no `error` finish reason: requests failed by an injected error are not counted on V0 pages.

Speculative decoding families (`vllm:spec_decode_*`, V1 and latest) appear once the instance decodes
speculatively, as they appear only with `--speculative-config`. Families that carry samples only with
options the simulator does not model (KV connectors, LoRA on V1, MFU) are left out, as they are from
a default `vllm serve` page. `vllm:request_time_per_output_token_seconds` gets one observation per
finished request, 0 for a request with at most one output token, as vLLM records it (`stats.py`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from monitor.sim.params import SLEEP_STATES
from monitor.sim.stats import FinishedStats, StepStats

MetricsVersion = Literal["latest", "v1", "v0"]
METRICS_VERSIONS: tuple[str, ...] = ("latest", "v1", "v0")
VLLM_VERSION = {"latest": "0.33.0", "v1": "0.16.0", "v0": "0.8.5"}  # what /version says
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Bucket lists of vLLM >= 0.8.5 (identical in V0 and V1 from then on).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                           120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
N_BUCKETS = (1, 2, 5, 10, 20)
V1_FINISH_REASONS = ("stop", "length", "abort", "error")  # FinishReason of vLLM 0.13-0.16, in enum order
LATEST_FINISH_REASONS = (*V1_FINISH_REASONS, "repetition")  # 0.17+
WAITING_REASONS = ("capacity", "deferred")
REJECTION_REASONS = ("max_num_queued_reqs", "max_num_queued_tokens")
CACHED_SOURCES = ("device", "host", "p2p", "disk", "external_unspecified")
PREEMPTION_BUCKETS = (1, 2, 3, 4, 5, 10, 20)
V0_FINISH_REASONS = ("stop", "length", "abort")
PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")


def build_1_2_5_buckets(max_value: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to max_value, as vLLM builds its token-count buckets."""
    buckets: list[int] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return buckets
            buckets.append(value)
        exponent += 1


class _WithoutCreated:
    """A registry view without `_created` samples: V0 pages have none, and the global switch
    `prometheus_client.disable_created_metrics()` would strip them from V1 instances in the same process."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            if family.type in ("counter", "histogram", "summary", "gaugehistogram"):
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


class VllmMetrics:
    """Declares one instance's families and turns engine events into observations."""

    def __init__(self, version: MetricsVersion, model_name: str, max_model_len: int,
                 cache_info: dict[str, str]) -> None:
        if version not in METRICS_VERSIONS:
            raise ValueError(f"unknown metrics version {version!r} (use {', '.join(METRICS_VERSIONS)})")
        self.version = version
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.cache_info = dict(cache_info)
        self.latest = version == "latest"
        self.spec: dict[str, Any] | None = None  # spec decode families, declared on first use
        self.sleep_children: dict[str, Any] = {}
        self.waiting_by_reason: dict[str, Any] = {}
        self.rejections: dict[str, Any] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        # A single-process vLLM page starts with the default collectors of prometheus_client.
        GCCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        ProcessCollector(registry=self.registry)
        token_buckets = build_1_2_5_buckets(max_model_len)
        if version in ("v1", "latest"):
            self._declare_v1(model_name, token_buckets, cache_info)
            self._exposed: CollectorRegistry | _WithoutCreated = self.registry
        else:
            self._declare_v0(model_name, token_buckets, cache_info)
            self._exposed = _WithoutCreated(self.registry)

    # --- declarations -------------------------------------------------------------------------

    def with_version(self, version: MetricsVersion) -> VllmMetrics:
        """A fresh page of the same instance under another version (counters start again, as after
        the restart that upgrading vLLM takes)."""
        return VllmMetrics(version, self.model_name, self.max_model_len, self.cache_info)

    def _declare_v1(self, model: str, token_buckets: list[int], cache_info: dict[str, str]) -> None:
        """V1 families; `self.latest` adds and drops what vLLM changed after 0.16."""
        r, labels, values = self.registry, ["model_name", "engine"], (model, "0")

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labelnames=labels, registry=r).labels(*values)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labelnames=labels, registry=r, multiprocess_mode="mostrecent").labels(*values)

        def histogram(name: str, doc: str, buckets: Iterable[float]) -> Histogram:
            return Histogram(name, doc, labelnames=labels, buckets=list(buckets), registry=r).labels(*values)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        if self.latest:
            by_reason = Gauge("vllm:num_requests_waiting_by_reason",
                              "Number of waiting requests by reason. Reason labels: 'capacity' = waiting for "
                              "scheduling capacity; 'deferred' = deferred by transient constraints (LoRA budget, "
                              "KV transfer, blocked status). Sum of all reasons equals vllm:num_requests_waiting.",
                              labelnames=labels + ["reason"], registry=r, multiprocess_mode="mostrecent")
            self.waiting_by_reason = {w: by_reason.labels(model, "0", w) for w in WAITING_REASONS}
        sleep = Gauge("vllm:engine_sleep_state",
                      "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
                      "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
                      labelnames=labels + ["sleep_state"], registry=r, multiprocess_mode="mostrecent")
        for state in SLEEP_STATES:
            self.sleep_children[state] = sleep.labels(model_name=model, engine="0", sleep_state=state)
        self.set_sleep(0)
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.prefix_queries = counter("vllm:prefix_cache_queries",
                                      "Prefix cache queries, in terms of number of queried tokens.")
        self.prefix_hits = counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.")
        counter("vllm:external_prefix_cache_queries", "External prefix cache queries from KV connector "
                "cross-instance cache sharing, in terms of number of queried tokens.")
        counter("vllm:external_prefix_cache_hits", "External prefix cache hits from KV connector "
                "cross-instance cache sharing, in terms of number of cached tokens.")
        counter("vllm:mm_cache_queries", "Multi-modal cache queries, in terms of number of queried items.")
        counter("vllm:mm_cache_hits", "Multi-modal cache hits, in terms of number of cached items.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        by_source = Counter("vllm:prompt_tokens_by_source", "Number of prompt tokens by source.",
                            labelnames=labels + ["source"], registry=r)
        self.prompt_by_source = {s: by_source.labels(model, "0", s) for s in PROMPT_SOURCES}
        self.prompt_cached = counter("vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external).")
        if self.latest:
            cached_by_source = Counter("vllm:prompt_tokens_cached_by_source",
                                       "Number of cached prompt tokens by source.",
                                       labelnames=labels + ["source"], registry=r)
            self.cached_by_source = {s: cached_by_source.labels(model, "0", s) for s in CACHED_SOURCES}
        else:
            counter("vllm:prompt_tokens_recomputed", "Number of cached tokens recomputed for forward pass.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        success = Counter("vllm:request_success", "Count of successfully processed requests.",
                          labelnames=labels + ["finished_reason"], registry=r)
        reasons = LATEST_FINISH_REASONS if self.latest else V1_FINISH_REASONS
        self.success = {reason: success.labels(model, "0", reason) for reason in reasons}
        if self.latest:
            rejections = Counter("vllm:admission_rejections", "Number of requests rejected at admission "
                                 "because a queue limit (--max-num-queued-reqs / --max-num-queued-tokens) was reached.",
                                 labelnames=["model_name", "reason"], registry=r)
            self.rejections = {reason: rejections.labels(model, reason) for reason in REJECTION_REASONS}
        self.req_prompt_tokens = histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.",
                                           token_buckets)
        self.req_generation_tokens = histogram("vllm:request_generation_tokens",
                                               "Number of generation tokens processed.", token_buckets)
        self.iteration_tokens = histogram("vllm:iteration_tokens_total",
                                          "Histogram of number of tokens per engine_step.", ITERATION_TOKEN_BUCKETS)
        self._declare_request_params(histogram, token_buckets)
        self.ttft = histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              TTFT_BUCKETS)
        self.itl = histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                             TPOT_BUCKETS)
        self.request_tpot = histogram("vllm:request_time_per_output_token_seconds",
                                      "Histogram of time_per_output_token_seconds per request.", TPOT_BUCKETS)
        self._declare_request_latencies(histogram, "Histogram of e2e request latency in seconds.")
        self.prefill_kv_computed = histogram("vllm:request_prefill_kv_computed_tokens",
                                             "Histogram of new KV tokens computed during prefill "
                                             "(excluding cached tokens).", token_buckets)
        if self.latest:
            self.num_preemptions_hist = histogram("vllm:request_num_preemptions",
                                                  "Histogram of the number of preemptions per finished request.",
                                                  PREEMPTION_BUCKETS)
        info = Gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
                     labelnames=[*cache_info, "engine"], registry=r, multiprocess_mode="mostrecent")
        info.labels(**cache_info, engine="0").set(1)

    def _declare_v0(self, model: str, token_buckets: list[int], cache_info: dict[str, str]) -> None:
        r, labels = self.registry, ["model_name"]

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labelnames=labels, registry=r).labels(model)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labelnames=labels, registry=r, multiprocess_mode="sum").labels(model)

        def histogram(name: str, doc: str, buckets: Iterable[float]) -> Histogram:
            return Histogram(name, doc, labelnames=labels, buckets=list(buckets), registry=r).labels(model)

        self.running = gauge("vllm:num_requests_running", "Number of requests currently running on GPU.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        lora = Gauge("vllm:lora_requests_info", "Running stats on lora requests.",
                     labelnames=["running_lora_adapters", "max_lora", "waiting_lora_adapters"], registry=r,
                     multiprocess_mode="livemostrecent")
        self.lora_info = lora.labels(running_lora_adapters="", max_lora="0", waiting_lora_adapters="")
        self.lora_info.set_to_current_time()
        self.kv_usage = gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.")
        self.preemptions = counter("vllm:num_preemptions_total", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens_total", "Number of generation tokens processed.")
        self.iteration_tokens = histogram("vllm:iteration_tokens_total",
                                          "Histogram of number of tokens per engine_step.", ITERATION_TOKEN_BUCKETS)
        self.ttft = histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              TTFT_BUCKETS)
        self.itl = histogram("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.",
                             TPOT_BUCKETS)
        self._declare_request_latencies(histogram, "Histogram of end to end request latency in seconds.")
        self.req_prompt_tokens = histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.",
                                           token_buckets)
        self.req_generation_tokens = histogram("vllm:request_generation_tokens",
                                               "Number of generation tokens processed.", token_buckets)
        self._declare_request_params(histogram, token_buckets)
        # children appear lazily, when the first request finishes with a reason (V0 behaviour)
        self._v0_success = Counter("vllm:request_success_total", "Count of successfully processed requests.",
                                   labelnames=labels + ["finished_reason"], registry=r)
        self.success = {}
        # registered when the engine reports its cache config, after the stat logger's metrics
        info = Gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
                     labelnames=list(cache_info), registry=r, multiprocess_mode="mostrecent")
        info.labels(**cache_info).set(1)

    def _declare_request_params(self, histogram, token_buckets: list[int]) -> None:
        self.max_num_generation = histogram("vllm:request_max_num_generation_tokens",
                                            "Histogram of maximum number of requested generation tokens.",
                                            token_buckets)
        self.params_n = histogram("vllm:request_params_n", "Histogram of the n request parameter.", N_BUCKETS)
        self.params_max_tokens = histogram("vllm:request_params_max_tokens",
                                           "Histogram of the max_tokens request parameter.", token_buckets)

    def _declare_request_latencies(self, histogram, e2e_help: str) -> None:
        self.e2e = histogram("vllm:e2e_request_latency_seconds", e2e_help, REQUEST_LATENCY_BUCKETS)
        self.queue = histogram("vllm:request_queue_time_seconds",
                               "Histogram of time spent in WAITING phase for request.", REQUEST_LATENCY_BUCKETS)
        self.inference = histogram("vllm:request_inference_time_seconds",
                                   "Histogram of time spent in RUNNING phase for request.", REQUEST_LATENCY_BUCKETS)
        self.prefill = histogram("vllm:request_prefill_time_seconds",
                                 "Histogram of time spent in PREFILL phase for request.", REQUEST_LATENCY_BUCKETS)
        self.decode = histogram("vllm:request_decode_time_seconds",
                                "Histogram of time spent in DECODE phase for request.", REQUEST_LATENCY_BUCKETS)

    # --- events -------------------------------------------------------------------------------

    def bind_scheduler(self, running: Callable[[], float], waiting: Callable[[], float],
                       kv_cache_usage: Callable[[], float], deferred: Callable[[], float] = lambda: 0.0) -> None:
        """Read the scheduler gauges from the engine when scraped: vLLM sets them every step, which
        here would be the largest per-step cost, for a value only a scrape ever looks at. `waiting`
        counts every waiting request, `deferred` those of them not schedulable yet (a KV transfer)."""
        self.running.set_function(running)
        self.waiting.set_function(waiting)
        self.kv_usage.set_function(kv_cache_usage)
        if self.waiting_by_reason:
            self.waiting_by_reason["capacity"].set_function(lambda: waiting() - deferred())
            self.waiting_by_reason["deferred"].set_function(deferred)

    def set_sleep(self, level: int) -> None:
        """`vllm:engine_sleep_state` as vLLM's `record_sleep_state`: 1 on the current state, 0 elsewhere."""
        for k, state in enumerate(SLEEP_STATES):
            if state in self.sleep_children:
                self.sleep_children[state].set(1 if k == level else 0)

    def rejected(self, reason: str = "max_num_queued_reqs") -> None:
        """A request refused at admission (503): counted on pages that have the family (latest)."""
        if reason in self.rejections:
            self.rejections[reason].inc()

    def _spec_families(self) -> dict[str, Any]:
        if self.spec is None:
            r, labels, values = self.registry, ["model_name", "engine"], (self.model_name, "0")
            self.spec = {
                "drafts": Counter("vllm:spec_decode_num_drafts", "Number of spec decoding drafts.",
                                  labelnames=labels, registry=r).labels(*values),
                "draft_tokens": Counter("vllm:spec_decode_num_draft_tokens", "Number of draft tokens.",
                                        labelnames=labels, registry=r).labels(*values),
                "accepted": Counter("vllm:spec_decode_num_accepted_tokens", "Number of accepted tokens.",
                                    labelnames=labels, registry=r).labels(*values),
                "per_pos": Counter("vllm:spec_decode_num_accepted_tokens_per_pos",
                                   "Accepted tokens per draft position.", labelnames=labels + ["position"],
                                   registry=r),
                "pos": {},
            }
        return self.spec

    def step(self, s: StepStats) -> None:
        if s.preemptions:
            self.preemptions.inc(s.preemptions)
        if s.prompt_tokens:
            self.prompt_tokens.inc(s.prompt_tokens)
        if s.generation_tokens:
            self.generation_tokens.inc(s.generation_tokens)
        self.iteration_tokens.observe(s.prompt_tokens + s.generation_tokens)
        for ttft in s.ttfts:
            self.ttft.observe(ttft)
        observe_itl = self.itl.observe
        for itl in s.itls:
            observe_itl(itl)
        if self.version != "v0":
            if s.prompt_tokens:
                self.prompt_by_source["local_compute"].inc(s.prompt_tokens - s.cached_prompt_tokens)
                self.prompt_by_source["local_cache_hit"].inc(s.cached_prompt_tokens)
                self.prompt_cached.inc(s.cached_prompt_tokens)
                if self.latest and s.cached_prompt_tokens:
                    self.cached_by_source["device"].inc(s.cached_prompt_tokens)
            if s.spec_drafts:
                spec = self._spec_families()
                spec["drafts"].inc(s.spec_drafts)
                spec["draft_tokens"].inc(s.spec_draft_tokens)
                spec["accepted"].inc(sum(s.spec_accepted_per_pos))
                for pos, n in enumerate(s.spec_accepted_per_pos):
                    child = spec["pos"].get(pos)
                    if child is None:
                        child = spec["pos"][pos] = spec["per_pos"].labels(self.model_name, "0", str(pos))
                    child.inc(n)
            if s.prefix_queries:
                self.prefix_queries.inc(s.prefix_queries)
                self.prefix_hits.inc(s.prefix_hits)
        else:
            self.lora_info.set_to_current_time()

    def finished(self, f: FinishedStats) -> None:
        """Count a finished request (on V0 pages, `error` requests are not counted: V0 had no such reason)."""
        if self.version == "v0":
            if f.finish_reason not in V0_FINISH_REASONS:
                return
            if f.finish_reason not in self.success:
                self.success[f.finish_reason] = self._v0_success.labels(self.model_name, f.finish_reason)
        self.success[f.finish_reason].inc()
        self.e2e.observe(f.e2e_latency)
        self.queue.observe(f.queued_time)
        self.prefill.observe(f.prefill_time)
        self.inference.observe(f.inference_time)
        self.decode.observe(f.decode_time)
        self.req_prompt_tokens.observe(f.prompt_tokens)
        self.req_generation_tokens.observe(f.generation_tokens)
        self.params_n.observe(1)
        if f.max_tokens_param:
            self.max_num_generation.observe(f.max_tokens_param)
            self.params_max_tokens.observe(f.max_tokens_param)
        if self.version != "v0":
            self.prefill_kv_computed.observe(f.computed_prompt_tokens)
            # vLLM observes every finished request, 0 when it has no interval (at most one output token)
            self.request_tpot.observe(f.mean_time_per_output_token or 0.0)
            if self.latest:
                self.num_preemptions_hist.observe(f.preemptions)

    def render(self) -> bytes:
        return generate_latest(self._exposed)
