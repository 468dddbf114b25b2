"""The canary judge (monitor/decide/canary.py) and its settings (monitor/settings/canaries.py)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.config import ConfigError, validate
from monitor.decide.canary import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    GroupData,
    Rules,
    judge,
    mann_whitney,
    quantile_at,
    rebin,
    wilson,
)
from monitor.samples import Histogram
from tests.helpers.canary_data import Version, group, identical

ALL = ("ttft", "tpot", "itl", "e2e", "errors", "preemptions")
TOLERANCE = {"ttft": 0.1, "tpot": 0.1, "itl": 0.1, "e2e": 0.1, "errors": 0.001, "preemptions": 0.25}


def rules(**changes) -> Rules:
    base = {"metrics": ALL, "tolerance": TOLERANCE, "min_requests": 500, "min_duration_s": 300.0,
            "confidence": 0.95, "baseline_name": "v1", "candidate_name": "v2"}
    base.update(changes)
    return Rules(**base)


def test_identical_groups_pass_with_every_change_zero():
    base, cand = identical(2000)
    verdict = judge(base, cand, rules(), 600.0)
    assert verdict.verdict == PASS
    for result in verdict.metrics.values():
        assert result.verdict == PASS
        assert result.change in (0.0, None)
    assert verdict.reason.endswith(": pass")


def test_a_candidate_with_tpot_half_again_as_slow_fails_with_a_sentence_naming_the_regression():
    rng = random.Random(7)
    base = group(Version(), 3910, rng, instances=3)
    cand = group(Version(tpot_factor=1.5), 1240, rng)
    verdict = judge(base, cand, rules(), 600.0)
    assert verdict.verdict == FAIL
    assert verdict.metrics["tpot"].verdict == FAIL
    assert verdict.metrics["ttft"].verdict == PASS
    assert "on 1,240 v2 requests against 3,910 v1: fail" in verdict.reason
    low, high = verdict.metrics["tpot"].interval
    assert low > 0.1 and high > low


def test_a_ttft_regression_fails_the_ttft_metric():
    rng = random.Random(8)
    verdict = judge(group(Version(), 3000, rng), group(Version(ttft_factor=1.5), 3000, rng), rules(), 600.0)
    assert verdict.metrics["ttft"].verdict == FAIL
    assert verdict.verdict == FAIL


def test_an_error_ratio_three_points_higher_fails_errors():
    rng = random.Random(9)
    verdict = judge(group(Version(), 3000, rng), group(Version(error_ratio=0.03), 3000, rng), rules(), 600.0)
    assert verdict.metrics["errors"].verdict == FAIL
    assert "errors" in verdict.reason


def test_longer_prompts_and_answers_alone_do_not_fail_a_good_canary():
    rng = random.Random(10)
    cand = group(Version(mean_prompt_tokens=1500, mean_output_tokens=500), 2000, rng)
    verdict = judge(group(Version(), 4000, rng), cand, rules(), 600.0)
    assert verdict.verdict == PASS, verdict.reason
    assert verdict.metrics["ttft"].normalized == "per prompt token"


def test_twenty_requests_are_not_evidence():
    rng = random.Random(11)
    verdict = judge(group(Version(), 3000, rng), group(Version(tpot_factor=2.0), 20, rng), rules(), 600.0)
    assert verdict.verdict == INCONCLUSIVE
    assert "20 v2 requests of 500 needed" in verdict.reason
    assert all(r.verdict == INCONCLUSIVE for r in verdict.metrics.values())


def test_evidence_younger_than_min_duration_is_inconclusive():
    base, cand = identical(2000)
    verdict = judge(base, cand, rules(), 60.0)
    assert verdict.verdict == INCONCLUSIVE
    assert "evidence for 60s of 5m needed" in verdict.reason


def test_an_empty_group_is_named():
    base, _ = identical(1000)
    verdict = judge(base, GroupData(), rules(), None)
    assert verdict.verdict == INCONCLUSIVE and "no v2 instances" in verdict.reason


def test_a_metric_neither_group_reports_is_left_out_unless_listed():
    base, cand = identical(1000)
    strip = lambda g: GroupData(g.requests, g.errors, {k: v for k, v in g.histograms.items() if k != "itl"},
                                g.counters, g.instances)
    assert judge(strip(base), strip(cand), rules(), 600.0).verdict == PASS
    listed = judge(strip(base), strip(cand), rules(required=frozenset({"itl"})), 600.0)
    assert listed.verdict == INCONCLUSIVE


def test_mann_whitney_counts_a_bucket_as_ties():
    # all in one bucket on both sides: no evidence at all
    assert mann_whitney([10, 0], [0 + 10, 0])[0] == 1.0
    # the candidate entirely above the baseline: significant, U/(n1·n2) = 1
    p, effect = mann_whitney([50, 0], [0, 50])
    assert p < 1e-6 and effect == 1.0


def test_rebinning_keeps_every_count():
    bounds = (0.1, 0.2, 0.5, math.inf)
    counts = [3.0, 5.0, 7.0, 2.0]
    out = rebin(bounds, counts, (0.05, 0.15, 0.3, 1.0, math.inf), scale=1.3)
    assert math.isclose(sum(out), sum(counts))


def test_quantile_interpolates_within_a_bucket():
    assert math.isclose(quantile_at(0.5, (1.0, 2.0, math.inf), [0.0, 10.0, 0.0]), 1.5)


def test_wilson_interval_contains_zero_for_no_errors():
    low, high = wilson(0, 1000, 1.96)
    assert low == 0.0 and 0 < high < 0.01


# --- properties ----------------------------------------------------------------------------------

_counts = st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_counts)
def test_identical_bucket_counts_are_never_significant(counts):
    p, effect = mann_whitney(counts, counts)
    assert p >= 0.5 - 1e-6  # z is 0 up to rounding
    assert math.isfinite(effect)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=4, max_size=4),
       st.integers(min_value=1, max_value=10_000), st.integers(min_value=0, max_value=500))
def test_a_candidate_identical_to_its_baseline_never_fails(buckets, requests, errors):
    cumulative = tuple(float(sum(buckets[: i + 1])) for i in range(4))
    hist = Histogram((0.01, 0.1, 1.0, math.inf), cumulative, cumulative[-1] * 0.05, cumulative[-1])
    same = GroupData(float(requests), float(min(errors, requests)), {"ttft": hist, "tpot": hist},
                     {"prompt_tokens": 100.0 * requests, "preemptions": float(errors)}, 1)
    verdict = judge(same, same, rules(min_requests=1, min_duration_s=0.0), 1.0)
    assert verdict.verdict != FAIL
    for result in verdict.metrics.values():
        for value in (result.change, result.p_value, *(result.interval or ())):
            assert value is None or math.isfinite(value)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), min_size=2, max_size=6),
       st.floats(min_value=-1e9, max_value=1e12, allow_nan=False), st.floats(min_value=-1e9, max_value=1e12))
def test_hostile_counts_give_a_verdict_never_an_exception(cumulative, requests, errors):
    bounds = tuple(0.01 * (i + 1) for i in range(len(cumulative) - 1)) + (math.inf,)
    hist = Histogram(bounds, tuple(cumulative), 1.0, cumulative[-1])
    group_a = GroupData(requests, errors, {"ttft": hist}, {"prompt_tokens": requests, "preemptions": errors}, 1)
    group_b = GroupData(max(requests, 0.0) + 1, 0.0, {"ttft": hist}, {"prompt_tokens": 5.0, "preemptions": 0.0}, 1)
    verdict = judge(group_a, group_b, rules(min_requests=1, min_duration_s=0.0), 1.0)
    assert verdict.verdict in (PASS, FAIL, INCONCLUSIVE)
    for result in verdict.metrics.values():
        assert all(v is None or math.isfinite(v) for v in result.to_json().values() if isinstance(v, float))


# --- settings ------------------------------------------------------------------------------------

BASE = {"pools": [{"name": "chat", "discovery": [{"type": "file", "files": ["/tmp/none.json"]}]},
                  {"name": "static", "targets": ["http://127.0.0.1:8000"]}]}


def with_canary(**canary) -> dict:
    entry = {"name": "llama-v2", "pool": "chat", "baseline": {"labels": {"version": "v1"}},
             "candidate": {"labels": {"version": "v2"}}}
    entry.update(canary)
    return {**BASE, "canaries": [entry]}


def test_the_documented_canary_config_reads():
    config = validate(with_canary(metrics=["ttft", "itl", "e2e", "errors"],
                                  tolerance={"ttft": "10%", "itl": "10%", "errors": "0.1%"},
                                  min_requests=500, confidence="95%"), environ={}).config
    canary = config.canaries[0]
    assert canary.tolerance_of("errors") == pytest.approx(0.001)
    assert canary.tolerance_of("ttft") == pytest.approx(0.1)
    assert canary.confidence == pytest.approx(0.95)


@pytest.mark.parametrize("change, words", [
    ({"metrics": ["ttft", "gpu"]}, "unknown metric 'gpu'"),
    ({"tolerance": {"ttft": "lots"}}, "not a tolerance"),
    ({"confidence": "20%"}, "confidence out of range"),
    ({"pool": "nowhere"}, "no pool named 'nowhere'"),
    ({"candidate": {"labels": {"version": "v1"}}}, "select the same instances"),
    ({"candidate": {}}, "a group needs `labels`"),
])
def test_a_wrong_canary_is_named_by_key_path(change, words):
    with pytest.raises(ConfigError) as caught:
        validate(with_canary(**change), environ={})
    assert words in str(caught.value)
    assert "canaries[0]" in str(caught.value)


def test_check_warns_of_label_groups_in_a_pool_of_static_targets_and_of_overlap():
    loaded = validate(with_canary(pool="static", candidate={"labels": {"zone": "a"}}), environ={})
    text = "\n".join(loaded.warnings)
    assert "only static targets" in text
    assert "may overlap" in text


def test_two_pools_compare_without_labels():
    loaded = validate(with_canary(pool="chat", baseline={"pool": "static"}, candidate={"pool": "chat"}), environ={})
    assert not [w for w in loaded.warnings if "canaries" in w]


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=10))
def test_any_canary_entry_is_a_config_error_or_a_config(entry):
    try:
        validate({**BASE, "canaries": [entry]}, environ={})
    except ConfigError:
        pass
