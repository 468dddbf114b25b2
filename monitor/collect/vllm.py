"""vLLM's /metrics page → one typed sample per `model_name`.

vLLM renamed metrics between V0 and V1 (see docs/metrics.md); everything downstream
works on the fields below, so a fleet mixing versions is evaluated the same way. Each field lists its
source names in order of preference: the newer name wins where a server exposes both (0.10.2–0.11.x
expose `time_per_output_token_seconds` and `inter_token_latency_seconds` with the same observations),
and `ModelSample.sources` says which one a field came from.

`tpot` is per request where the page has `vllm:request_time_per_output_token_seconds` (0.11+: one
observation per finished request, as traces count it); older pages keep the per-token interval
histogram. `itl` is always the per-token (per output event) interval: with speculative decoding one
event carries several tokens, so the two differ.

Data-parallel servers label series with `engine`; a sample adds the engines together (gauges of
usage are averaged), because the load balancer sees one server, not its engines.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Mapping, TypeVar

from monitor.collect.exposition import ExpositionError, grouped_samples
from monitor.samples import DUPLICATE, NON_FINITE, BadSample, Histogram, ModelSample

_finite = math.isfinite
K = TypeVar("K")
V = TypeVar("V")


class PageError(ValueError):
    """A page that answered 200 but cannot be used; the message is the reason shown to users."""


ITL_NAMES = ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "ttft": ("vllm:time_to_first_token_seconds",),
    # per request (0.11+) first; older pages keep the per-token interval, today's behaviour
    "tpot": ("vllm:request_time_per_output_token_seconds", *ITL_NAMES),
    "itl": ITL_NAMES,
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
    # the engine's heartbeat: one observation per engine step, so it stops when the EngineCore is dead
    "engine_iterations": ("vllm:iteration_tokens_total_count",),
    "prompt_tokens_cached": ("vllm:prompt_tokens_cached_total",),
    "prefill_kv_computed_tokens": ("vllm:request_prefill_kv_computed_tokens_sum",),
    "prefill_kv_computed_requests": ("vllm:request_prefill_kv_computed_tokens_count",),
    "spec_decode_drafts": ("vllm:spec_decode_num_drafts_total",),
    "spec_decode_draft_tokens": ("vllm:spec_decode_num_draft_tokens_total",),
    "spec_decode_accepted_tokens": ("vllm:spec_decode_num_accepted_tokens_total",),
}
SUMMED_GAUGES: dict[str, tuple[str, ...]] = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
}
# Labelled families read into one key per label value: (family, label, {value: key}, key for any other value).
# Values outside the map are added into the `other` key (None: not read), so a page cannot mint keys.
WAITING_BY_REASON = "vllm:num_requests_waiting_by_reason"
PROMPT_BY_SOURCE = "vllm:prompt_tokens_by_source_total"
REJECTIONS = "vllm:admission_rejections_total"
LABELLED_GAUGES: dict[str, tuple[str, Mapping[str, str], str | None]] = {
    WAITING_BY_REASON: ("reason", {"capacity": "waiting_capacity"}, "waiting_deferred"),
}
LABELLED_COUNTERS: dict[str, tuple[str, Mapping[str, str], str | None]] = {
    PROMPT_BY_SOURCE: ("source", {"local_compute": "prompt_tokens_local_compute",
                                  "local_cache_hit": "prompt_tokens_local_cache_hit",
                                  "external_kv_transfer": "prompt_tokens_external_kv_transfer"}, None),
    REJECTIONS: ("reason", {"max_num_queued_reqs": "admission_rejections_queued_reqs",
                            "max_num_queued_tokens": "admission_rejections_queued_tokens"},
                 "admission_rejections_other"),
}
SLEEP_STATE = "vllm:engine_sleep_state"
SLEEP_LEVELS = {"weights_offloaded": 1.0, "discard_all": 2.0}
CACHE_CONFIG = "vllm:cache_config_info"  # no model_name label: it applies to every model on the page
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
    + [FINISHED, *LABELLED_GAUGES, *LABELLED_COUNTERS, SLEEP_STATE, CACHE_CONFIG]
)
# vLLM's names with their one colon written as `_` (prometheus_client's `escaping=underscores`, and
# what Prometheus 2.x stored from such pages) -> the name the normaliser reads
ESCAPED_PREFIX = "vllm_"
ESCAPED_NAMES: dict[str, str] = {"vllm_" + name.removeprefix("vllm:"): name for name in USED_NAMES}
ESCAPED_USED = frozenset(ESCAPED_NAMES)

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
BUCKETS["itl"] = BUCKETS["tpot"]


@dataclass(frozen=True, slots=True)
class Page:
    """A page read: one sample per model, and the series of it that were not used (named to users
    as the instance's reasons and counted in `slo_monitor_bad_samples_total`)."""

    models: list[ModelSample]
    bad: tuple[BadSample, ...] = ()


def parse_page(text: str) -> list[ModelSample]:
    """Normalise a /metrics page; raises PageError for a malformed page or one without vLLM metrics.
    `read_page` also says which series were refused."""
    return read_page(text).models


def read_page(text: str) -> Page:
    """Normalise a /metrics page (text format or OpenMetrics, see exposition.py); raises PageError
    for a malformed page or one without vLLM metrics.

    Only the `vllm:` sample lines of the families in USED_NAMES are read (see exposition.py):
    python/process/http families make up most of a page and are never used, and neither are
    vLLM's request-size and phase-time histograms.
    """
    # name -> model -> [(labels without model_name, value)]
    try:
        values = grouped_samples(text, "model_name", "vllm:", USED_NAMES)
        if not values:
            # a recent prometheus_client (0.26 does it) asked for OpenMetrics without `escaping=allow-utf-8`
            # writes `vllm_` for `vllm:` on its sample lines (client_python#1177); read only when the
            # page has no `vllm:` sample, so a normal page costs nothing more
            values = {ESCAPED_NAMES[name]: rows
                      for name, rows in grouped_samples(text, "model_name", ESCAPED_PREFIX, ESCAPED_USED).items()}
    except ExpositionError as exc:
        raise PageError(f"malformed metrics page: {exc}") from None
    if not values:
        raise PageError("not a vLLM endpoint (no vllm: metrics on the page)")
    return normalise(values)


def samples_by_model(values: Mapping[str, Mapping[str, list[tuple[dict[str, str], float]]]]) -> list[ModelSample]:
    """One sample per `model_name` from series grouped as name -> model -> [(other labels, value)];
    `normalise` also says which series were refused."""
    return normalise(values).models


def normalise(values: Mapping[str, Mapping[str, list[tuple[dict[str, str], float]]]]) -> Page:
    """One sample per `model_name` from series grouped as name -> model -> [(other labels, value)].

    Shared by the page parser and the PromQL source (monitor/collect/promql.py), so a series read
    from Prometheus is normalised exactly as the same series read from the page.

    NaN and ±Inf stop here. A key (a histogram, a counter, a gauge, the finished counts) one of
    whose series holds one is left out of the sample and named in `Page.bad`, the rest of the page
    is used: a NaN would otherwise enter every window and SLO sum it touches and stay there, and an
    infinity would overflow the replica arithmetic. The whole key goes, not just the series: a
    counter summed over engines without one of them would look like a reset. Checked on the sums
    (a NaN or infinity in any addend makes the sum non-finite), one test per key on the hot path.
    A series repeated on the page is read once (the first), as Prometheus does.
    """
    models = sorted({m for per_model in values.values() for m in per_model if m})
    if not models:
        models = [""]
    bad: list[BadSample] = []
    share = _page_share()  # the page's numbers, each value kept once
    result = [_model_sample(values, model, bad, share) for model in models]
    if not any(s.histograms or s.counters or s.gauges or s.finished or s.refused for s in result):
        raise PageError("not a vLLM endpoint (none of the vLLM serving metrics on the page)")
    # a family read for two keys (the per-token interval is itl and, on older pages, tpot) is named once
    return Page(result, tuple({str(b): b for b in bad}.values()))


Rows = list[tuple[dict[str, str], float]]


def _first_present(values: Mapping[str, Mapping[str, list]], names: tuple[str, ...], suffix: str, model: str):
    for name in names:
        rows = values.get(name + suffix, {}).get(model)
        if rows:
            return name, rows
    return None, None


def _unique(name: str, rows: Rows, bad: list[BadSample]) -> Rows:
    """`rows` with each label set once: a repeat is dropped and the first kept, as Prometheus drops
    the second sample of a series in one scrape ("duplicate sample for timestamp"); a repeat with
    another value is named (the same value twice changes nothing, and Prometheus says nothing)."""
    seen: dict[frozenset[tuple[str, str]], float] = {}
    out: Rows = []
    for labels, value in rows:
        key = frozenset(labels.items())
        if key not in seen:
            seen[key] = value
            out.append((labels, value))
        elif not (seen[key] == value or (math.isnan(value) and math.isnan(seen[key]))):
            bad.append(BadSample(_series(name, labels), DUPLICATE, value))
    return out if len(out) != len(rows) else rows


def _series(name: str, labels: Mapping[str, str]) -> str:
    text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{text}}}"[:200] if text else name


def _non_finite(parts: list[tuple[str, Rows]]) -> BadSample:
    """The first series holding NaN or ±Inf among `(name, rows)`; else their sum left the float range."""
    for name, rows in parts:
        for _, value in rows:
            if not _finite(value):
                return BadSample(name, NON_FINITE, value)
    return BadSample(parts[0][0], NON_FINITE, math.inf)


def _summed(values: Mapping[str, Mapping[str, list]], table: Mapping[str, tuple[str, ...]], model: str,
            sources: dict[str, str], refused: set[str], bad: list[BadSample]) -> dict[str, float]:
    """Each key's first present family summed over its series (engines, label values); where a key
    has more than one spelling, `sources` notes the one read."""
    read: dict[str, float] = {}
    for key, names in table.items():
        name, rows = _first_present(values, names, "", model)
        if rows:
            if len(rows) > 1:
                rows = _unique(name, rows, bad)
            total = sum(v for _, v in rows)
            if not _finite(total):
                refused.add(key)
                bad.append(_non_finite([(name, rows)]))
                continue
            read[key] = total
            if len(names) > 1:
                sources[key] = name
    return read


def _histogram(values: Mapping[str, Mapping[str, list]], name: str, buckets: Rows, model: str,
               bad: list[BadSample], share: Share) -> Histogram | None:
    """One histogram from its `_bucket`, `_sum` and `_count` series (engines added up); None when
    one of them holds NaN or ±Inf (named in `bad`). PageError for bounds that are not numbers.
    Its numbers are the page's shared ones (see _page_share)."""
    per_le = _per_le(name, buckets)
    if len(per_le) != len(buckets):  # several engines, or a bucket repeated
        buckets = _unique(name + "_bucket", buckets, bad)
        per_le = _per_le(name, buckets)
    bounds = sorted(per_le)
    if math.inf not in per_le:
        raise PageError(f"malformed metrics page: {name} has no le=\"+Inf\" bucket")
    if bounds[-1] != math.inf or not all(map(_finite, bounds[:-1])):  # le="NaN" or le="-Inf"
        raise PageError(f"malformed metrics page: {name}_bucket without a valid le label")
    sums: Rows = values.get(name + "_sum", {}).get(model, [])
    counts: Rows = values.get(name + "_count", {}).get(model, [])
    if len(sums) > 1:
        sums = _unique(name + "_sum", sums, bad)
    if len(counts) > 1:
        counts = _unique(name + "_count", counts, bad)
    total = sum(v for _, v in sums)
    count = sum(v for _, v in counts)
    cumulative = tuple(per_le[b] for b in bounds)
    if not _finite(total + count + sum(cumulative)):
        bad.append(_non_finite([(name + "_bucket", buckets), (name + "_sum", sums), (name + "_count", counts)]))
        return None
    if not count:
        count = per_le[math.inf]
    return Histogram(_shared_bounds(tuple(bounds)), tuple([share(v, v) for v in cumulative]), share(total, total),
                     share(count, count))


# share(value, value) -> the page's one float object equal to value (the first one seen)
Share = Callable[[float, float], float]


def _page_share() -> Share:
    """A new page's table of numbers: each value the normaliser keeps is replaced by the first float
    object of that value on the page.

    A histogram's cumulative counts repeat (every bucket above the slowest request holds the count,
    every one below the fastest holds 0), and so do zeros and counts across a page's histograms and
    counters: a reading kept in a window held ~107 float objects (24 bytes each), ~25 of them
    distinct, 40% of what the 16 readings an instance keeps cost (bench/memory_probe.py: 200 of the
    500 MiB that 5,000 instances' readings held). Only equal floats are merged, and the only equal
    floats that differ (0.0 and -0.0) cannot both occur: every number kept is a sum started at +0.0,
    which turns -0.0 into 0.0. One table per page, so it is as bounded as the page and one
    instance's numbers are never another's.
    """
    table: dict[float, float] = {}
    return table.setdefault


def _share(numbers: dict[str, float], share: Share) -> dict[str, float]:
    """`numbers`, changed in place, holding the page's shared floats (_page_share)."""
    for key, value in numbers.items():
        numbers[key] = share(value, value)
    return numbers


# a sample's `refused` when nothing was: one object for all (an empty frozenset is 216 bytes, not a singleton)
NOTHING_REFUSED: frozenset[str] = frozenset()


# bucket bounds seen, each kept once: every instance prints the same few lists, and each reading kept in a
# window held its own copy (a tuple of ~20 floats, ~0.7 KB) before; the one copy also makes comparing two
# readings' bounds an identity check
_BOUNDS: dict[tuple[float, ...], tuple[float, ...]] = {}
BOUNDS_KEPT = 1024


def _kept_once(table: dict[K, V], key: K, value: V, limit: int) -> V:
    """The value `table` already keeps under `key`, else `value`, kept from now on (the table emptied
    once it holds `limit`: a page cannot grow it without bound)."""
    shared = table.get(key)
    if shared is None:
        if len(table) >= limit:
            table.clear()
        shared = table[key] = value
    return shared


def _shared_bounds(bounds: tuple[float, ...]) -> tuple[float, ...]:
    return _kept_once(_BOUNDS, bounds, bounds, BOUNDS_KEPT)


# `ModelSample.sources` seen, each kept once: every reading of every instance of one vLLM version names the
# same families (~0.2 KB a reading). Never changed once built (samples are frozen, their mappings read only).
_SOURCES: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
SOURCES_KEPT = 256


def _shared_sources(sources: dict[str, str]) -> dict[str, str]:
    return _kept_once(_SOURCES, tuple(sources.items()), sources, SOURCES_KEPT)


def _per_le(name: str, buckets: Rows) -> dict[float, float]:
    per_le: dict[float, float] = defaultdict(float)
    for labels, value in buckets:
        try:
            per_le[float(labels["le"])] += value
        except (KeyError, ValueError):
            raise PageError(f"malformed metrics page: {name}_bucket without a valid le label") from None
    return per_le


def _model_sample(values: Mapping[str, Mapping[str, list]], model: str, bad: list[BadSample],
                  share: Share) -> ModelSample:
    sources: dict[str, str] = {}
    refused: set[str] = set()
    histograms: dict[str, Histogram] = {}
    # family -> its histogram: one family read for two keys (the per-token interval is itl and, on
    # pages before 0.11, tpot) is read once and kept once
    by_family: dict[str, Histogram | None] = {}
    for key, names in HISTOGRAMS.items():
        name, buckets = _first_present(values, names, "_bucket", model)
        if name is None:
            continue
        if name in by_family:
            hist = by_family[name]
        else:
            hist = by_family[name] = _histogram(values, name, buckets, model, bad, share)
        if hist is None:
            refused.add(key)
            continue
        histograms[key] = hist
        sources[key] = name
    counters = _summed(values, COUNTERS, model, sources, refused, bad)
    gauges = _summed(values, SUMMED_GAUGES, model, sources, refused, bad)
    for key, names in AVERAGED_GAUGES.items():
        name, rows = _first_present(values, names, "", model)
        if rows:
            if len(rows) > 1:
                rows = _unique(name, rows, bad)
            mean = sum(v for _, v in rows) / len(rows)
            if not _finite(mean):
                refused.add(key)
                bad.append(_non_finite([(name, rows)]))
            elif not (key == "prefix_cache_hit_rate" and mean < 0):
                gauges[key] = mean
                if len(names) > 1:
                    sources[key] = name
    for table, into in ((LABELLED_GAUGES, gauges), (LABELLED_COUNTERS, counters)):
        for family, (label, keys, other) in table.items():
            rows = values.get(family, {}).get(model)
            if not rows:
                continue
            if len(rows) > 1:
                rows = _unique(family, rows, bad)
            read = dict.fromkeys(keys.values(), 0.0)  # every known value present, 0 until seen
            if other is not None:
                read[other] = 0.0
            for labels, value in rows:
                slot = keys.get(labels.get(label, "")) or other
                if slot is not None:
                    read[slot] += value
            if not _finite(sum(read.values())):
                refused.update(read)
                bad.append(_non_finite([(family, [r for r in rows if keys.get(r[0].get(label, ""), other)])]))
                continue
            into.update(read)
    _sleep(values.get(SLEEP_STATE, {}).get(model), gauges, refused, bad)
    _cache_config(values.get(CACHE_CONFIG, {}), model, gauges)
    finished: dict[str, float] = defaultdict(float)
    rows = values.get(FINISHED, {}).get(model, [])
    if len(rows) > 1:
        rows = _unique(FINISHED, rows, bad)
    for labels, value in rows:
        finished[labels.get("finished_reason", "")] += value
    if not _finite(sum(finished.values())):
        refused.add("finished")
        bad.append(_non_finite([(FINISHED, rows)]))
        finished.clear()
    return ModelSample(model, histograms, _share(counters, share), _share(gauges, share),
                       _share(dict(finished), share), _shared_sources(sources),
                       frozenset(refused) if refused else NOTHING_REFUSED)


def _sleep(rows: Rows | None, gauges: dict[str, float], refused: set[str], bad: list[BadSample]) -> None:
    """`vllm:engine_sleep_state` (one child per engine and state, 1 on the current state) →
    `engines_asleep` (engines whose `awake` child is 0) and `sleep_level` (the deepest level any
    engine is at: 0 awake, 1 weights offloaded, 2 everything discarded)."""
    if not rows:
        return
    if len(rows) > 1:
        rows = _unique(SLEEP_STATE, rows, bad)
    if not _finite(sum(v for _, v in rows)):
        refused.update(("engines_asleep", "sleep_level"))
        bad.append(_non_finite([(SLEEP_STATE, rows)]))
        return
    asleep = 0.0
    level = 0.0
    for labels, value in rows:
        state = labels.get("sleep_state", "")
        if state == "awake":
            asleep += 1.0 if value == 0 else 0.0
        elif value >= 1 and state in SLEEP_LEVELS:
            level = max(level, SLEEP_LEVELS[state])
    gauges["engines_asleep"] = asleep
    gauges["sleep_level"] = level if asleep else 0.0


def _cache_config(per_model: Mapping[str, list[tuple[dict[str, str], float]]], model: str,
                  gauges: dict[str, float]) -> None:
    """KV capacity from `vllm:cache_config_info` (labels `num_gpu_blocks`, `block_size`, one series per
    engine): `kv_gpu_blocks` and `kv_capacity_tokens` summed over engines. The series has no
    `model_name` (a server has one model), so it applies to every model of the page; a value that is
    not a number (`None` before the engine reported its blocks) leaves the fields absent."""
    rows = per_model.get(model) or per_model.get("")
    if not rows:
        return
    blocks = tokens = 0.0
    for labels, _ in rows:
        try:
            b, size = float(labels["num_gpu_blocks"]), float(labels["block_size"])
        except (KeyError, ValueError):
            return
        if not (math.isfinite(b) and math.isfinite(size)) or b < 0 or size < 0:
            return
        blocks += b
        tokens += b * size
    gauges["kv_gpu_blocks"] = blocks
    gauges["kv_capacity_tokens"] = tokens


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
