"""OpenMetrics 1.0 is read as well as the text format (issue 19): the same page in either format gives
the same samples, read exactly as prometheus_client's OpenMetrics parser reads it; the scraper asks as
Prometheus asks, and a vLLM server's prometheus_client answers that with `vllm:` names."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from monitor.collect.exposition import ExpositionError, samples
from monitor.collect.scraper import ACCEPT, Scraper, Target
from monitor.collect.vllm import PageError, parse_page, read_page
from tests.helpers.exposition_pages import openmetrics_pages
from tests.helpers.realistic_page import build_registry
from tests.helpers.vllm_pages import FakeVllmV1

PAGES = openmetrics_pages()
# Prometheus 2.x's Accept header (the 2.42 installed here sends it): OpenMetrics without `escaping`
PROMETHEUS_2_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                       "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def _key(value: float) -> object:
    return "nan" if math.isnan(value) else value


def reference(text: str) -> list[tuple]:
    """prometheus_client's OpenMetrics parser (strict: it refuses a page that breaks the format)."""
    return sorted((s.name, tuple(sorted(s.labels.items())), _key(s.value))
                  for family in openmetrics_families(text) for s in family.samples if s.name.startswith("vllm:"))


def ours(text: str) -> list[tuple]:
    return sorted((n, tuple(sorted(labels.items())), _key(v)) for n, labels, v in samples(text))


@pytest.mark.parametrize("name", sorted(PAGES))
def test_the_same_page_in_openmetrics_gives_the_same_samples_as_in_the_text_format(name):
    text, openmetrics = PAGES[name]
    assert openmetrics.rstrip().endswith("# EOF") and text != openmetrics
    assert "\nvllm:" in openmetrics and "\nvllm_" not in openmetrics  # the names keep their colon
    assert repr(parse_page(openmetrics)) == repr(parse_page(text))
    assert parse_page(text)[0].histograms or parse_page(text)[0].counters  # a page with something on it


@pytest.mark.parametrize("name", sorted(PAGES))
def test_openmetrics_pages_read_exactly_as_prometheus_clients_openmetrics_parser(name):
    openmetrics = PAGES[name][1]
    assert ours(openmetrics) == reference(openmetrics)


# What vLLM's newer frontend answers (reference/vllm-metrics.md Part 4): counters typed without
# `_total`, `_created` samples, exemplars, # UNIT, float-second timestamps, info and stateset families.
FRONTEND_PAGE = """\
# HELP vllm:request_success Count of successfully processed requests.
# TYPE vllm:request_success counter
vllm:request_success_total{finished_reason="stop",model_name="m"} 151.0 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.087 1795342661.5
vllm:request_success_created{finished_reason="stop",model_name="m"} 1795340000.25
vllm:request_success_total{finished_reason="error",model_name="m"} 3.0
# TYPE vllm:prompt_tokens counter
# UNIT vllm:prompt_tokens tokens
vllm:prompt_tokens_total{model_name="m"} 15100.0 1795342661.5
# TYPE vllm:time_to_first_token_seconds histogram
# UNIT vllm:time_to_first_token_seconds seconds
vllm:time_to_first_token_seconds_bucket{le="0.25",model_name="m"} 140.0 # {trace_id="a1"} 0.21
vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="m"} 150.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 154.0
vllm:time_to_first_token_seconds_count{model_name="m"} 154.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 21.5
vllm:time_to_first_token_seconds_created{model_name="m"} 1795340000.25
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.42
# TYPE vllm:cache_config info
vllm:cache_config_info{block_size="16",num_gpu_blocks="2000"} 1
# TYPE engine_state stateset
engine_state{engine_state="awake",model_name="m"} 1
engine_state{engine_state="asleep",model_name="m"} 0
# EOF
"""
TEXT_TWIN = """\
# TYPE vllm:request_success_total counter
vllm:request_success_total{finished_reason="stop",model_name="m"} 151.0
vllm:request_success_total{finished_reason="error",model_name="m"} 3.0
vllm:prompt_tokens_total{model_name="m"} 15100.0 1795342661500
vllm:time_to_first_token_seconds_bucket{le="0.25",model_name="m"} 140.0
vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="m"} 150.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 154.0
vllm:time_to_first_token_seconds_count{model_name="m"} 154.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 21.5
vllm:kv_cache_usage_perc{model_name="m"} 0.42
vllm:cache_config_info{block_size="16",num_gpu_blocks="2000"} 1
"""


def test_a_frontend_page_with_exemplars_created_unit_info_and_stateset_reads_like_its_text_twin():
    assert ours(FRONTEND_PAGE) == reference(FRONTEND_PAGE)  # the page is valid OpenMetrics, read alike
    [sample] = parse_page(FRONTEND_PAGE)
    assert repr(parse_page(FRONTEND_PAGE)) == repr(parse_page(TEXT_TWIN))
    assert sample.finished == {"stop": 151.0, "error": 3.0}
    assert sample.counters == {"prompt_tokens": 15100.0}
    assert sample.histograms["ttft"].count == 154.0 and sample.gauges["kv_cache_usage"] == 0.42
    assert sample.gauges["kv_capacity_tokens"] == 32000.0


def test_the_scraper_asks_as_prometheus_3_does_and_prometheus_client_answers_openmetrics_with_vllm_names():
    encoder, content_type = choose_encoder(ACCEPT)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert "escaping=allow-utf-8" in content_type
    registry = build_registry()
    page = encoder(registry).decode()
    assert "\nvllm:time_to_first_token_seconds_bucket{" in page and page.rstrip().endswith("# EOF")
    assert repr(parse_page(page)) == repr(parse_page(choose_encoder("text/plain")[0](registry).decode()))


def test_a_page_written_with_underscores_for_the_colon_is_read_under_the_vllm_names():
    """prometheus_client asked for OpenMetrics without `escaping` (Prometheus 2.x's header) writes
    `vllm_` on the sample lines and `vllm:` in HELP/TYPE (client_python#1177)."""
    registry = build_registry()
    escaped = choose_encoder(PROMETHEUS_2_ACCEPT)[0](registry).decode()
    assert "\nvllm_time_to_first_token_seconds_bucket{" in escaped and "\nvllm:time_to" not in escaped
    assert repr(parse_page(escaped)) == repr(parse_page(choose_encoder("text/plain")[0](registry).decode()))


@pytest.mark.parametrize("line", [
    'vllm:request_success_total{model_name="m"} 1 # garbage',
    'vllm:request_success_total{model_name="m"} 1 # {trace_id="a"}',
    'vllm:request_success_total{model_name="m"} 1 # {trace_id=a} 0.5',
    'vllm:request_success_total{model_name="m"} 1 # {trace_id="a"} x',
    'vllm:request_success_total{model_name="m"} 1 # {trace_id="a"} 0.5 1 2',
    'vllm:request_success_total{model_name="m"} 1 #{trace_id="a"} 0.5',
    'vllm:request_success_total{model_name="m"} 1 1795342661.5.5',
    'vllm:request_success_total{model_name="m"} 1 NaN',
])
def test_a_malformed_exemplar_or_timestamp_is_refused_as_prometheus_clients_openmetrics_parser_refuses_it(line):
    page = f"# TYPE vllm:request_success counter\n{line}\n# EOF\n"
    with pytest.raises(ExpositionError):
        list(samples(page))
    with pytest.raises(PageError, match="malformed metrics page"):
        parse_page(page)
    with pytest.raises(ValueError):
        list(openmetrics_families(page))


def test_a_label_value_holding_an_exemplar_lookalike_is_a_label_value():
    page = ('# TYPE vllm:num_preemptions counter\n'
            'vllm:num_preemptions_total{model_name="m # {a=\\"b\\"} 1"} 3 # {trace_id="x"} 1\n# EOF\n')
    assert ours(page) == reference(page) == [("vllm:num_preemptions_total", (("model_name", 'm # {a="b"} 1'),), 3.0)]


def test_read_page_of_a_healthy_openmetrics_page_names_no_bad_sample():
    page = read_page(PAGES["v1-realistic-58k"][1])
    assert page.bad == () and page.models[0].refused == frozenset()


@pytest.mark.e2e
async def test_a_prometheus_client_server_negotiating_openmetrics_is_scraped_with_every_family():
    """A real prometheus_client HTTP server (as vLLM's /metrics negotiates) scraped by the scraper."""
    fake = FakeVllmV1(seed=5)
    fake.finish(40)
    fake.set_load(3, 1, 0.5)
    Gauge("vllm:cache_config_info", "cache", ["block_size", "num_gpu_blocks"], registry=fake.registry) \
        .labels("16", "100").set(1)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=fake.registry)
    scraper = Scraper(timeout=5.0, max_body_size=4 << 20, health_path=None)
    try:
        result = await scraper.scrape(Target("p", f"http://127.0.0.1:{server.server_port}"))
    finally:
        await scraper.aclose()
        server.shutdown()
        thread.join(5)
    assert result.ok, result.error
    assert repr(list(result.models)) == repr(parse_page(fake.render()))
    assert result.bad_samples == ()


def test_an_empty_registry_rendered_as_openmetrics_is_not_a_vllm_endpoint():
    from prometheus_client.openmetrics.exposition import generate_latest

    with pytest.raises(PageError, match="not a vLLM endpoint"):
        parse_page(generate_latest(CollectorRegistry()).decode())
