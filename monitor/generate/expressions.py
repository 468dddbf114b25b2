"""PromQL building blocks shared by the generated rules and dashboards.

Every vLLM name comes from `monitor.collect.vllm`'s tables, in the same order of preference, so the
Prometheus rules read the same series the service reads: where vLLM renamed a metric, both names
are selected and joined with `or`. `or` matches on labels with the metric name ignored, so a server
of the 0.10.2–0.11 era that exposes both spellings is counted once (the newer one wins), and a
fleet mixing V0 and V1 servers is counted whole.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

from monitor.collect.vllm import AVERAGED_GAUGES, BUCKETS, COUNTERS, FINISHED, HISTOGRAMS, SUMMED_GAUGES
from monitor.units import format_duration

# Prometheus job names the generated scrape config uses and the rules rely on (`up{job=...}`).
VLLM_JOB = "vllm"
SERVICE_JOB = "slo-monitor"
GPU_JOB = "gpu"

RATE_WINDOW = "5m"  # the one window read from raw series; every longer one is built from it
RATE_RANGE_S = 300.0  # RATE_WINDOW in seconds

KV_USAGE = AVERAGED_GAUGES["kv_cache_usage"]
RUNNING = SUMMED_GAUGES["running"][0]
WAITING = SUMMED_GAUGES["waiting"][0]
PROMPT_TOKENS = COUNTERS["prompt_tokens"][0]
GENERATION_TOKENS = COUNTERS["generation_tokens"][0]
PREEMPTIONS = COUNTERS["preemptions"][0]
PREFIX_QUERIES = COUNTERS["prefix_cache_queries"]
PREFIX_HITS = COUNTERS["prefix_cache_hits"]
PREFIX_HIT_RATE_V0 = AVERAGED_GAUGES["prefix_cache_hit_rate"][0]
REJECTIONS = COUNTERS["admission_rejections"][0]
SUCCESS = FINISHED


def block(expr: str) -> str:
    """A rule's `expr` as the YAML writer prints it: one block scalar ending in a newline."""
    return expr.strip() + "\n"


def number(value: float) -> str:
    """A float as PromQL/YAML reads it, without binary noise (0.0010000000000000009 -> 0.001)."""
    if value == math.inf:
        return "+Inf"
    text = format(value, ".12g")
    return text if "e" not in text else format(value, ".15f").rstrip("0").rstrip(".")


def duration(seconds: float) -> str:
    """Prometheus duration notation, largest units first (`30d`, `59m30s`, `1s500ms`): the config's
    own notation, except that a rule's range cannot be empty (the API's window may say `0s`)."""
    if round(seconds * 1000) <= 0:
        raise ValueError(f"not a positive duration: {seconds!r}")
    return format_duration(seconds)


def quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def regex_any(values: Sequence[str]) -> str:
    """An anchored RE2 alternation matching exactly these values."""
    return "|".join(re.sub(r"([.+*?()\[\]{}|^$\\])", r"\\\1", v) for v in values)


def le_matcher(bound: float) -> str:
    """A matcher for one histogram bucket that survives both spellings of a whole number.

    prometheus_client (so vLLM) writes `le="1.0"`, Go exporters write `le="1"`, and Prometheus 3
    normalises both to `1.0` on ingestion; an exact `le="1"` silently selects nothing there (the
    Pyrra bug, pyrra#1502). Fractions have one spelling everywhere.
    """
    if bound == math.inf:
        return 'le="+Inf"'
    if float(bound).is_integer():
        whole = str(int(bound))
        return f'le=~"{whole}|{whole}\\\\.0"'
    return f"le={quote(number(bound))}"


def selector(name: str, matchers: Sequence[str] = ()) -> str:
    inner = ", ".join(m for m in matchers if m)
    return f"{name}{{{inner}}}" if inner else name


def any_of(names: Sequence[str], matchers: Sequence[str] = (), suffix: str = "") -> str:
    """The series under the first present of several names (V1 name first), joined with `or`."""
    return " or ".join(selector(n + suffix, matchers) for n in names)


def rate_any(names: Sequence[str], matchers: Sequence[str], window: str, suffix: str = "") -> str:
    """`rate()` of each spelling, joined with `or` after the rate (which drops the differing name)."""
    return " or ".join(f"rate({selector(n + suffix, matchers)}[{window}])" for n in names)


def sum_by(labels: Sequence[str], expr: str) -> str:
    return f"sum by ({', '.join(labels)}) ({expr})"


def histogram_names(metric: str) -> tuple[str, ...]:
    return HISTOGRAMS[metric]


def bucket_bounds(metric: str) -> tuple[float, ...]:
    return BUCKETS[metric]


def threshold_buckets(metric: str, threshold: float) -> list[tuple[float, float]]:
    """The buckets whose counts make "at or under `threshold`", each with its weight.

    Mirrors `monitor.evaluate.windows.fraction_at_or_below`, so the rules and the service count the
    same good events: a boundary is read as is; a threshold between two boundaries interpolates
    linearly between their cumulative counts; below the first boundary it interpolates from 0; above
    the last finite boundary nothing is known about the requests past it, so they count as bad.
    """
    bounds = bucket_bounds(metric)
    for bound in bounds:
        if math.isclose(bound, threshold, rel_tol=1e-9):
            return [(bound, 1.0)]
    upper_index = next((i for i, b in enumerate(bounds) if b > threshold), None)
    if upper_index is None:
        return [(bounds[-1], 1.0)]
    upper = bounds[upper_index]
    if upper_index == 0:
        return [(upper, threshold / upper)]
    lower = bounds[upper_index - 1]
    weight = (threshold - lower) / (upper - lower)
    return [(lower, 1.0 - weight), (upper, weight)]


def prom_le(bound: float) -> str:
    """The `le` value as prometheus_client prints it (what the promtool tests feed in)."""
    if bound == math.inf:
        return "+Inf"
    return repr(float(bound))
