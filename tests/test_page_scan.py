"""The one-pass page scan (issue 21): `samples(text, prefix, names)` and `grouped_samples` find the lines
of the wanted families with one regular expression over the whole page instead of a Python loop over
its lines. The line-by-line reader stays the reference: over generated pages mixing wanted names with
their near neighbours (a longer name, a shorter one, another prefix), plain and escaped label sets,
timestamps, exemplars, `\\r`, blanks before a name, garbage values and broken labels, both give the same
samples in the same order, or both refuse the page."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from monitor.collect.exposition import ExpositionError, _line_by_line, grouped_samples, samples
from monitor.collect.vllm import USED_NAMES, read_page
from tests.helpers.realistic_page import build, build_openmetrics

FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
WANTED = frozenset({"vllm:a_total", "vllm:h_bucket", "vllm:h_count", "vllm:g", "vllm:gg"})

name = st.sampled_from([*sorted(WANTED), "vllm:a_totalx", "vllm:a_tota", "vllm:h", "vllm:ggg", "vllm_g",
                        "vllmx:g", "process_cpu_seconds_total", "vllm:a_total\x0b", "vllm:g:x"])
label_text = st.sampled_from(['', '{}', '{model_name="m"}', '{model_name="m",engine="0"}', '{le="0.5",model_name="m"}',
                              '{le="+Inf"}', '{a="x",}', '{ a = "1" }', '{a="q\\"uote"}', '{a="b\\nc"}', '{a="1"',
                              '{a=1}', '{model_name="m",model_name="n"}', '{a="\r"}', ' {a="1"}', '{a="#"}', '{a="x}y"}', '{a="}"}',
                              '{model_name="m",le="1"}'])
value = st.sampled_from(["1", "0", "2.5", "1e3", "NaN", "+Inf", "-Inf", "two", "", "1\r2", "0x10", "1_000"]) | st.floats(
    allow_nan=False).map(repr)
tail = st.sampled_from(["", "", "", " 1700000000000", " 1.5", " x", ' # {trace_id="t"} 0.5', " # {} 1 2", " #", "\r",
                        "\r\r", " 1 2 3", "\t"])
lead = st.sampled_from(["", "", "", "", " ", "\t"])
other = st.sampled_from(["", "# HELP vllm:g help", "# TYPE vllm:g gauge", "# EOF", "garbage", "vllm:", "#", "\r"])


@st.composite
def page(draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.integers(0, 4)) == 0:
            lines.append(draw(other))
        else:
            lines.append(f"{draw(lead)}{draw(name)}{draw(label_text)} {draw(value)}{draw(tail)}")
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))


def outcome(read) -> list | str:
    try:
        return [(n, labels, "nan" if math.isnan(v) else v) for n, labels, v in read()]
    except ExpositionError:
        return "refused"


@FUZZ
@given(page())
@example('vllm:g 1\n vllm:g 2\n')
@example('vllm:g{a="1"} 2 # {trace_id="t"} 0.5\r\nvllm:gg 3\r\n')
@example('vllm:a_total')
@example('vllm:h_bucket{le="1"} 1\r2\n')
def test_the_scan_reads_any_page_as_the_line_by_line_reader_does(text: str) -> None:
    assert outcome(lambda: samples(text, "vllm:", WANTED)) == outcome(lambda: _line_by_line(text, "vllm:", WANTED))


@FUZZ
@given(page())
def test_grouping_by_a_label_keeps_every_sample_and_its_order(text: str) -> None:
    expected = outcome(lambda: _line_by_line(text, "vllm:", WANTED))
    try:
        grouped = grouped_samples(text, "model_name", "vllm:", WANTED)
    except ExpositionError:
        assert expected == "refused"
        return
    assert expected != "refused"
    for sample_name in {n for n, _, _ in expected}:
        rows = [(labels, v) for n, labels, v in expected if n == sample_name]
        regrouped: dict[str, list] = {}
        for labels, v in rows:
            rest = dict(labels)
            regrouped.setdefault(rest.pop("model_name", ""), []).append((rest, v))
        got = {model: [(labels, "nan" if math.isnan(v) else v) for labels, v in kept]
               for model, kept in grouped[sample_name].items()}
        assert got == regrouped
    assert set(grouped) == {n for n, _, _ in expected}


@pytest.mark.parametrize("render", [build, build_openmetrics])
def test_a_real_page_reads_the_same_either_way(render) -> None:
    text = render(seed=3)
    scanned = list(samples(text, "vllm:", USED_NAMES))
    assert len(scanned) > 100
    assert scanned == list(_line_by_line(text, "vllm:", USED_NAMES))


def test_an_indented_sample_line_is_read_not_skipped() -> None:
    text = build(seed=1)
    indented = text.replace("\nvllm:num_requests_running{", "\n  vllm:num_requests_running{", 1)
    assert read_page(indented).models[0].gauges["running"] == read_page(text).models[0].gauges["running"]
