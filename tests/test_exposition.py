"""Our `vllm:` sample reader gives exactly what prometheus_client's parser gives, on every page we have."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.collect.exposition import ExpositionError, samples

from tests.helpers.exposition_pages import baseline_parse_page, pages
from tests.helpers.vllm_pages import FakeVllmV1


def reference(text: str) -> list[tuple]:
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("vllm:"):
                out.append((s.name, tuple(sorted(s.labels.items())), _key(s.value)))
    return sorted(out)


def ours(text: str) -> list[tuple]:
    return sorted((n, tuple(sorted(labels.items())), _key(v)) for n, labels, v in samples(text))


def _key(value: float):
    return "nan" if math.isnan(value) else value


@pytest.mark.parametrize("name", sorted(pages()))
def test_identical_to_prometheus_client(name):
    text = pages()[name]
    expected = reference(text)
    assert expected, "page has vllm: samples"
    assert ours(text) == expected


@pytest.mark.parametrize("line", [
    'vllm:num_requests_running{model_name="m" 3',
    'vllm:num_requests_running{model_name="m"} three',
    'vllm:num_requests_running{model_name=m} 3',
    'vllm:num_requests_running{model_name="m"}',
    'vllm:num-requests 3',
])
def test_malformed_lines_are_refused_like_prometheus_client(line):
    with pytest.raises(ExpositionError):
        list(samples(line + "\n"))
    with pytest.raises(Exception):
        list(text_string_to_metric_families(line + "\n"))


@pytest.mark.parametrize("name", sorted(pages()))
def test_parse_page_reading_only_the_families_it_uses_normalises_like_prometheus_client(name):
    from monitor.collect.vllm import parse_page

    text = pages()[name]
    assert repr(parse_page(text)) == repr(baseline_parse_page(text))


def test_a_broken_line_is_refused_in_a_family_we_use_and_skipped_in_one_we_do_not():
    from monitor.collect.vllm import PageError, parse_page

    good = 'vllm:num_requests_running{model_name="m"} 3\n'
    with pytest.raises(PageError, match="malformed"):
        parse_page(good + 'vllm:num_requests_waiting{model_name="m" 1\n')
    # vLLM's request-size histograms are never read, so a bad line there costs nothing
    [sample] = parse_page(good + 'vllm:request_prompt_tokens_bucket{le=oops} x\n')
    assert sample.gauges == {"running": 3.0}
