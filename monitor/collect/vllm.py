"""vLLM's /metrics page → one typed sample per `model_name`.

vLLM renamed metrics between V0 and V1 (see shared/reference/vllm-metrics.md); everything downstream
works on the fields below, so a fleet mixing versions is evaluated the same way. Each field lists its
source names in order of preference: the newer name wins where a server exposes both (0.10.2–0.11.x
expose `time_per_output_token_seconds` and `inter_token_latency_seconds` with the same observations).

Data-parallel servers label series with `engine`; a sample adds the engines together (gauges of
usage are averaged), because the load balancer sees one server, not its engines.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Mapping

from monitor.collect.exposition import ExpositionError, samples
from monitor.samples import Histogram, ModelSample


class PageError(ValueError):
    """A page that answered 200 but cannot be used; the message is the reason shown to users."""


HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "ttft": ("vllm:time_to_first_token_seconds",),
    "tpot": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    "e2e": ("vllm:e2e_request_latency_seconds",),
    "queue": ("vllm:request_queue_time_seconds",),
}
COUNTERS: dict[str, tuple[str, ...]] = {
    "prompt_tokens": ("vllm:prompt_tokens_total",),
    "generation_tokens": ("vllm:generation_tokens_total",),
    "preemptions": ("vllm:num_preemptions_total",),
    "prefix_cache_queries": ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"),
    "prefix_cache_hits": ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"),
    "admission_rejections": ("vllm:admission_rejections_total",),
}
SUMMED_GAUGES: dict[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
}
AVERAGED_GAUGES: dict[str, tuple[str, ...]] = {
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    # V0 only; -1 means prefix caching is disabled, which we report as absent.
    "prefix_cache_hit_rate": ("vllm:gpu_prefix_cache_hit_rate",),
}
FINISHED = "vllm:request_success_total"
# Every sample name the normaliser reads; a page's other vllm: families (request sizes, phase times,
# iteration tokens, ~200 of a V1 page's ~350 vllm: samples) are skipped before their labels are read.
USED_NAMES: frozenset[str] = frozenset(
    [name + suffix for names in HISTOGRAMS.values() for name in names for suffix in ("_bucket", "_sum", "_count")]
    + [name for table in (COUNTERS, SUMMED_GAUGES, AVERAGED_GAUGES) for names in table.values() for name in names]
    + [FINISHED]
)

# Bucket boundaries of vLLM ≥ 0.8.5 (older servers have a prefix of these lists, so a boundary
# here is a boundary there too, up to their last bucket).
BUCKETS: dict[str, tuple[float, ...]] = {
    "ttft": (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
             20.0, 40.0, 80.0, 160.0, 640.0, 2560.0),
    "tpot": (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
             20.0, 40.0, 80.0),
    "e2e": (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
            240.0, 480.0, 960.0, 1920.0, 7680.0),
}
BUCKETS["queue"] = BUCKETS["e2e"]


def parse_page(text: str) -> list[ModelSample]:
    """Normalise a /metrics page; raises PageError for a malformed page or one without vLLM metrics.

    Only the `vllm:` sample lines of the families in USED_NAMES are read (see exposition.py):
    python/process/http families make up most of a page and are never used, and neither are
    vLLM's request-size and phase-time histograms.
    """
    # name -> model -> [(labels without model_name, value)]
    values: dict[str, dict[str, list[tuple[dict[str, str], float]]]] = defaultdict(lambda: defaultdict(list))
    try:
        for name, labels, value in samples(text, names=USED_NAMES):
            model = labels.pop("model_name", "")
            values[name][model].append((labels, value))
    except ExpositionError as exc:
        raise PageError(f"malformed metrics page: {exc}") from None
    if not values:
        raise PageError("not a vLLM endpoint (no vllm: metrics on the page)")
    return samples_by_model(values)


def samples_by_model(values: Mapping[str, Mapping[str, list[tuple[dict[str, str], float]]]]) -> list[ModelSample]:
    """One sample per `model_name` from series grouped as name -> model -> [(other labels, value)].

    Shared by the page parser and the PromQL source (monitor/collect/promql.py), so a series read
    from Prometheus is normalised exactly as the same series read from the page.
    """
    models = sorted({m for per_model in values.values() for m in per_model if m})
    if not models:
        models = [""]
    result = [_model_sample(values, model) for model in models]
    if not any(s.histograms or s.counters or s.gauges or s.finished for s in result):
        raise PageError("not a vLLM endpoint (none of the vLLM serving metrics on the page)")
    return result


def _first_present(values: Mapping[str, Mapping[str, list]], names: tuple[str, ...], suffix: str, model: str):
    for name in names:
        rows = values.get(name + suffix, {}).get(model)
        if rows:
            return name, rows
    return None, None


def _model_sample(values: Mapping[str, Mapping[str, list]], model: str) -> ModelSample:
    histograms: dict[str, Histogram] = {}
    for key, names in HISTOGRAMS.items():
        name, buckets = _first_present(values, names, "_bucket", model)
        if name is None:
            continue
        per_le: dict[float, float] = defaultdict(float)
        for labels, value in buckets:
            try:
                per_le[float(labels["le"])] += value
            except (KeyError, ValueError):
                raise PageError(f"malformed metrics page: {name}_bucket without a valid le label") from None
        if math.inf not in per_le:
            raise PageError(f"malformed metrics page: {name} has no le=\"+Inf\" bucket")
        total = sum(v for _, v in values.get(name + "_sum", {}).get(model, ()))
        count = sum(v for _, v in values.get(name + "_count", {}).get(model, ()))
        bounds = tuple(sorted(per_le))
        histograms[key] = Histogram(bounds, tuple(per_le[b] for b in bounds), total, count or per_le[math.inf])
    counters: dict[str, float] = {}
    for key, names in COUNTERS.items():
        _, rows = _first_present(values, names, "", model)
        if rows:
            counters[key] = sum(v for _, v in rows)
    gauges: dict[str, float] = {}
    for key, names in SUMMED_GAUGES.items():
        _, rows = _first_present(values, names, "", model)
        if rows:
            gauges[key] = sum(v for _, v in rows)
    for key, names in AVERAGED_GAUGES.items():
        _, rows = _first_present(values, names, "", model)
        if rows:
            mean = sum(v for _, v in rows) / len(rows)
            if not (key == "prefix_cache_hit_rate" and mean < 0):
                gauges[key] = mean
    finished: dict[str, float] = defaultdict(float)
    for labels, value in values.get(FINISHED, {}).get(model, ()):
        finished[labels.get("finished_reason", "")] += value
    return ModelSample(model, histograms, counters, gauges, dict(finished))


def threshold_warning(metric: str, threshold_s: float) -> str | None:
    """Why a latency threshold cannot be read exactly from vLLM's buckets, or None when it can."""
    bounds = BUCKETS.get(metric)
    if not bounds or any(math.isclose(threshold_s, b, rel_tol=1e-9) for b in bounds):
        return None
    lower = max((b for b in bounds if b < threshold_s), default=0.0)
    upper = min((b for b in bounds if b > threshold_s), default=None)
    name = HISTOGRAMS[metric][0]
    if upper is None:
        return (f"{_fmt(threshold_s)} is above the last bucket boundary of {name} ({_fmt(lower)}); "
                "the SLI will count every request above it as bad")
    return (f"{_fmt(threshold_s)} is not a bucket boundary of {name}; the SLI interpolates between the "
            f"neighbouring boundaries {_fmt(lower)} and {_fmt(upper)} and is marked exact: false")


def _fmt(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"
