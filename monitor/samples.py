"""Plain data passed from collection to evaluation: what a server reported, and how a scrape went.

Kept free of I/O and of any stage's logic so that every stage (and its tests) can build them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


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

    histograms: ttft, tpot, e2e, queue. counters: prompt_tokens, generation_tokens, preemptions,
    prefix_cache_queries, prefix_cache_hits, admission_rejections. gauges: running, waiting,
    kv_cache_usage, prefix_cache_hit_rate. finished: finished_reason -> count.
    A key is absent when the server does not expose it.
    """

    model_name: str
    histograms: Mapping[str, Histogram] = field(default_factory=dict)
    counters: Mapping[str, float] = field(default_factory=dict)
    gauges: Mapping[str, float] = field(default_factory=dict)
    finished: Mapping[str, float] = field(default_factory=dict)


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

    @property
    def ok(self) -> bool:
        return self.error is None
