"""A reading kept in a window holds each number once (issue 21, "memory that scales"): the normaliser
shares a page's equal floats, sources and bounds, and the fleet view points what a reading repeats of
the instance's last one at the last one's objects. None of it may change a value: a reading read with
the sharing equals, float for float and sign for sign, the one read without it, and no table of shared
things grows with what pages hold."""

from __future__ import annotations

import dataclasses
import math
import re
from contextlib import contextmanager
from typing import Any, Iterator
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.collect import vllm
from monitor.collect.vllm import read_page
from monitor.evaluate import fleet as fleet_module
from monitor.evaluate.fleet import FleetView
from monitor.samples import ModelSample, ScrapeResult
from tests.helpers.realistic_page import build_live
from tests.helpers.vllm_pages import ITL_BUCKETS, TTFT_BUCKETS, FakeVllmV1

# -- what "the same reading" means: equal, and every float the same float (type, sign, repr) --------------


def exact(a: Any, b: Any, where: str = "") -> None:
    """Assert `a` and `b` hold the same values, floats compared by repr (so 0.0 is not -0.0)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, float):
        assert repr(a) == repr(b), f"{where}: {a!r} != {b!r}"
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            exact(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            exact(a[key], b[key], f"{where}[{key}]")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            exact(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@contextmanager
def no_sharing() -> Iterator[None]:
    """The normaliser and the fleet view as they were before sharing: every number its own object."""
    with mock.patch.object(vllm, "_page_share", lambda: lambda value, default: default), \
            mock.patch.object(vllm, "_shared_sources", lambda sources: sources), \
            mock.patch.object(fleet_module, "share_unchanged", lambda previous, sample: sample):
        yield


def read_both(text: str):
    shared = read_page(text)
    with no_sharing():
        plain = read_page(text)
    return shared, plain


# -- pages: realistic ones with traffic, and made-up ones full of repeats, zeros of both signs, NaN --------

HISTOGRAM_FAMILIES = {
    "vllm:time_to_first_token_seconds": TTFT_BUCKETS[:6],
    "vllm:inter_token_latency_seconds": ITL_BUCKETS[:5],
    "vllm:time_per_output_token_seconds": ITL_BUCKETS[:5],  # before 0.11: tpot and itl are this one
    "vllm:e2e_request_latency_seconds": [0.5, 1.0],
}
PLAIN_FAMILIES = ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                  "vllm:gpu_cache_usage_perc", "vllm:prompt_tokens_total", "vllm:num_preemptions_total",
                  "vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hit_rate"]
VALUES = st.one_of(st.sampled_from(["0", "-0", "0.0", "-0.0", "1", "1.0", "2", "3e0", "500", "0.25", "NaN", "+Inf",
                                    "1e308", "-1", "-1e308"]),
                   st.floats(allow_nan=False, allow_infinity=False).map(repr))


@st.composite
def made_up_pages(draw) -> str:
    lines = []
    models = draw(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=2, unique=True))
    engines = draw(st.lists(st.sampled_from(["0", "1"]), min_size=1, max_size=2, unique=True))
    for model in models:
        for engine in engines:
            who = f'model_name="{model}",engine="{engine}"'
            for family, bounds in HISTOGRAM_FAMILIES.items():
                if not draw(st.booleans()):
                    continue
                for le in [*map(repr, bounds), "+Inf"]:
                    lines.append(f'{family}_bucket{{{who},le="{le}"}} {draw(VALUES)}')
                lines.append(f"{family}_sum{{{who}}} {draw(VALUES)}")
                lines.append(f"{family}_count{{{who}}} {draw(VALUES)}")
            for family in PLAIN_FAMILIES:
                if draw(st.booleans()):
                    lines.append(f"{family}{{{who}}} {draw(VALUES)}")
            for reason in ("stop", "error"):
                lines.append(f'vllm:request_success_total{{{who},finished_reason="{reason}"}} {draw(VALUES)}')
            if draw(st.booleans()):  # a repeated series, maybe with another value
                lines.append(f"vllm:num_requests_running{{{who}}} {draw(VALUES)}")
    return "\n".join(lines) + "\n"


@st.composite
def realistic_pages(draw) -> str:
    fake = build_live(seed=draw(st.integers(0, 3)), requests=draw(st.integers(0, 50)))
    for _ in range(draw(st.integers(0, 3))):
        fake.finish(draw(st.integers(0, 8)), ttft=(0.05, draw(st.sampled_from([0.3, 2.0]))), output_tokens=3)
        fake.set_load(draw(st.integers(0, 16)), draw(st.integers(0, 4)), draw(st.sampled_from([0.0, 0.5, 0.61])))
    return fake.render()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(made_up_pages(), realistic_pages()))
def test_a_page_read_with_its_numbers_shared_is_the_page_read_without(text):
    try:
        shared, plain = read_both(text)
    except vllm.PageError as exc:  # a page refused with the sharing is refused without it, for the same reason
        with no_sharing(), pytest.raises(vllm.PageError, match=re.escape(str(exc))):
            read_page(text)
        return
    assert shared.models == plain.models
    exact(shared.models, plain.models, "models")
    assert [str(b) for b in shared.bad] == [str(b) for b in plain.bad]


def test_equal_numbers_of_a_reading_are_one_object_and_a_page_with_traffic_keeps_a_fifth_of_them():
    fake = build_live(seed=1)
    fake.finish(40, ttft=(0.05, 0.9), output_tokens=12)
    shared, plain = read_both(fake.render())
    (sample,), (before,) = shared.models, plain.models

    def numbers(s: ModelSample) -> list[float]:
        out = [v for h in s.histograms.values() for v in (*h.cumulative, h.sum, h.count)]
        return out + [*s.counters.values(), *s.gauges.values(), *s.finished.values()]

    assert len({id(v) for v in numbers(sample)}) == len(set(numbers(sample)))  # one object per value
    assert len({id(v) for v in numbers(sample)}) * 3 < len({id(v) for v in numbers(before)})
    assert sample.refused is vllm.NOTHING_REFUSED


def test_no_number_the_normaliser_keeps_is_minus_zero_so_sharing_zeros_cannot_change_a_sign():
    page = "".join(f'vllm:time_to_first_token_seconds_bucket{{model_name="m",le="{le}"}} -0\n'
                   for le in ("0.1", "+Inf"))
    page += ('vllm:time_to_first_token_seconds_sum{model_name="m"} -0.0\n'
             'vllm:time_to_first_token_seconds_count{model_name="m"} -0\n'
             'vllm:num_requests_running{model_name="m",engine="0"} -0\n'
             'vllm:num_requests_running{model_name="m",engine="1"} -0\n'
             'vllm:kv_cache_usage_perc{model_name="m"} -0\n'
             'vllm:prompt_tokens_total{model_name="m"} -0.0\n'
             'vllm:num_requests_waiting_by_reason{model_name="m",reason="capacity"} -0\n'
             'vllm:request_success_total{model_name="m",finished_reason="stop"} -0\n')
    (sample,) = read_page(page).models
    h = sample.histograms["ttft"]
    kept = [*h.cumulative, h.sum, h.count, *sample.counters.values(), *sample.gauges.values(),
            *sample.finished.values()]
    assert kept and all(v == 0.0 and math.copysign(1.0, v) == 1.0 for v in kept)


def test_a_family_read_for_two_keys_is_read_once_and_refused_once():
    old = FakeVllmV1(seed=2)  # a page before 0.10.2: the per-token interval under its old name only
    old.finish(5)
    text = old.render().replace("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
    shared, plain = read_both(text)
    (sample,) = shared.models
    assert sample.histograms["tpot"] is sample.histograms["itl"]
    exact(shared.models, plain.models, "models")
    poisoned = re.sub(r"^(vllm:time_per_output_token_seconds_sum\{[^}]*\}) \S+$", r"\1 NaN", text, flags=re.MULTILINE)
    shared, plain = read_both(poisoned)
    assert {"tpot", "itl"} <= shared.models[0].refused
    assert [str(b) for b in shared.bad] == [str(b) for b in plain.bad] == [
        "bad sample: vllm:time_per_output_token_seconds_sum = NaN"]


def test_the_table_of_shared_sources_stays_bounded_however_many_kinds_of_page_come():
    vllm._SOURCES.clear()
    for i in range(vllm.SOURCES_KEPT * 4):
        sources = {"ttft": f"vllm:family_{i}"}
        assert vllm._shared_sources(dict(sources)) == sources
        assert len(vllm._SOURCES) <= vllm.SOURCES_KEPT
    page = "".join(f'vllm:time_to_first_token_seconds_bucket{{model_name="m{i}",le="+Inf"}} {i}.5\n'
                   for i in range(5000))
    vllm._SOURCES.clear()
    assert len(read_page(page).models) == 5000
    assert len(vllm._SOURCES) == 1 and len(vllm._BOUNDS) <= vllm.BOUNDS_KEPT  # distinct numbers: nothing kept


# -- the fleet view: what a reading repeats of the last one is the last one's ------------------------------


def _result(text: str, at: float) -> ScrapeResult:
    page = read_page(text)
    return ScrapeResult("pool", "i:1", "http://i:1", at, 0.01, tuple(page.models), bad_samples=page.bad)


def test_a_reading_repeating_the_last_one_holds_the_last_ones_objects():
    fake = build_live(seed=0)
    fleet = FleetView(60.0, 15.0, {"pool": {"i:1": "http://i:1"}})
    text = fake.render()
    fleet.ingest([_result(text, 1000.0), _result(text, 1015.0)])
    (first, _), (second, _) = [(s, t) for t, s in fleet.tracks["i:1"].samples[fake.models[0]]]
    for name in ("histograms", "counters", "gauges", "finished", "sources"):  # an idle instance's reading: one copy
        assert getattr(second, name) is getattr(first, name), name
    fake.finish(3, ttft=(0.05, 0.3), output_tokens=4)  # traffic: the histograms that moved are new
    fleet.ingest([_result(fake.render(), 1030.0)])
    third = fleet.tracks["i:1"].samples[fake.models[0]][-1][1]
    assert third.histograms["ttft"] != second.histograms["ttft"]
    assert third.histograms["tpot"] is second.histograms["tpot"]  # not observed by this traffic
    assert third.gauges["kv_gpu_blocks"] is second.gauges["kv_gpu_blocks"]
    assert third.counters is not second.counters and third.counters["preemptions"] is second.counters["preemptions"]


def test_a_mapping_holding_the_same_numbers_in_another_order_keeps_its_order():
    previous = ModelSample("m", counters={"a": 1.0, "b": 2.0}, gauges={"g": 0.5})
    sample = ModelSample("m", counters={"b": 2.0, "a": 1.0}, gauges={"g": 0.5})
    kept = fleet_module.share_unchanged(previous, sample)
    assert list(kept.counters) == ["b", "a"] and kept.counters["a"] is previous.counters["a"]
    assert kept.gauges is previous.gauges and kept.model_name == "m"
    assert fleet_module.share_unchanged(previous, previous) is previous


# one instance scraped a few times; between two scrapes: (finished requests, their reason, the load set or None)
STEPS = st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["stop", "error"]),
                           st.none() | st.tuples(st.integers(0, 9), st.integers(0, 3), st.sampled_from([0.1, 0.61]))),
                 min_size=1, max_size=7)


def traffic_pages(seed: int, requests: int, steps: list) -> list[str]:
    fake = build_live(seed=seed, requests=requests)
    pages = [fake.render()]
    for finished, reason, load in steps:
        if finished:
            fake.finish(finished, ttft=(0.05, 0.6), output_tokens=3, reason=reason)
        if load is not None:
            fake.set_load(*load)
        pages.append(fake.render())
    return pages


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 3), st.integers(0, 20), STEPS, st.sampled_from([15.0, 40.0, 60.0]))
def test_the_fleet_view_answers_the_same_with_readings_shared_as_without(seed, requests, steps, window):
    pages = traffic_pages(seed, requests, steps)

    def run() -> tuple[list, list, list]:
        fleet = FleetView(window, 15.0, {"pool": {"i:1": "http://i:1"}})
        answers = []
        for k, text in enumerate(pages):
            fleet.ingest([_result(text, 1000.0 + 15.0 * k)])
            track = fleet.tracks["i:1"]
            answers.append((fleet.stats(track, 1005.0 + 15.0 * k), fleet.view(track, 1005.0 + 15.0 * k)))
        kept = [s for series in fleet.tracks["i:1"].samples.values() for _, s in series]
        return answers, kept, fleet.rollups(960.0) + fleet.rollups(1020.0) + fleet.rollups(1080.0)

    shared = run()
    with no_sharing():
        plain = run()
    assert shared == plain
    exact(shared, plain, "answers, kept readings, rollups")
