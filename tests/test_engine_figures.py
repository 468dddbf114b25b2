"""Engine figures of current vLLM (issue 15): per-request TPOT beside ITL with the family each came from,
speculative decoding, prefix-cache hits by source, KV capacity, prefill computed tokens, admission
rejections by reason, and scaling on the capacity queue; in the API, on /metrics and in generated rules."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import validate
from monitor.decide.scaling import PoolScaler, ScalingSettings, scaling_signals
from monitor.evaluate.fleet import InstanceView
from monitor.evaluate.slo import latency_events
from monitor.evaluate.windows import FIGURE_NAMES, WindowStats, figure_sources, instance_figures, stats_over
from monitor.generate import generate
from monitor.otlp.goodput import LatencyObjective, latency_counts, latency_objectives
from monitor.otlp.records import RequestRecord
from monitor.publish.api import instance_json
from monitor.publish.metrics import Collected, FleetCollector, FleetSnapshot, InstanceRow
from monitor.samples import Histogram, ModelSample
from tests.helpers.ci import require

INF = math.inf
T0 = 1_700_000_000.0
TPOT_BOUNDS = (0.01, 0.025, 0.05, 0.075, 0.1, INF)
REQUEST_TPOT = "vllm:request_time_per_output_token_seconds"
ITL = "vllm:inter_token_latency_seconds"


def hist(cumulative: tuple[float, ...], total: float = 0.0) -> Histogram:
    return Histogram(TPOT_BOUNDS, cumulative, total, cumulative[-1])


def latest_sample(scale: float) -> ModelSample:
    """A vLLM 0.33-shaped sample `scale` times into a steady load (cumulative values)."""
    return ModelSample(
        "m",
        histograms={
            # 10 requests per step: per-request TPOT 25-50 ms
            "tpot": hist(tuple(x * scale for x in (0, 0, 10, 10, 10, 10))),
            # 90 output events per step, a tenth of them slow (a long step carrying several tokens)
            "itl": hist(tuple(x * scale for x in (0, 60, 81, 81, 90, 90))),
        },
        counters={"spec_decode_drafts": 40 * scale, "spec_decode_draft_tokens": 120 * scale,
                  "spec_decode_accepted_tokens": 84 * scale, "prompt_tokens": 1000 * scale,
                  "prompt_tokens_local_compute": 600 * scale, "prompt_tokens_local_cache_hit": 300 * scale,
                  "prompt_tokens_external_kv_transfer": 100 * scale, "prompt_tokens_cached": 400 * scale,
                  "prefill_kv_computed_tokens": 600 * scale, "prefill_kv_computed_requests": 10 * scale,
                  "admission_rejections": 3 * scale, "admission_rejections_queued_reqs": 2 * scale,
                  "admission_rejections_queued_tokens": 1 * scale, "admission_rejections_other": 0.0},
        gauges={"running": 4.0, "waiting": 7.0, "waiting_capacity": 2.0, "waiting_deferred": 5.0,
                "kv_gpu_blocks": 4096.0, "kv_capacity_tokens": 65536.0, "kv_cache_usage": 0.5},
        finished={"stop": 10 * scale},
        sources={"tpot": REQUEST_TPOT, "itl": ITL, "kv_cache_usage": "vllm:kv_cache_usage_perc"},
    )


def latest_stats() -> WindowStats:
    return stats_over([(T0, latest_sample(1)), (T0 + 10, latest_sample(2))])


def test_tpot_is_per_request_and_itl_per_output_event_each_with_its_family():
    stats = latest_stats()
    figures = instance_figures(stats)
    assert 0.025 < figures["tpot_p99_s"] <= 0.05  # every request in (25 ms, 50 ms]
    assert 0.075 < figures["itl_p99_s"] <= 0.1  # the slow events: ITL's tail is not TPOT's
    assert 0.01 < figures["itl_p50_s"] <= 0.025
    sources = figure_sources(stats)
    assert sources["tpot"] == REQUEST_TPOT and sources["itl"] == ITL
    assert sources["kv_cache_usage"] == "vllm:kv_cache_usage_perc"
    assert sources["requests_waiting_capacity"] == "vllm:num_requests_waiting_by_reason"


def test_an_old_page_keeps_the_per_token_tpot_and_says_so():
    old = [ModelSample("m", histograms={"tpot": hist((0, 5, 10, 10, 10, 10)), "itl": hist((0, 5, 10, 10, 10, 10))},
                       sources={"tpot": "vllm:time_per_output_token_seconds", "itl": "vllm:time_per_output_token_seconds"},
                       counters={"prefix_cache_queries": 0.0, "prefix_cache_hits": 0.0}),
           ModelSample("m", histograms={"tpot": hist((0, 10, 20, 20, 20, 20)), "itl": hist((0, 10, 20, 20, 20, 20))},
                       sources={"tpot": "vllm:time_per_output_token_seconds", "itl": "vllm:time_per_output_token_seconds",
                                "prefix_cache_hits": "vllm:gpu_prefix_cache_hits_total"},
                       counters={"prefix_cache_queries": 100.0, "prefix_cache_hits": 25.0})]
    stats = stats_over([(T0, old[0]), (T0 + 10, old[1])])
    figures = instance_figures(stats)
    assert figures["tpot_p99_s"] == figures["itl_p99_s"]
    assert figures["prefix_cache_hit_rate"] == 0.25
    assert figure_sources(stats) == {"tpot": "vllm:time_per_output_token_seconds",
                                     "itl": "vllm:time_per_output_token_seconds",
                                     "prefix_cache_hit_rate": "vllm:gpu_prefix_cache_hits_total"}
    # families the page does not have stay absent, not zero
    for key in ("spec_decode_acceptance_rate", "kv_capacity_tokens", "requests_waiting_capacity",
                "admission_rejections_per_s", "prefill_kv_computed_tokens_per_request"):
        assert figures[key] is None, key


def test_current_vllm_families_become_per_instance_figures():
    figures = instance_figures(latest_stats())
    assert figures["spec_decode_acceptance_rate"] == pytest.approx(84 / 120)
    assert figures["spec_decode_mean_acceptance_length"] == pytest.approx(1 + 84 / 40)
    # no hits/queries counters on this page: local cache hits over every prompt token, by source
    assert figures["prefix_cache_hit_rate"] == pytest.approx(300 / 1000)
    assert figures["kv_capacity_tokens"] == 65536.0
    assert figures["prefill_kv_computed_tokens_per_request"] == pytest.approx(60.0)
    assert figures["admission_rejections_per_s"] == pytest.approx(0.3)
    assert figures["admission_rejections_max_num_queued_reqs_per_s"] == pytest.approx(0.2)
    assert figures["admission_rejections_max_num_queued_tokens_per_s"] == pytest.approx(0.1)
    assert figures["admission_rejections_other_per_s"] == 0.0
    assert (figures["requests_waiting"], figures["requests_waiting_capacity"], figures["requests_waiting_deferred"]) \
        == (7.0, 2.0, 5.0)
    assert figure_sources(latest_stats())["prefix_cache_hit_rate"] == "vllm:prompt_tokens_by_source_total"
    assert set(figures) == set(FIGURE_NAMES)


def test_the_hit_and_query_counters_win_where_the_page_has_both():
    def sample(scale: float) -> ModelSample:
        s = latest_sample(scale)
        return ModelSample("m", s.histograms, {**s.counters, "prefix_cache_queries": 1000 * scale,
                                               "prefix_cache_hits": 500 * scale}, s.gauges, s.finished, s.sources)

    stats = stats_over([(T0, sample(1)), (T0 + 10, sample(2))])
    assert instance_figures(stats)["prefix_cache_hit_rate"] == 0.5
    assert figure_sources(stats)["prefix_cache_hit_rate"] == "vllm:prefix_cache_hits_total"


def test_scaling_reads_the_capacity_queue_where_the_page_splits_it_and_shows_both():
    split = WindowStats(T0, T0 + 60, gauges={"waiting": 12.0, "waiting_capacity": 2.0, "waiting_deferred": 10.0})
    old = WindowStats(T0, T0 + 60, gauges={"waiting": 6.0})
    signals = scaling_signals([split, old])
    assert signals.requests_waiting == 18.0  # every reason, every replica
    assert signals.requests_waiting_capacity == 2.0
    assert signals.requests_waiting_for_scaling == 8.0  # capacity where split, the whole queue elsewhere
    scaler = PoolScaler("p", ScalingSettings(scale_up_stabilization="0s", target_kv_cache_usage=None))
    d = scaler.recommend(2, signals, T0)
    assert d.signals["metrics"]["waiting_per_replica"]["value"] == 4.0
    assert d.desired_replicas == 2  # 10 requests waiting for a KV transfer ask for no replica
    assert d.signals["requests_waiting"] == 18.0 and d.signals["requests_waiting_capacity"] == 2.0
    # the same queue, all of it for capacity, would ask for more
    full = scaling_signals([WindowStats(T0, T0 + 60, gauges={"waiting": 12.0, "waiting_capacity": 12.0}), old])
    assert PoolScaler("p", ScalingSettings(scale_up_stabilization="0s")).recommend(2, full, T0).desired_replicas == 4


def test_a_pool_of_old_pages_scales_on_the_whole_queue_as_before():
    signals = scaling_signals([WindowStats(T0, T0 + 60, gauges={"waiting": 12.0})])
    assert signals.requests_waiting_capacity is None and signals.requests_waiting_for_scaling == 12.0
    d = PoolScaler("p", ScalingSettings(scale_up_stabilization="0s")).recommend(1, signals, T0)
    assert d.desired_replicas == 3 and d.signals["requests_waiting_capacity"] is None


def view() -> InstanceView:
    stats = latest_stats()
    figures = instance_figures(stats)
    return InstanceView("llama", "10.0.0.1:8000", "http://10.0.0.1:8000", T0, figures, {"m": figures}, None, 0.01,
                        200, figure_sources(stats))


def test_the_api_lists_the_new_figures_and_their_sources_beside_the_old_ones():
    body = instance_json(view(), None)
    assert body["sources"]["tpot"] == REQUEST_TPOT and body["sources"]["itl"] == ITL
    for key in ("ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "error_ratio", "kv_cache_usage", "requests_running",
                "requests_waiting", "generation_tokens_per_s", "prefix_cache_hit_rate",  # kept
                "itl_p99_s", "spec_decode_acceptance_rate", "spec_decode_mean_acceptance_length",
                "kv_capacity_tokens", "prefill_kv_computed_tokens_per_request", "requests_waiting_capacity",
                "admission_rejections_max_num_queued_reqs_per_s"):
        assert key in body["metrics"], key
    assert body["models"]["m"]["itl_p99_s"] == body["metrics"]["itl_p99_s"]


def test_metrics_exposes_the_new_per_instance_series_and_keeps_the_old_ones():
    snap = FleetSnapshot(T0, (InstanceRow(view(), "healthy", True, T0, 0),), 1, 0.1, 3, None)
    text = generate_latest(Collected(FleetCollector.families(snap))).decode()
    samples = {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("pool", "instance", "model_name")))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("slo_monitor_instance_itl_seconds", (("quantile", "0.99"),))] > 0.075
    assert 0.025 < samples[("slo_monitor_instance_tpot_seconds", (("quantile", "0.99"),))] <= 0.05
    assert samples[("slo_monitor_instance_spec_decode_acceptance_ratio", ())] == pytest.approx(0.7)
    assert samples[("slo_monitor_instance_spec_decode_mean_acceptance_length", ())] == pytest.approx(3.1)
    assert samples[("slo_monitor_instance_kv_capacity_tokens", ())] == 65536.0
    assert samples[("slo_monitor_instance_prefill_kv_computed_tokens_per_request", ())] == pytest.approx(60.0)
    assert samples[("slo_monitor_instance_requests_waiting_capacity", ())] == 2.0
    assert samples[("slo_monitor_instance_prefix_cache_hit_ratio", ())] == pytest.approx(0.3)
    assert samples[("slo_monitor_instance_admission_rejections_per_second", (("reason", "max_num_queued_reqs"),))] \
        == pytest.approx(0.2)
    assert samples[("slo_monitor_instance_admission_rejections_per_second", (("reason", "other"),))] == 0.0
    for kept in ("slo_monitor_instance_ttft_seconds", "slo_monitor_instance_e2e_latency_seconds",
                 "slo_monitor_instance_requests_waiting", "slo_monitor_instance_kv_cache_usage_ratio",
                 "slo_monitor_instance_up", "slo_monitor_instance_state"):
        assert f"# TYPE {kept} gauge" in text, kept


def test_an_itl_slo_counts_output_events_and_traces_leave_it_to_the_histograms():
    config = validate({
        "pools": [{"name": "llama", "targets": ["http://10.0.0.1:8000"]}],
        "slos": [{"name": "itl-50ms", "indicator": {"type": "latency", "metric": "itl", "threshold": "50ms"},
                  "objective": "99%"},
                 {"name": "tpot-50ms", "indicator": {"type": "latency", "metric": "tpot", "threshold": "50ms"},
                  "objective": "99%"}],
    }).config
    stats = latest_stats()
    itl = latency_events(stats, "itl", 0.05)
    tpot = latency_events(stats, "tpot", 0.05)
    assert (itl.good, itl.total, itl.exact) == (81, 90, True)  # 9 of the 90 events over 50 ms
    assert (tpot.good, tpot.total) == (10, 10)  # every request's mean under 50 ms
    # a span carries no per-token interval: goodput judges the TPOT SLO only, and an ITL objective
    # finds no trace event to recount (its minutes stay on the histograms)
    assert [o.slo for o in latency_objectives(config.slos, "llama")] == ["tpot-50ms"]
    record = RequestRecord("llama", None, None, T0, e2e_s=1.0, ttft_s=0.1, tpot_s=0.02, output_tokens=46)
    assert latency_counts([record], LatencyObjective("itl-50ms", "itl", 0.05)) == (0, 0)


# --- generated rules: per-request TPOT for tpot, the ITL family for itl ---------------------------------


def test_generated_rules_read_per_request_tpot_for_tpot_and_the_itl_family_for_itl(tmp_path: Path):
    promtool = Path("/usr/bin/promtool")
    require(promtool.exists(), "promtool is not installed (Debian package prometheus)")
    config = validate({
        "pools": [{"name": "llama", "targets": ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]}],
        "slos": [{"name": name, "indicator": {"type": "latency", "metric": metric, "threshold": "50ms"},
                  "objective": "99%"} for name, metric in (("tpot-50ms", "tpot"), ("itl-50ms", "itl"))],
    }).config
    out = tmp_path / "out"
    generate(config, out)
    rules = {name: yaml.safe_load((out / "alerts" / f"slo-{name}.rules.yml").read_text())
             for name in ("tpot-50ms", "itl-50ms")}
    valid = {name: next(r["expr"] for g in doc["groups"] for r in g["rules"]
                        if r.get("record") == "slo:valid_events:rate5m") for name, doc in rules.items()}
    assert valid["tpot-50ms"].index(REQUEST_TPOT) < valid["tpot-50ms"].index(ITL)  # per request first
    assert REQUEST_TPOT not in valid["itl-50ms"] and ITL in valid["itl-50ms"]

    # Prometheus itself on both: instance .1 is current vLLM (per-request TPOT all good, ITL events
    # half bad), .2 an old page with ITL only (all good). tpot's bad events: none; itl's: half of .1's.
    def series(name: str, instance: str, le: str, per_min: int) -> dict:
        labels = f'{{pool="llama", instance="{instance}", model_name="m", le="{le}"}}'
        return {"series": f"{name}_bucket{labels}", "values": f"0+{per_min}x10"}

    def counts(name: str, instance: str, per_min: int) -> dict:
        return {"series": f'{name}_count{{pool="llama", instance="{instance}", model_name="m"}}',
                "values": f"0+{per_min}x10"}

    inputs = [series(REQUEST_TPOT, "10.0.0.1:8000", "0.05", 60), counts(REQUEST_TPOT, "10.0.0.1:8000", 60),
              series(ITL, "10.0.0.1:8000", "0.05", 300), counts(ITL, "10.0.0.1:8000", 600),
              series(ITL, "10.0.0.2:8000", "0.05", 120), counts(ITL, "10.0.0.2:8000", 120)]
    tests = {"rule_files": [str(out / "alerts" / f"slo-{name}.rules.yml") for name in rules],
             "evaluation_interval": "1m",
             "tests": [{"interval": "1m", "input_series": inputs, "promql_expr_test": [
                 {"expr": 'slo:bad_events:rate5m{slo="tpot-50ms"}', "eval_time": "6m",
                  "exp_samples": [{"labels": 'slo:bad_events:rate5m{slo="tpot-50ms", pool="llama", model_name="m"}',
                                   "value": 0}]},
                 {"expr": 'slo:valid_events:rate5m{slo="tpot-50ms"}', "eval_time": "6m",
                  "exp_samples": [{"labels": 'slo:valid_events:rate5m{slo="tpot-50ms", pool="llama", model_name="m"}',
                                   "value": 3}]},  # (60 + 120) / 60 s: .1 per request, .2 per token
                 {"expr": 'slo:bad_events:rate5m{slo="itl-50ms"}', "eval_time": "6m",
                  "exp_samples": [{"labels": 'slo:bad_events:rate5m{slo="itl-50ms", pool="llama", model_name="m"}',
                                   "value": 5}]},  # 300 of .1's 600 events a minute
             ]}]}
    test_file = tmp_path / "engine.test.yml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([str(promtool), "test", "rules", str(test_file)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
