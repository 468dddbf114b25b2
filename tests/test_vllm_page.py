"""Parsing and normalising vLLM /metrics pages, V0 and V1, into one sample per model."""

from pathlib import Path

import pytest

from monitor.collect.vllm import PageError, parse_page, threshold_warning

from tests.helpers.vllm_pages import TTFT_BUCKETS, FakeVllmV1

FIXTURES = Path(__file__).parent / "fixtures"


def test_v1_page_maps_every_field():
    fake = FakeVllmV1()
    fake.finish(3, output_tokens=5, prompt_tokens=100)
    fake.finish(1, reason="error", output_tokens=5, prompt_tokens=100)
    fake.finish(2, reason="abort", output_tokens=5, prompt_tokens=100)
    fake.set_load(running=4, waiting=2, kv=0.37)
    fake.prefix_queries.labels(fake.models[0], "0").inc(1000)
    fake.prefix_hits.labels(fake.models[0], "0").inc(250)
    fake.preemptions.labels(fake.models[0], "0").inc(3)
    page = fake.render()
    assert "vllm:prompt_tokens_created" in page  # V1 pages carry _created families

    [sample] = parse_page(page)
    assert sample.model_name == "meta-llama/Llama-3.1-8B-Instruct"
    assert sample.counters["prompt_tokens"] == 600
    assert sample.counters["generation_tokens"] == 30
    assert sample.counters["preemptions"] == 3
    assert sample.counters["prefix_cache_queries"] == 1000
    assert sample.counters["prefix_cache_hits"] == 250
    assert sample.finished == {"stop": 3, "length": 0, "abort": 2, "error": 1}
    assert sample.gauges == {"running": 4, "waiting": 2, "kv_cache_usage": 0.37}
    ttft = sample.histograms["ttft"]
    assert ttft.bounds == tuple(TTFT_BUCKETS) + (float("inf"),)
    assert ttft.count == 6 and ttft.cumulative[-1] == 6
    assert sample.histograms["tpot"].count == 6 * 4  # one observation per token after the first
    assert set(sample.histograms) == {"ttft", "tpot", "itl", "e2e", "queue"}
    # this page has no per-request TPOT histogram: tpot keeps the per-token interval, as before 0.11
    assert sample.sources["tpot"] == sample.sources["itl"] == "vllm:inter_token_latency_seconds"


def test_v0_multiprocess_page_uses_old_names():
    [sample] = parse_page((FIXTURES / "vllm_v0_multiproc.txt").read_text())
    assert sample.model_name == "mistralai/Mistral-7B-Instruct-v0.3"
    assert sample.gauges["kv_cache_usage"] == 0.625  # from vllm:gpu_cache_usage_perc
    assert sample.gauges["prefix_cache_hit_rate"] == 0.42
    assert sample.gauges["running"] == 7 and sample.gauges["waiting"] == 3
    assert sample.counters == {"prompt_tokens": 5120, "generation_tokens": 820, "preemptions": 2}
    assert sample.finished == {"stop": 36, "length": 4}
    tpot = sample.histograms["tpot"]  # vllm:time_per_output_token_seconds
    assert tpot.count == 780 and tpot.bounds[-2] == 2.5
    ttft = sample.histograms["ttft"]
    assert ttft.sum == 7.25 and ttft.cumulative[ttft.bounds.index(0.25)] == 30


def test_newer_names_win_when_a_server_exposes_both():
    """0.10.2-0.11.x expose time_per_output_token and inter_token_latency; 0.9.2-0.11 both KV names."""
    page = (
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5\n'
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        'vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.1\n'
        "# TYPE vllm:inter_token_latency_seconds histogram\n"
        'vllm:inter_token_latency_seconds_bucket{engine="0",le="0.1",model_name="m"} 5\n'
        'vllm:inter_token_latency_seconds_bucket{engine="0",le="+Inf",model_name="m"} 7\n'
        'vllm:inter_token_latency_seconds_count{engine="0",model_name="m"} 7\n'
        'vllm:inter_token_latency_seconds_sum{engine="0",model_name="m"} 0.9\n'
        "# TYPE vllm:time_per_output_token_seconds histogram\n"
        'vllm:time_per_output_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 1\n'
        'vllm:time_per_output_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 1\n'
        'vllm:time_per_output_token_seconds_count{engine="0",model_name="m"} 1\n'
        'vllm:time_per_output_token_seconds_sum{engine="0",model_name="m"} 0.05\n'
    )
    [sample] = parse_page(page)
    assert sample.gauges["kv_cache_usage"] == 0.5
    assert sample.histograms["tpot"].count == 7


def test_page_with_two_model_names_gives_two_samples():
    fake = FakeVllmV1(models=("llama-8b", "llama-8b-lora"))
    fake.finish(5, model="llama-8b")
    fake.finish(2, model="llama-8b-lora", reason="length")
    fake.set_load(1, 0, 0.2, model="llama-8b")
    fake.set_load(3, 1, 0.6, model="llama-8b-lora")
    samples = {s.model_name: s for s in parse_page(fake.render())}
    assert set(samples) == {"llama-8b", "llama-8b-lora"}
    assert samples["llama-8b"].histograms["ttft"].count == 5
    assert samples["llama-8b-lora"].finished["length"] == 2
    assert samples["llama-8b-lora"].gauges["waiting"] == 1


def test_data_parallel_engines_are_added_together():
    lines = ["# TYPE vllm:num_requests_waiting gauge", "# TYPE vllm:kv_cache_usage_perc gauge",
             "# TYPE vllm:generation_tokens_total counter"]
    for engine, (waiting, kv, tokens) in enumerate([(2, 0.4, 100), (5, 0.8, 300)]):
        lines += [f'vllm:num_requests_waiting{{engine="{engine}",model_name="m"}} {waiting}',
                  f'vllm:kv_cache_usage_perc{{engine="{engine}",model_name="m"}} {kv}',
                  f'vllm:generation_tokens_total{{engine="{engine}",model_name="m"}} {tokens}']
    [sample] = parse_page("\n".join(lines) + "\n")
    assert sample.gauges["waiting"] == 7
    assert sample.gauges["kv_cache_usage"] == pytest.approx(0.6)
    assert sample.counters["generation_tokens"] == 400


def test_v0_disabled_prefix_cache_is_absent_not_minus_one():
    page = "# TYPE vllm:gpu_prefix_cache_hit_rate gauge\nvllm:gpu_prefix_cache_hit_rate{model_name=\"m\"} -1.0\n" \
           "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"m\"} 0\n"
    [sample] = parse_page(page)
    assert "prefix_cache_hit_rate" not in sample.gauges


@pytest.mark.parametrize(
    "page, reason",
    [
        ("# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 12\n", "not a vLLM endpoint"),
        ("<html><body>It works!</body></html>", "not a vLLM endpoint"),
        ("", "not a vLLM endpoint"),
        ('vllm:num_requests_running{model_name="m" 3\n', "malformed"),
        ('vllm:num_requests_running{model_name="m"} three\n', "malformed"),
        ('# TYPE vllm:e2e_request_latency_seconds histogram\n'
         'vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 3\n', "malformed"),
    ],
)
def test_unusable_pages_are_refused_with_a_reason(page, reason):
    with pytest.raises(PageError, match=reason):
        parse_page(page)


def test_threshold_warning_names_neighbouring_boundaries():
    warning = threshold_warning("ttft", 0.3)
    assert "250ms" in warning and "500ms" in warning and "exact: false" in warning
    assert threshold_warning("ttft", 0.5) is None
    assert threshold_warning("tpot", 0.1) is None
    assert "above the last bucket" in threshold_warning("e2e", 10_000)
