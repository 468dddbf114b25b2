"""`pool_wide_slowness` in O(n log n) answers exactly as the O(n²) rule it replaced (kept here as the
reference): the same instances, figures and words, over generated pools with missing and equal values,
staggered starts, odd windows and thresholds switched off."""

from __future__ import annotations

import math
import random
import statistics
from typing import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.decide.comparison import LATENCY_FIGURES, pool_wide_slowness
from monitor.decide.wording import count, secs
from monitor.evaluate.signals import InstanceSignals
from monitor.settings import HealthSettings


def reference_pool_wide_slowness(eligible: list[str], sigs: Mapping[str, InstanceSignals],
                                 s: HealthSettings) -> dict[str, dict[str, str]]:
    """The rule as it was before issue 21 (a list of peers per instance), word for word."""
    busy = [i for i in eligible if sigs[i].requests >= max(s.min_requests, 1)]
    out: dict[str, dict[str, str]] = {}
    if len(busy) < 2:
        return out

    def start(i: str) -> float:
        since = sigs[i].judged_since
        return since if since is not None else -math.inf

    for label, attr, threshold_key in LATENCY_FIGURES:
        threshold = getattr(s, threshold_key)
        if threshold is None:
            continue
        values = {i: getattr(sigs[i], attr) for i in busy}
        for i in busy:
            tolerance = (sigs[i].window_s or 0.0) / 2
            peers = [v for j, v in values.items() if j != i and start(j) <= start(i) + tolerance]
            rest = [float(v) for v in peers if v is not None]
            if rest and len(rest) == len(peers) and all(v > threshold for v in rest):
                median = statistics.median(rest)
                out.setdefault(i, {})[label] = (
                    f"ejection held back: the whole pool is slow ({label} median {secs(median)} of the other "
                    f"{count(len(rest), 'instance')}, all past {secs(threshold)}): capacity, not this instance")
    return out


LATENCIES = st.one_of(st.none(), st.sampled_from([0.05, 0.2, 0.5, 0.5, 0.7, 1.0, 1.0, 3.0]),
                      st.floats(min_value=1e-3, max_value=20.0))
STARTS = st.one_of(st.none(), st.sampled_from([100.0, 110.0, 125.0, 130.0, 160.0]),
                   st.floats(min_value=0.0, max_value=300.0),
                   st.sampled_from([math.nan, math.inf, -math.inf]))
WINDOWS = st.one_of(st.none(), st.sampled_from([0.0, 20.0, 60.0, 60.0, 300.0, -40.0, math.inf, math.nan]))
THRESHOLDS = st.one_of(st.none(), st.sampled_from([0.1, 0.5, 1.0]), st.floats(min_value=1e-3, max_value=5.0))


@st.composite
def pools(draw: st.DrawFn) -> tuple[list[str], dict[str, InstanceSignals], HealthSettings]:
    n = draw(st.integers(min_value=0, max_value=14))
    names = [f"10.0.0.{k}:8000" for k in range(n)]
    # most pools share a window and half share a start: the common case, where every peer compares
    window = draw(WINDOWS) if draw(st.booleans()) else None
    common_start = draw(st.booleans())
    sigs = {
        name: InstanceSignals(
            requests=draw(st.sampled_from([0.0, 1.0, 4.0, 5.0, 50.0, 500.0])),
            ttft_p99_s=draw(LATENCIES), tpot_p99_s=draw(LATENCIES), e2e_p99_s=draw(LATENCIES),
            window_s=window if window is not None else draw(WINDOWS),
            judged_since=None if common_start else draw(STARTS))
        for name in names
    }
    eligible = draw(st.permutations(names))
    health = HealthSettings().model_copy(update={
        "min_requests": draw(st.sampled_from([0, 1, 5])), "ttft_p99_degraded": draw(THRESHOLDS),
        "tpot_p99_degraded": draw(THRESHOLDS), "e2e_p99_degraded": draw(THRESHOLDS)})
    return list(eligible), sigs, health


@settings(max_examples=1500, deadline=None)
@given(pools())
def test_pool_wide_slowness_answers_as_the_quadratic_rule_did(pool):
    eligible, sigs, health = pool
    new = pool_wide_slowness(eligible, sigs, health)
    old = reference_pool_wide_slowness(eligible, sigs, health)
    assert new == old
    assert list(new) == list(old)  # the same order too
    assert all(list(new[i]) == list(old[i]) for i in new)


def test_a_large_slow_pool_with_staggered_starts_is_judged_as_before():
    rng = random.Random(21)
    for _ in range(20):
        n = rng.randint(100, 400)
        names = [f"10.1.{k // 250}.{k % 250}:8000" for k in range(n)]
        sigs = {name: InstanceSignals(
            requests=500.0, ttft_p99_s=rng.choice([None, *([round(rng.uniform(0.4, 3.0), 2)] * 40)]),
            tpot_p99_s=rng.uniform(0.04, 0.2), e2e_p99_s=round(rng.uniform(2.0, 9.0), 1), window_s=60.0,
            judged_since=rng.choice([None, None, None, rng.uniform(0.0, 200.0)])) for name in names}
        health = HealthSettings().model_copy(update={"tpot_p99_degraded": 0.05, "e2e_p99_degraded": 2.5})
        assert pool_wide_slowness(names, sigs, health) == reference_pool_wide_slowness(names, sigs, health)


def test_a_pool_slow_everywhere_but_one_instance_holds_back_only_that_one():
    sigs = {f"h{k}": InstanceSignals(requests=100.0, ttft_p99_s=2.0 + k) for k in range(5)}
    sigs["h0"] = InstanceSignals(requests=100.0, ttft_p99_s=0.1)
    out = pool_wide_slowness(list(sigs), sigs, HealthSettings())
    assert list(out) == ["h0"]
    assert out["h0"]["TTFT p99"].startswith("ejection held back: the whole pool is slow (TTFT p99 median 4.5s "
                                            "of the other 4 instances")
