"""The parser's fast path for plain sample lines (issue 21): label sets are shared between pages through a
cache, so what one caller does to its labels must never reach the next page, and a line the fast path does not
take still gets the general reader's checks."""

from __future__ import annotations

import pytest

from monitor.collect.exposition import ExpositionError, samples
from monitor.collect.vllm import read_page
from tests.helpers.realistic_page import build

PAGE = 'vllm:x_total{model_name="m",engine="0"} 3.0\nvllm:y 1\n'


def test_a_label_set_changed_by_one_caller_is_unchanged_on_the_next_page():
    first = list(samples(PAGE))
    first[0][1].pop("model_name")
    first[0][1]["engine"] = "changed"
    assert list(samples(PAGE)) == [("vllm:x_total", {"model_name": "m", "engine": "0"}, 3.0), ("vllm:y", {}, 1.0)]


@pytest.mark.parametrize("line, expected", [
    ('vllm:x_total{a="1"} 2 1700000000000', ("vllm:x_total", {"a": "1"}, 2.0)),  # a timestamp
    ('vllm:x_total{a="1"} 2 # {trace_id="t"} 0.5', ("vllm:x_total", {"a": "1"}, 2.0)),  # an exemplar
    ('vllm:x_total{a="q\\"uote"} 2', ("vllm:x_total", {"a": 'q"uote'}, 2.0)),  # an escape
    ('vllm:x_total { a = "1" } 2', ("vllm:x_total", {"a": "1"}, 2.0)),  # blanks
])
def test_lines_off_the_fast_path_read_as_before(line, expected):
    assert list(samples(line + "\n")) == [expected]


@pytest.mark.parametrize("line", ['vllm:x_total{a="1"} two', 'vllm:x_total{a="1"}', 'vllm:x_total{a="1" 2'])
def test_a_broken_line_is_still_named(line):
    with pytest.raises(ExpositionError):
        list(samples(line + "\n"))


def test_pages_with_the_same_buckets_share_one_copy_of_the_bounds():
    first, second = read_page(build(seed=1)).models[0], read_page(build(seed=2)).models[0]
    assert first.histograms and first.histograms.keys() == second.histograms.keys()
    for key, hist in first.histograms.items():
        assert hist.bounds is second.histograms[key].bounds
