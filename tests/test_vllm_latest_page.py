"""Current vLLM's families (reference/vllm-metrics.md Part 3) as our reader gives them: the simulator's
`latest` page and hand-written pages read identically by our reader and by prometheus_client, and
normalised into the new sample fields."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.collect.exposition import samples
from monitor.collect.vllm import parse_page
from monitor.sim.metrics import FinishedStats, StepStats, VllmMetrics
from tests.helpers.exposition_pages import baseline_parse_page

FIXTURES = Path(__file__).parent / "fixtures"


def simulator_page(version: str = "latest") -> str:
    metrics = VllmMetrics(version, "sim-model", 4096, {"block_size": "16", "num_gpu_blocks": "2000"})
    metrics.bind_scheduler(lambda: 3.0, lambda: 4.0, lambda: 0.42, lambda: 1.0)
    metrics.step(StepStats(512, 128, 40, 1, (0.12, 0.31), (0.02,) * 40, 512, 128,
                           spec_drafts=10, spec_draft_tokens=30, spec_accepted_per_pos=(8, 5, 2)))
    for reason in ("stop", "length", "abort", "error"):
        metrics.finished(FinishedStats(reason, 1.5, 0.1, 0.2, 1.4, 1.2, 300, 64, 128, 200, 0.02, preemptions=1))
    metrics.finished(FinishedStats("stop", 0.5, 0.1, 0.2, 0.2, 0.0, 30, 1, 1, 30, None))
    metrics.rejected()
    metrics.set_sleep(1)
    return metrics.render().decode()


# Two data-parallel engines, the second asleep; a reason and a source vLLM may add later; cache config
# per engine without model_name; rejections without engine.
DP_PAGE = """\
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 5.0
vllm:num_requests_waiting{engine="1",model_name="m"} 2.0
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 4.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="deferred"} 1.0
vllm:num_requests_waiting_by_reason{engine="1",model_name="m",reason="capacity"} 1.0
vllm:num_requests_waiting_by_reason{engine="1",model_name="m",reason="lora_budget"} 1.0
# TYPE vllm:engine_sleep_state gauge
vllm:engine_sleep_state{engine="0",model_name="m",sleep_state="awake"} 1.0
vllm:engine_sleep_state{engine="0",model_name="m",sleep_state="weights_offloaded"} 0.0
vllm:engine_sleep_state{engine="0",model_name="m",sleep_state="discard_all"} 0.0
vllm:engine_sleep_state{engine="1",model_name="m",sleep_state="awake"} 0.0
vllm:engine_sleep_state{engine="1",model_name="m",sleep_state="weights_offloaded"} 0.0
vllm:engine_sleep_state{engine="1",model_name="m",sleep_state="discard_all"} 1.0
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="1000"} 1.0
vllm:cache_config_info{block_size="16",engine="1",num_gpu_blocks="1000"} 1.0
# TYPE vllm:admission_rejections counter
vllm:admission_rejections_total{model_name="m",reason="max_num_queued_tokens"} 3.0
vllm:admission_rejections_total{model_name="m",reason="some_new_limit"} 2.0
# TYPE vllm:prompt_tokens_by_source counter
vllm:prompt_tokens_by_source_total{engine="0",model_name="m",source="local_compute"} 700.0
vllm:prompt_tokens_by_source_total{engine="0",model_name="m",source="local_cache_hit"} 200.0
vllm:prompt_tokens_by_source_total{engine="0",model_name="m",source="external_kv_transfer"} 100.0
vllm:prompt_tokens_by_source_total{engine="0",model_name="m",source="a_future_source"} 7.0
# TYPE vllm:iteration_tokens_total histogram
vllm:iteration_tokens_total_bucket{engine="0",le="+Inf",model_name="m"} 40.0
vllm:iteration_tokens_total_count{engine="0",model_name="m"} 40.0
vllm:iteration_tokens_total_sum{engine="0",model_name="m"} 900.0
vllm:iteration_tokens_total_bucket{engine="1",le="+Inf",model_name="m"} 2.0
vllm:iteration_tokens_total_count{engine="1",model_name="m"} 2.0
vllm:iteration_tokens_total_sum{engine="1",model_name="m"} 10.0
"""


def _reference(text: str) -> list[tuple]:
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("vllm:"):
                out.append((s.name, tuple(sorted(s.labels.items())), "nan" if math.isnan(s.value) else s.value))
    return sorted(out)


PAGES = {
    "simulator-latest": simulator_page,
    "simulator-v1": lambda: simulator_page("v1"),
    "data-parallel-latest": lambda: DP_PAGE,
    "v0-multiprocess-fixture": lambda: (FIXTURES / "vllm_v0_multiproc.txt").read_text(),
}


@pytest.mark.parametrize("name", sorted(PAGES))
def test_our_reader_and_prometheus_client_read_the_same_samples_and_samples(name):
    text = PAGES[name]()
    ours = sorted((n, tuple(sorted(labels.items())), "nan" if math.isnan(v) else v) for n, labels, v in samples(text))
    assert ours == _reference(text)
    assert repr(parse_page(text)) == repr(baseline_parse_page(text))


def test_the_simulators_latest_page_gives_every_new_field():
    [sample] = parse_page(simulator_page())
    assert sample.gauges["waiting"] == 4 and sample.gauges["waiting_capacity"] == 3
    assert sample.gauges["waiting_deferred"] == 1
    assert sample.gauges["engines_asleep"] == 1 and sample.gauges["sleep_level"] == 1
    assert sample.gauges["kv_gpu_blocks"] == 2000 and sample.gauges["kv_capacity_tokens"] == 32000
    assert sample.counters["engine_iterations"] == 1
    assert sample.counters["spec_decode_drafts"] == 10 and sample.counters["spec_decode_draft_tokens"] == 30
    assert sample.counters["spec_decode_accepted_tokens"] == 15
    assert sample.counters["prompt_tokens_local_compute"] == 384
    assert sample.counters["prompt_tokens_local_cache_hit"] == sample.counters["prompt_tokens_cached"] == 128
    assert sample.counters["prompt_tokens_external_kv_transfer"] == 0
    assert sample.counters["prefill_kv_computed_tokens"] == 4 * 200 + 30
    assert sample.counters["prefill_kv_computed_requests"] == 5
    assert sample.counters["admission_rejections"] == sample.counters["admission_rejections_queued_reqs"] == 1
    assert sample.counters["admission_rejections_queued_tokens"] == 0
    # one per-request TPOT observation per finished request, 0 for a one-token request (as vLLM does)
    tpot = sample.histograms["tpot"]
    assert tpot.count == 5 and tpot.cumulative[0] == 1 and tpot.cumulative[1] == 5  # 0.0, then 4 × 0.02
    assert sample.sources["tpot"] == "vllm:request_time_per_output_token_seconds"
    assert sample.sources["itl"] == "vllm:inter_token_latency_seconds"
    assert sample.histograms["itl"].count == 40
    assert sample.finished["repetition"] == 0


def test_older_pages_lack_the_fields_they_do_not_carry():
    [v1] = parse_page(simulator_page("v1"))
    assert "waiting_capacity" not in v1.gauges and "admission_rejections" not in v1.counters
    assert v1.counters["spec_decode_drafts"] == 10 and v1.gauges["sleep_level"] == 1
    [v0] = parse_page(simulator_page("v0"))
    assert "sleep_level" not in v0.gauges and "spec_decode_drafts" not in v0.counters
    assert v0.gauges["kv_capacity_tokens"] == 32000
    [fixture] = parse_page((FIXTURES / "vllm_v0_multiproc.txt").read_text())
    assert fixture.gauges["kv_capacity_tokens"] == 27000 * 16 and "engine_iterations" not in fixture.counters


def test_data_parallel_engines_add_up_and_unknown_label_values_fall_into_their_bucket():
    [sample] = parse_page(DP_PAGE)
    assert sample.gauges["waiting"] == 7
    assert sample.gauges["waiting_capacity"] == 5 and sample.gauges["waiting_deferred"] == 2
    assert sample.gauges["engines_asleep"] == 1 and sample.gauges["sleep_level"] == 2
    assert sample.gauges["kv_capacity_tokens"] == 2 * 1000 * 16
    assert sample.counters["engine_iterations"] == 42
    assert sample.counters["admission_rejections"] == 5
    assert sample.counters["admission_rejections_queued_tokens"] == 3
    assert sample.counters["admission_rejections_other"] == 2
    assert sample.counters["prompt_tokens_local_compute"] == 700
    assert "a_future_source" not in str(sample.counters)  # label values never become keys


def test_cache_config_without_a_block_count_leaves_capacity_absent():
    page = ('vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="None"} 1.0\n'
            'vllm:num_requests_running{engine="0",model_name="m"} 1\n')
    [sample] = parse_page(page)
    assert "kv_capacity_tokens" not in sample.gauges and sample.gauges["running"] == 1
