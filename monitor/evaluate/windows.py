"""Rolling-window math over successive scrapes: increases, rates, histogram deltas and quantiles.

Pure functions over plain data. Counter resets (an instance restarted) are handled as Prometheus's
`rate()` handles them: a value lower than the previous one means the counter started again from zero,
so the new value itself is the increase. Unlike `rate()` nothing is extrapolated to the window's
edges: the increase is exactly the events between the first and last scrape used, which keeps
good/total event counts whole numbers that SLO arithmetic can add up.

Every number that comes out is finite. Samples hold only finite values (the normaliser refuses NaN
and ±Inf and leaves the key out, `ModelSample.refused`); a key left out of one scrape is stepped
over, its increase taken between the readings around it. Differences and sums of finite values can
still leave the float range on a hostile page (1e308 - -1e308): such an increase, histogram or
figure is left out as unknown too.

Quantiles follow `histogram_quantile()`: linear interpolation inside the bucket holding the rank,
0 as the lower edge of the first bucket, and the highest finite bound when the rank falls in +Inf.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import chain, compress, count, repeat
from math import isfinite, isnan
from operator import add, ge, itemgetter, le, sub
from typing import AbstractSet, Iterable, Mapping, Sequence

from monitor.collect.vllm import AVERAGED_GAUGES, COUNTERS, PROMPT_BY_SOURCE, WAITING_BY_REASON
from monitor.samples import Histogram, ModelSample

PREFIX_HITS = COUNTERS["prefix_cache_hits"][0]
PREFIX_HIT_RATE_GAUGE = AVERAGED_GAUGES["prefix_cache_hit_rate"][0]


def sum_known(values: Iterable[float | None]) -> float | None:
    """Sum of the values present; None when none is (absent is not zero: nothing scraped yet), or
    when the sum leaves the float range (finite values, but a hostile page's: not known either)."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    total = sum(known)
    return total if isfinite(total) else None


def counter_increase(values: Sequence[float]) -> float:
    """Increase over successive readings of one counter, resets counted from zero."""
    total = 0.0
    for previous, current in zip(values, values[1:]):
        total += current - previous if current >= previous else current
    return total


def _is_reset(previous: Histogram, current: Histogram) -> bool:
    if (previous.bounds is not current.bounds and previous.bounds != current.bounds) or current.count < previous.count:
        return True
    return not all(map(le, previous.cumulative, current.cumulative))


def histogram_increase(readings: Sequence[Histogram]) -> Histogram | None:
    """Bucket-wise increase over successive readings of one histogram; None with fewer than two.

    A reading whose bounds changed (the server was upgraded) counts as a reset, and the increase
    restarts from it, since buckets of different bounds cannot be added.
    """
    if len(readings) < 2:
        return None
    if not any(_is_reset(p, c) for p, c in zip(readings, readings[1:])):
        # the common case, no restart in the window: the increase is last minus first (the health
        # and scaling decisions ask this of every instance every cycle)
        first, last = readings[0], readings[-1]
        return Histogram(last.bounds, tuple(map(sub, last.cumulative, first.cumulative)), last.sum - first.sum,
                         last.count - first.count)
    bounds = readings[0].bounds
    cumulative = [0.0] * len(bounds)
    total_sum = total_count = 0.0
    delta_cum: Sequence[float]
    for previous, current in zip(readings, readings[1:]):
        if _is_reset(previous, current):
            if current.bounds != bounds:
                bounds = current.bounds
                cumulative = [0.0] * len(bounds)
                total_sum = total_count = 0.0
            delta_cum, delta_sum, delta_count = current.cumulative, current.sum, current.count
        else:
            delta_cum = [c - p for p, c in zip(previous.cumulative, current.cumulative)]
            delta_sum, delta_count = current.sum - previous.sum, current.count - previous.count
        cumulative = [a + d for a, d in zip(cumulative, delta_cum)]
        total_sum += delta_sum
        total_count += delta_count
    return Histogram(tuple(bounds), tuple(cumulative), total_sum, total_count)


def add_histograms(a: Histogram | None, b: Histogram | None) -> Histogram | None:
    """Sum of two histograms with the same bounds (None when either side is missing or bounds differ)."""
    if a is None:
        return b
    if b is None:
        return a
    if a.bounds is not b.bounds and a.bounds != b.bounds:  # the parser shares equal bounds: mostly `is`
        return None
    # map(add), not a generator: a pool's scaling figures add up every instance's histograms each cycle
    return Histogram(a.bounds, tuple(map(add, a.cumulative, b.cumulative)), a.sum + b.sum, a.count + b.count)


def quantile(q: float, hist: Histogram | None) -> float | None:
    """The q-quantile (0..1) of a histogram, as Prometheus's histogram_quantile(); None when empty."""
    if hist is None or not hist.cumulative:
        return None
    total = hist.cumulative[-1]
    if total <= 0 or not 0.0 <= q <= 1.0:
        return None
    rank = q * total
    # the first bucket holding the rank, searching the finite buckets only (in C: map, compress and
    # count rather than a generator; every instance's figures ask a dozen quantiles every cycle)
    finite = len(hist.cumulative) - 1
    index = next(compress(count(), map(ge, hist.cumulative, repeat(rank, finite))), finite)
    if math.isinf(hist.bounds[index]):
        return hist.bounds[index - 1] if index > 0 else None
    upper = hist.bounds[index]
    lower = hist.bounds[index - 1] if index > 0 else 0.0
    below = hist.cumulative[index - 1] if index > 0 else 0.0
    if index == 0 and upper <= 0:
        return upper
    in_bucket = hist.cumulative[index] - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


@dataclass(frozen=True, slots=True)
class Fraction:
    """Share of observations at or under a threshold; `exact` is False when interpolated in a bucket."""

    value: float | None
    good: float
    total: float
    exact: bool


def fraction_at_or_below(hist: Histogram | None, threshold: float) -> Fraction:
    if hist is None or not hist.cumulative or hist.cumulative[-1] <= 0:
        return Fraction(None, 0.0, 0.0, True)
    total = hist.cumulative[-1]
    for i, bound in enumerate(hist.bounds):
        if math.isclose(bound, threshold, rel_tol=1e-9):
            return Fraction(hist.cumulative[i] / total, hist.cumulative[i], total, True)
        if bound > threshold:
            below = hist.cumulative[i - 1] if i > 0 else 0.0
            if math.isinf(bound):
                # Past the last finite bound nothing is known about where requests fell: count them bad.
                return Fraction(below / total, below, total, False)
            lower = hist.bounds[i - 1] if i > 0 else 0.0
            if threshold <= lower:
                return Fraction(below / total, below, total, False)
            good = below + (hist.cumulative[i] - below) * (threshold - lower) / (bound - lower)
            return Fraction(good / total, good, total, False)
    return Fraction(1.0, total, total, True)


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Event counts and latest gauges over one window of one instance and model."""

    start: float
    end: float
    histograms: Mapping[str, Histogram] = field(default_factory=dict)
    increases: Mapping[str, float] = field(default_factory=dict)
    finished: Mapping[str, float] = field(default_factory=dict)
    gauges: Mapping[str, float] = field(default_factory=dict)
    # key -> vLLM family it was read from, as of the last scrape (ModelSample.sources)
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def span(self) -> float:
        return self.end - self.start

    def rate(self, key: str) -> float | None:
        if key not in self.increases or self.span <= 0:
            return None
        return self.increases[key] / self.span

    @property
    def finished_total(self) -> float:
        return sum(self.finished.values())

    @property
    def errors(self) -> float:
        """Requests vLLM finished with reason `error`, plus admission rejections (never finished)."""
        return self.finished.get("error", 0.0) + self.increases.get("admission_rejections", 0.0)


def window_start(now: float, window: float, since: float | None = None) -> float:
    """Where a window ending at `now` begins: `window` back, or at `since` when that is later (the
    health rules judge an instance only on what it did since its state last changed, so requests it
    served before an ejection cannot eject it again after it returned)."""
    start = now - window
    return start if since is None or since <= start else since


def select_window(times: Sequence[float], now: float, window: float,
                  since: float | None = None) -> tuple[int, int] | None:
    """Indices [first, last] of the scrapes covering (start, now], with the last scrape at or
    before the window's start as the baseline so the first interval is not lost (`window_start`:
    the start is `since` when that is later than `now - window`)."""
    last = max((i for i, t in enumerate(times) if t <= now), default=None)
    if last is None:
        return None
    start = window_start(now, window, since)
    first = max((i for i, t in enumerate(times[: last + 1]) if t <= start), default=0)
    return (first, last) if last > first else None


_time = itemgetter(0)


def _select_ordered(points: Sequence[tuple[float, ModelSample]], now: float, window: float,
                    since: float | None = None) -> tuple[int, int] | None:
    """`select_window` by binary search, for points whose times never go down (a NaN bound: the scan)."""
    start = window_start(now, window, since)
    if isnan(now) or isnan(start):
        return select_window([t for t, _ in points], now, window, since)
    last = bisect_right(points, now, key=_time) - 1
    if last < 0:
        return None
    first = max(bisect_right(points, start, 0, last + 1, key=_time) - 1, 0)
    return (first, last) if last > first else None


@dataclass(frozen=True, slots=True)
class SeriesMarks:
    """What was learnt of a series of points as they arrived (FleetView.ingest), as indices into it, so
    that a window over them need not work it out again every cycle (at 1,000 targets the pair-by-pair
    reset checks were most of the window figures' cost).

    ordered: no point is earlier than the one before it (a clock stepped back): bounds by binary search.
    last_restart: the last point that restarts a key against that key's previous reading (`restarts`);
      a window starting at or after it has no reset inside, its increases are last minus first.
    last_inexact: the last point with a counter or finished count that is not an exact integer in
      [0, 2**53] (`exact_counts`): past it, adding the steps of a counter is last minus first exactly.
    """

    ordered: bool = False
    last_restart: int = 2**62
    last_inexact: int = 2**62


def restarts(before: Sequence[tuple[float, ModelSample]], sample: ModelSample) -> bool:
    """Whether `sample`, read after the points `before` (oldest first), restarts a key against that
    key's previous reading among them: what `stats_over` checks of every consecutive pair of readings,
    worked out once as the sample arrives. A key the last point lacks (refused that scrape) is compared
    with its reading before; the finished counts, of the last point that has them, reason by reason, a
    reason absent being zero (stats_over's rules). It may say yes where stats_over would find nothing
    (a window then checks pair by pair, as before), never the reverse."""
    if not before:
        return False
    previous = before[-1][1]
    for key, hist in sample.histograms.items():
        earlier = previous.histograms.get(key)
        if earlier is None:
            earlier = next((h for _, s in reversed(before) if (h := s.histograms.get(key)) is not None), None)
        if earlier is not None and _is_reset(earlier, hist):
            return True
    for key, value in sample.counters.items():
        old = previous.counters.get(key)
        if old is None:
            old = next((v for _, s in reversed(before) if (v := s.counters.get(key)) is not None), None)
        if old is not None and not value >= old:
            return True
    if "finished" in sample.refused:
        return False
    counted = next((s for _, s in reversed(before) if "finished" not in s.refused), None)
    if counted is None:
        return False
    now, then = sample.finished, counted.finished
    return any(not now.get(reason, 0.0) >= then.get(reason, 0.0) for reason in chain(now, then))


_EXACT = 2.0**53  # integers up to here are floats exactly, and so are their differences


def exact_counts(sample: ModelSample) -> bool:
    """Whether every counter and finished count of a sample is an exact integer in [0, 2**53]: between
    such readings with no reset, the steps of a counter add up exactly to last minus first (vLLM's
    counters count tokens and requests), so a window need not add them one by one."""
    return all(type(v) is float and v.is_integer() and 0.0 <= v <= _EXACT
               for v in chain(sample.counters.values(), sample.finished.values()))


def window_stats(points: Sequence[tuple[float, ModelSample]], now: float, window: float,
                 since: float | None = None, marks: SeriesMarks | None = None) -> WindowStats | None:
    """Stats of one instance and model over (now - window, now], or (since, now] when `since` is
    later; None with fewer than two scrapes. `marks`: what ingest learnt of `points`."""
    if marks is not None and marks.ordered:
        chosen = _select_ordered(points, now, window, since)
    else:
        chosen = select_window([t for t, _ in points], now, window, since)
    if chosen is None:
        return None
    first, last = chosen
    return stats_between(points, first, last, marks)


def interval_stats(points: Sequence[tuple[float, ModelSample]], begin: float, end: float,
                   marks: SeriesMarks | None = None) -> WindowStats | None:
    """Stats of the scrapes in [begin, end), the last scrape before `begin` as the baseline (a minute's
    rollup: minutes then partition events exactly); None with fewer than two."""
    if marks is None or not marks.ordered or isnan(begin) or isnan(end):
        before = [p for p in points if p[0] < begin][-1:]
        return stats_over(before + [p for p in points if begin <= p[0] < end])
    inside = bisect_left(points, begin, key=_time)
    return stats_between(points, max(inside - 1, 0), bisect_left(points, end, key=_time) - 1, marks)


def stats_between(points: Sequence[tuple[float, ModelSample]], first: int, last: int,
                  marks: SeriesMarks | None = None) -> WindowStats | None:
    """`stats_over(points[first:last + 1])`, spared the checks `marks` (of `points`) already made."""
    no_restart = marks is not None and marks.last_restart <= first
    exact = no_restart and marks is not None and marks.last_inexact < first
    return stats_over(points[first : last + 1], no_restart=no_restart, exact_counts=exact)


def _finite_histogram(hist: Histogram) -> bool:
    return isfinite(hist.sum + hist.count + sum(hist.cumulative))


def stats_over(used: Sequence[tuple[float, ModelSample]], *, no_restart: bool = False,
               exact_counts: bool = False, histograms: AbstractSet[str] | None = None) -> WindowStats | None:
    """Stats from the first to the last of the given scrapes; None with fewer than two.

    A key is read from the scrapes that have it: one refused in between (a NaN that scrape) is
    stepped over, so neither a gap nor the next reading looks like a reset. The finished counts
    of a scrape that refused them are skipped likewise; a reason merely absent is zero (a server
    that creates the series on the first request of that reason).

    What the caller knows of the scrapes spares the work of checking them (the same answer, cheaper):
    `no_restart`, that no scrape after the first restarts a key (`restarts`): each histogram is then
    its last reading minus its first; and with `exact_counts`, that every counter and finished count
    is an exact integer (`exact_counts`): each counter too. `histograms` limits the histograms computed to
    those a caller reads (the SLO engine, every interval of every instance, reads one or two of five).
    """
    if len(used) < 2:
        return None
    exact_counts = exact_counts and no_restart
    samples = [s for _, s in used]
    head, latest = samples[0], samples[-1]
    increases_of: dict[str, Histogram] = {}
    for key, hist in latest.histograms.items():
        if histograms is not None and key not in histograms:
            continue
        if no_restart:  # histogram_increase's own shortcut, without checking each pair for resets
            first = head.histograms.get(key)
            if first is None:  # refused in the first scrape: the first that has it (not the last: one reading)
                first = next((h for s in samples[1:-1] if (h := s.histograms.get(key)) is not None), None)
            delta = None if first is None else Histogram(
                hist.bounds, tuple(map(sub, hist.cumulative, first.cumulative)), hist.sum - first.sum,
                hist.count - first.count)
        else:
            delta = histogram_increase([s.histograms[key] for s in samples if key in s.histograms])
        if delta is not None and _finite_histogram(delta):
            increases_of[key] = delta
    increases = {}
    for key, value in latest.counters.items():
        if exact_counts:  # no reset and whole numbers: the steps add up to last minus first exactly
            first_value = head.counters.get(key)
            if first_value is None:
                first_value = next(v for s in samples if (v := s.counters.get(key)) is not None)
            increase = value - first_value
        else:
            increase = counter_increase([s.counters[key] for s in samples if key in s.counters])
        if isfinite(increase):
            increases[key] = increase
    counted = [s for s in samples if "finished" not in s.refused]
    if exact_counts:
        then, now = (counted[0].finished, counted[-1].finished) if counted else ({}, {})
        finished = {reason: now.get(reason, 0.0) - then.get(reason, 0.0) for reason in latest.finished}
    else:
        finished = {
            reason: counter_increase([s.finished.get(reason, 0.0) for s in counted])
            for reason in latest.finished
        }
    if not isfinite(sum(finished.values())):
        finished = {}
    return WindowStats(used[0][0], used[-1][0], increases_of, increases, finished, dict(latest.gauges),
                       dict(latest.sources))


def merge_stats(stats: Sequence[WindowStats]) -> WindowStats | None:
    """One instance's figures over all the models it serves: events added, gauges summed (usage averaged)."""
    stats = [s for s in stats if s is not None]
    if not stats:
        return None
    if len(stats) == 1:
        return stats[0]
    histograms: dict[str, Histogram | None] = {}
    increases: dict[str, float] = {}
    finished: dict[str, float] = {}
    gauges: dict[str, float] = {}
    sources: dict[str, str] = {}
    conflicting: set[str] = set()  # models whose buckets differ cannot be added
    for s in stats:
        for key, hist in s.histograms.items():
            histograms[key] = add_histograms(histograms[key], hist) if key in histograms else hist
            if histograms[key] is None:
                conflicting.add(key)
        for key, value in s.increases.items():
            increases[key] = increases.get(key, 0.0) + value
        for key, value in s.finished.items():
            finished[key] = finished.get(key, 0.0) + value
        for key, value in s.gauges.items():
            gauges[key] = gauges.get(key, 0.0) + value
        for key, source in s.sources.items():
            sources.setdefault(key, source)
    for key in ("kv_cache_usage", "prefix_cache_hit_rate"):
        present = [s.gauges[key] for s in stats if key in s.gauges]
        if present:
            gauges[key] = sum(present) / len(present)
    # per-server facts every model of the page repeats (cache_config_info has no model_name)
    for key in ("sleep_level", "engines_asleep", "kv_gpu_blocks", "kv_capacity_tokens"):
        present = [s.gauges[key] for s in stats if key in s.gauges]
        if present:
            gauges[key] = max(present)
    return WindowStats(
        min(s.start for s in stats),
        max(s.end for s in stats),
        {k: v for k, v in histograms.items() if v is not None and k not in conflicting},
        increases,
        finished,
        gauges,
        sources,
    )


# The per-instance figures, in the order the API lists them (docs/api.md's `metrics` object): added
# to, never renamed or removed.
FIGURE_NAMES = (
    "ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "tpot_p50_s", "tpot_p90_s", "tpot_p99_s",
    "e2e_p50_s", "e2e_p90_s", "e2e_p99_s", "queue_p99_s", "error_ratio", "kv_cache_usage",
    "requests_running", "requests_waiting", "requests_per_s", "prompt_tokens_per_s",
    "generation_tokens_per_s", "preemptions_per_s", "prefix_cache_hit_rate",
    # issue 15: the per-token interval apart from per-request TPOT, the waiting split, current vLLM's families
    "itl_p50_s", "itl_p90_s", "itl_p99_s", "requests_waiting_capacity", "requests_waiting_deferred",
    "spec_decode_acceptance_rate", "spec_decode_mean_acceptance_length", "kv_capacity_tokens",
    "prefill_kv_computed_tokens_per_request", "admission_rejections_per_s",
    *(f"admission_rejections_{reason}_per_s" for reason in ("max_num_queued_reqs", "max_num_queued_tokens", "other")),
)
# the by-reason rejection counters (ModelSample.counters) under vLLM's `reason` label values
REJECTION_REASONS = {"max_num_queued_reqs": "admission_rejections_queued_reqs",
                     "max_num_queued_tokens": "admission_rejections_queued_tokens",
                     "other": "admission_rejections_other"}
_PREFIX_BY_SOURCE = ("prompt_tokens_local_compute", "prompt_tokens_local_cache_hit", "prompt_tokens_external_kv_transfer")


def instance_figures(stats: WindowStats | None) -> dict[str, float | None]:
    """The per-instance figures the API and /metrics publish (the `metrics` object, docs/api.md).

    `tpot_*` is per request where the page has `vllm:request_time_per_output_token_seconds`
    (ModelSample's `tpot`), `itl_*` the per-token interval: with speculative decoding one interval
    carries several tokens, so the two differ. Figures whose family the page lacks stay None (absent
    is not zero); `figure_sources` says which family each one came from.
    """
    figures: dict[str, float | None] = dict.fromkeys(FIGURE_NAMES)
    if stats is None:
        return figures
    for key in ("ttft", "tpot", "e2e", "itl"):
        for q, label in ((0.5, "p50"), (0.9, "p90"), (0.99, "p99")):
            figures[f"{key}_{label}_s"] = quantile(q, stats.histograms.get(key))
    figures["queue_p99_s"] = quantile(0.99, stats.histograms.get("queue"))
    attempted = stats.finished_total + stats.increases.get("admission_rejections", 0.0)
    figures["error_ratio"] = stats.errors / attempted if attempted > 0 else None
    figures["kv_cache_usage"] = stats.gauges.get("kv_cache_usage")
    figures["requests_running"] = stats.gauges.get("running")
    figures["requests_waiting"] = stats.gauges.get("waiting")
    figures["requests_waiting_capacity"] = stats.gauges.get("waiting_capacity")
    figures["requests_waiting_deferred"] = stats.gauges.get("waiting_deferred")
    figures["requests_per_s"] = stats.finished_total / stats.span if stats.span > 0 and stats.finished else None
    figures["prompt_tokens_per_s"] = stats.rate("prompt_tokens")
    figures["generation_tokens_per_s"] = stats.rate("generation_tokens")
    figures["preemptions_per_s"] = stats.rate("preemptions")
    figures["prefix_cache_hit_rate"] = _prefix_cache_hit_rate(stats)[0]
    inc = stats.increases
    # speculative decoding (vLLM's spec_decode/metrics.py): acceptance rate = accepted / draft
    # tokens; mean acceptance length = 1 + accepted / drafts (tokens a step emits, the bonus one included)
    if inc.get("spec_decode_draft_tokens"):
        figures["spec_decode_acceptance_rate"] = inc.get("spec_decode_accepted_tokens", 0.0) / inc["spec_decode_draft_tokens"]
    if inc.get("spec_decode_drafts"):
        figures["spec_decode_mean_acceptance_length"] = 1.0 + inc.get("spec_decode_accepted_tokens", 0.0) / inc["spec_decode_drafts"]
    figures["kv_capacity_tokens"] = stats.gauges.get("kv_capacity_tokens")
    if inc.get("prefill_kv_computed_requests"):
        figures["prefill_kv_computed_tokens_per_request"] = (inc.get("prefill_kv_computed_tokens", 0.0)
                                                             / inc["prefill_kv_computed_requests"])
    figures["admission_rejections_per_s"] = stats.rate("admission_rejections")
    for reason, key in REJECTION_REASONS.items():
        figures[f"admission_rejections_{reason}_per_s"] = stats.rate(key)
    for name, value in figures.items():
        if value is not None and not isfinite(value):
            figures[name] = None  # a ratio or sum of finite values past the float range: not known
    return figures


def _prefix_cache_hit_rate(stats: WindowStats) -> tuple[float | None, str | None]:
    """(hit rate, the family it came from): the hits/queries counters where the page has them, else
    the by-source prompt counters (local cache hits over every prompt token), else V0's gauge."""
    inc = stats.increases
    queries = inc.get("prefix_cache_queries")
    if queries:
        return inc.get("prefix_cache_hits", 0.0) / queries, stats.sources.get("prefix_cache_hits", PREFIX_HITS)
    if all(key in inc for key in _PREFIX_BY_SOURCE):
        prompt = sum(inc[key] for key in _PREFIX_BY_SOURCE)
        if prompt > 0:
            return inc["prompt_tokens_local_cache_hit"] / prompt, PROMPT_BY_SOURCE
    if "prefix_cache_hit_rate" in stats.gauges:
        return stats.gauges["prefix_cache_hit_rate"], PREFIX_HIT_RATE_GAUGE
    return None, None


def figure_sources(stats: WindowStats | None) -> dict[str, str]:
    """Figure family -> the vLLM family it was read from, for the families with more than one
    possible source (the API's `sources` object): e.g. `tpot` ->
    `vllm:request_time_per_output_token_seconds` (per request) or `vllm:inter_token_latency_seconds`
    (per token, pages before 0.11), `prefix_cache_hit_rate` -> the counters or the by-source family."""
    if stats is None:
        return {}
    out: dict[str, str] = {key: stats.sources[key] for key in ("ttft", "tpot", "itl", "e2e", "queue", "kv_cache_usage")
           if key in stats.sources and key in (*stats.histograms, *stats.gauges)}
    source = _prefix_cache_hit_rate(stats)[1]
    if source is not None:
        out["prefix_cache_hit_rate"] = source
    if "waiting_capacity" in stats.gauges:
        out["requests_waiting_capacity"] = WAITING_BY_REASON
    return out
