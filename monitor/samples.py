"""Plain data passed from collection to evaluation: what a server reported, and how a scrape went.

Kept free of I/O and of any stage's logic so that every stage (and its tests) can build them by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

NON_FINITE = "non_finite"  # BadSample.kind: NaN or ±Inf where a number is judged
DUPLICATE = "duplicate"  # BadSample.kind: a series repeated on one page with another value
BAD_SAMPLE_KINDS = (NON_FINITE, DUPLICATE)


@dataclass(frozen=True, slots=True)
class Histogram:
    """A classic Prometheus histogram: cumulative counts per upper bound, the last bound +Inf."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    sum: float
    count: float


@dataclass(frozen=True, slots=True)
class ModelSample:
    """What one vLLM server reported for one `model_name` at one moment (cumulative values).

    A key is absent when the server does not expose it (an old vLLM, or an option not enabled), so
    "absent" and "zero" stay different things. Units are vLLM's: seconds, tokens, requests.

    histograms (seconds):
      ttft; tpot — per request (`vllm:request_time_per_output_token_seconds`, one observation per
      finished request, vLLM 0.11+) where the page has it, else the per-token interval of older pages;
      itl — the per-token (per output event) interval (`inter_token_latency_seconds`, or
      `time_per_output_token_seconds` before 0.10.2); e2e; queue.
    counters (cumulative):
      prompt_tokens, generation_tokens, preemptions, prefix_cache_queries, prefix_cache_hits (tokens);
      admission_rejections (requests refused before queueing, all reasons) and by reason
      admission_rejections_queued_reqs / _queued_tokens / _other (`--max-num-queued-reqs` / `-tokens`);
      engine_iterations — engine steps (`vllm:iteration_tokens_total_count`): the EngineCore's
      heartbeat, still while the engine is dead even if the API server answers;
      prompt_tokens_local_compute / _local_cache_hit / _external_kv_transfer (tokens, by source,
      0.16+) and prompt_tokens_cached (local + external cache hits): the prefix-cache hit rate is
      local_cache_hit / (local_compute + local_cache_hit + external_kv_transfer);
      prefill_kv_computed_tokens / prefill_kv_computed_requests (sum and count of
      `vllm:request_prefill_kv_computed_tokens`: prompt tokens really computed, per finished request);
      spec_decode_drafts, spec_decode_draft_tokens, spec_decode_accepted_tokens (speculative decoding:
      acceptance rate = accepted / draft tokens; mean acceptance length = 1 + accepted / drafts).
    gauges (latest value):
      running, waiting (requests); waiting_capacity — waiting for scheduling capacity (KV blocks,
      batch slots: more replicas help), waiting_deferred — every other reason (KV transfer, LoRA
      budget, blocked: more replicas do not help), both from `vllm:num_requests_waiting_by_reason`;
      kv_cache_usage (0–1); prefix_cache_hit_rate (V0 only, 0–1);
      engines_asleep (engines whose `vllm:engine_sleep_state{sleep_state="awake"}` is 0) and
      sleep_level (0 awake, 1 weights offloaded, 2 all discarded; the deepest over engines);
      kv_gpu_blocks and kv_capacity_tokens (= num_gpu_blocks × block_size, summed over engines,
      from `vllm:cache_config_info`).
    finished: finished_reason -> count.
    sources: key -> the exposed family it was read from, for every histogram and for every counter
      or gauge with more than one spelling (e.g. tpot -> vllm:request_time_per_output_token_seconds).
    refused: keys left out of this sample because a series they are read from held NaN or ±Inf
      (histogram, counter and gauge keys as above, and `finished` for the finished counts): the
      value is not known this time, which is neither zero nor a reset, so the windows step over it.

    Every number in a sample is finite: the normaliser refuses the rest (monitor/collect/vllm.py).
    """

    model_name: str
    histograms: Mapping[str, Histogram] = field(default_factory=dict)
    counters: Mapping[str, float] = field(default_factory=dict)
    gauges: Mapping[str, float] = field(default_factory=dict)
    finished: Mapping[str, float] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    refused: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class BadSample:
    """One series of a page that was not used: `kind` NON_FINITE (its value, or its sum over engines,
    is NaN or ±Inf) or DUPLICATE (a second sample of a series already read, with another value:
    dropped, the first kept, as Prometheus drops it with "duplicate sample for timestamp")."""

    series: str  # the sample name; with its labels for a duplicate
    kind: str
    value: float

    def __str__(self) -> str:
        if self.kind == DUPLICATE:
            return f"duplicate sample: {self.series} = {format_number(self.value)} dropped (the first one kept)"
        return f"bad sample: {self.series} = {format_number(self.value)}"


def format_number(value: float) -> str:
    """A sample value as the exposition formats spell it (NaN, +Inf, -Inf, else Python's repr)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    """One scrape of one target. `error` is None on success, else the reason shown to users."""

    pool: str
    instance: str  # host:port
    url: str
    started_at: float  # unix seconds
    duration_s: float
    models: tuple[ModelSample, ...] = ()
    error: str | None = None
    error_kind: str | None = None  # down | timeout | http_status | oversized | malformed | not_vllm
    health_status: int | None = None  # HTTP status of /health; None when not probed or unanswered
    health_error: str | None = None
    body_bytes: int = 0
    bad_samples: tuple[BadSample, ...] = ()  # series of the page not used (NaN/±Inf, duplicates)

    @property
    def ok(self) -> bool:
        return self.error is None
