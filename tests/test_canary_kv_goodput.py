"""Canary metrics `kv_usage` (the KV-cache gauge at each scrape) and `goodput` (the share of requests
within the pool's latency objectives): the judge (monitor/decide/canary.py), the thresholds read off
the SLOs, and the running service gathering both per group."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import validate
from monitor.decide.canary import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    GroupData,
    Rules,
    judge,
    share_under,
)
from monitor.samples import Histogram
from monitor.service.canaries import goodput_thresholds
from monitor.service.core import Service
from tests.helpers.canary_data import Version, group
from tests.helpers.page_scraper import PageScraper
from tests.helpers.vllm_pages import FakeVllmV1

TOLERANCE = {"ttft": 0.1, "tpot": 0.1, "itl": 0.1, "e2e": 0.1, "errors": 0.001, "goodput": 0.01,
             "preemptions": 0.25, "kv_usage": 0.10}


def rules(metrics=("kv_usage",), **changes) -> Rules:
    base = {"metrics": metrics, "tolerance": TOLERANCE, "min_requests": 100, "min_duration_s": 0.0,
            "confidence": 0.95, "baseline_name": "v1", "candidate_name": "v2"}
    base.update(changes)
    return Rules(**base)


def with_kv(data: GroupData, values: list[float]) -> GroupData:
    return GroupData(data.requests, data.errors, data.histograms, data.counters, data.instances,
                     {"kv_usage": values})


def kv_values(mean: float, n: int, rng: random.Random) -> list[float]:
    return [min(1.0, max(0.0, rng.gauss(mean, 0.08))) for _ in range(n)]


# --- kv_usage ------------------------------------------------------------------------------------


def test_a_candidate_using_twenty_points_more_kv_cache_fails_in_points():
    rng = random.Random(3)
    base = with_kv(group(Version(), 1000, rng, instances=3), kv_values(0.40, 900, rng))
    cand = with_kv(group(Version(), 400, rng), kv_values(0.60, 300, rng))
    verdict = judge(base, cand, rules(), 600.0)
    result = verdict.metrics["kv_usage"]
    assert verdict.verdict == FAIL and result.verdict == FAIL
    assert 0.15 < result.change < 0.25 and result.quantile == "mean"
    assert result.interval[0] > 0.1
    assert verdict.reason.startswith("KV cache usage mean +")
    assert " points [" in verdict.reason


def test_kv_usage_a_little_higher_than_the_baseline_passes_however_many_samples():
    rng = random.Random(4)
    base = with_kv(group(Version(), 1000, rng), kv_values(0.40, 20000, rng))
    cand = with_kv(group(Version(), 1000, rng), kv_values(0.43, 20000, rng))
    result = judge(base, cand, rules(), 600.0).metrics["kv_usage"]
    assert result.verdict == PASS
    assert result.p_value < 0.001  # significant, but within the 10-point tolerance


def test_identical_kv_usage_passes():
    rng = random.Random(5)
    values = kv_values(0.5, 500, rng)
    base = with_kv(group(Version(), 500, rng), values)
    cand = with_kv(group(Version(), 500, rng), list(values))
    result = judge(base, cand, rules(), 600.0).metrics["kv_usage"]
    assert result.verdict == PASS and result.change == 0.0


def test_kv_usage_without_samples_is_left_out_by_default_and_keeps_a_listed_canary_inconclusive():
    rng = random.Random(6)
    base, cand = group(Version(), 600, rng), group(Version(), 600, rng)
    everything = ("ttft", "tpot", "itl", "e2e", "errors", "goodput", "preemptions", "kv_usage")
    by_default = judge(base, cand, rules(everything), 600.0)
    assert by_default.metrics["kv_usage"].verdict == INCONCLUSIVE
    assert by_default.verdict == PASS
    listed = judge(base, cand, rules(("kv_usage",), required=frozenset({"kv_usage"})), 600.0)
    assert listed.verdict == INCONCLUSIVE
    assert "KV cache usage samples from v1" in listed.reason


def test_hostile_kv_samples_are_not_judged():
    rng = random.Random(7)
    base = with_kv(group(Version(), 500, rng), kv_values(0.4, 300, rng) + [math.nan, -1.0, 7.0, math.inf])
    cand = with_kv(group(Version(), 500, rng), kv_values(0.4, 300, rng) + [math.nan] * 50)
    result = judge(base, cand, rules(), 600.0).metrics["kv_usage"]
    assert result.verdict == PASS
    assert all(math.isfinite(v) for v in (result.baseline, result.candidate, result.change, *result.interval))


# --- goodput -------------------------------------------------------------------------------------


def test_share_under_a_threshold_reads_the_bucket_linearly():
    hist = Histogram((0.1, 0.2, math.inf), (50.0, 90.0, 100.0), 10.0, 100.0)
    assert share_under(hist, 0.1) == 0.5
    assert math.isclose(share_under(hist, 0.15), 0.7)
    assert share_under(hist, 5.0) == 0.9  # the +Inf bucket's requests are over any finite threshold
    assert share_under(Histogram((0.1, math.inf), (0.0, 0.0), 0.0, 0.0), 0.1) is None


def test_a_candidate_with_more_requests_over_the_ttft_objective_fails_goodput_in_points():
    rng = random.Random(8)
    base = group(Version(), 3000, rng, instances=3)
    cand = group(Version(ttft_factor=1.6), 1500, rng)
    verdict = judge(base, cand, rules(("goodput",), goodput_thresholds={"ttft": 0.1}), 600.0)
    result = verdict.metrics["goodput"]
    assert result.verdict == FAIL
    assert result.candidate < result.baseline and result.change < -0.01
    assert result.interval[1] < 0
    assert verdict.reason.startswith("goodput -") and verdict.reason.endswith(": fail")


def test_goodput_of_the_same_version_passes_and_without_a_latency_slo_is_left_out():
    rng = random.Random(9)
    base, cand = group(Version(), 2000, rng), group(Version(), 2000, rng)
    judged = judge(base, cand, rules(("goodput", "errors"), goodput_thresholds={"ttft": 0.1, "tpot": 0.05}), 600.0)
    assert judged.metrics["goodput"].verdict == PASS
    without = judge(base, cand, rules(("goodput", "errors")), 600.0)
    assert without.metrics["goodput"].verdict == INCONCLUSIVE
    assert "no latency SLO" in without.metrics["goodput"].note
    assert without.verdict == PASS


def test_goodput_objectives_are_the_tightest_latency_slo_thresholds_covering_the_pool():
    config = validate({
        "pools": [{"name": "chat", "targets": ["http://127.0.0.1:9101"]},
                  {"name": "batch", "targets": ["http://127.0.0.1:9102"]}],
        "slos": [
            {"name": "ttft-1s", "indicator": {"type": "latency", "metric": "ttft", "threshold": "1s"},
             "objective": "99%"},
            {"name": "ttft-300ms", "indicator": {"type": "latency", "metric": "ttft", "threshold": "300ms"},
             "objective": "95%", "pools": ["chat"]},
            {"name": "tpot-batch", "indicator": {"type": "latency", "metric": "tpot", "threshold": "50ms"},
             "objective": "99%", "pools": ["batch"]},
            {"name": "queue", "indicator": {"type": "latency", "metric": "queue", "threshold": "2s"},
             "objective": "99%"},
            {"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%"},
        ],
        "canaries": [{"name": "c", "pool": "chat", "baseline": {"labels": {"version": "v1"}},
                      "candidate": {"labels": {"version": "v2"}}}],
    }, environ={}).config
    assert goodput_thresholds(config.canaries[0], config.slos) == {"ttft": 0.3}


@settings(max_examples=200, deadline=2000)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=60),
       st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=60),
       st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
def test_any_kv_samples_and_request_counts_give_a_verdict_with_finite_figures(xb, xc, nb, nc):
    base = GroupData(nb, 0.0, {}, {}, 1, {"kv_usage": xb})
    cand = GroupData(nc, 0.0, {}, {}, 1, {"kv_usage": xc})
    verdict = judge(base, cand, rules(("kv_usage", "goodput"), goodput_thresholds={"ttft": 0.1},
                                      min_requests=1), 600.0)
    assert verdict.verdict in (PASS, FAIL, INCONCLUSIVE)
    for result in verdict.metrics.values():
        body = result.to_json()
        assert json.loads(json.dumps(body, allow_nan=False)) == body


# --- in the service ------------------------------------------------------------------------------


V1 = ["127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"]
V2 = ["127.0.0.1:9104"]


async def test_the_service_gathers_each_groups_kv_usage_and_goodput_and_fails_a_candidate_on_them(tmp_path):
    sd = tmp_path / "targets.json"
    sd.write_text(json.dumps([{"targets": V1, "labels": {"version": "v1"}},
                              {"targets": V2, "labels": {"version": "v2"}}]))
    config = validate({
        "pools": [{"name": "chat", "discovery": [{"type": "file", "files": [str(sd)]}]}],
        "slos": [{"name": "ttft-300ms", "indicator": {"type": "latency", "metric": "ttft", "threshold": "300ms"},
                  "objective": "95%"}],
        "canaries": [{"name": "llama-v2", "pool": "chat", "baseline": {"labels": {"version": "v1"}},
                      "candidate": {"labels": {"version": "v2"}}, "metrics": ["kv_usage", "goodput"],
                      "min_requests": 150, "min_duration": "1s"}],
    }, environ={}).config
    service = Service(config)
    rng = random.Random(1)

    def advance(instance: str, page: FakeVllmV1) -> None:
        child = page.kv.labels(page.models[0], "0")
        if instance in V2:  # a KV-hungrier candidate, a third of its requests over the TTFT objective
            page.finish(25, ttft=(0.1, 0.45))
            child.set(rng.uniform(0.6, 0.8))
        else:
            page.finish(25, ttft=(0.1, 0.25))
            child.set(rng.uniform(0.2, 0.4))

    service.scraper = PageScraper(advance)
    await service.discovery.refresh()
    service.apply_membership(service.discovery.membership, time.time())
    state = service.canaries.states["llama-v2"]
    for _ in range(100):
        await service.scrape_cycle()
        if state.verdict is not None and state.verdict.verdict != INCONCLUSIVE:
            break
        await asyncio.sleep(0.05)
    assert state.verdict is not None and state.verdict.verdict == FAIL, state.verdict
    kv, goodput = state.verdict.metrics["kv_usage"], state.verdict.metrics["goodput"]
    assert kv.verdict == FAIL and 0.25 < kv.change < 0.55
    assert goodput.verdict == FAIL and goodput.baseline == 1.0 and goodput.candidate < 0.8
