"""Our `vllm:` sample reader gives exactly what prometheus_client's parser gives, on every page we have."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.collect.exposition import ExpositionError, samples
from vllm_pages import FakeVllmV1

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


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


def pages() -> dict[str, str]:
    one = FakeVllmV1(seed=3)
    one.finish(50, ttft=(0.01, 3.0))
    one.set_load(5, 2, 0.73)
    two = FakeVllmV1(models=("a", "b"), seed=4)
    two.finish(5, model="a")
    two.finish(7, model="b", reason="error")
    from realistic_page import build

    found = {
        "v1-one-model": one.render(),
        "v1-two-models": two.render(),
        "v1-realistic-58k": build(),
        "v0-multiprocess": (ROOT / "tests/fixtures/vllm_v0_multiproc.txt").read_text(),
        "escapes": (
            '# TYPE vllm:lora_requests_info gauge\n'
            'vllm:lora_requests_info{max_lora="1",running_lora_adapters="a\\"b,c}d",waiting_lora_adapters="x\\\\y\\nz"} 1.7e9\n'
            'vllm:num_requests_running{model_name="m",} 3 1700000000000\n'
            'vllm:kv_cache_usage_perc{model_name="m"} NaN\n'
            'vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 4\n'
            'vllm:num_requests_waiting 2\n'
        ),
    }
    found.update(simulator_pages())
    return found


def simulator_pages() -> dict[str, str]:
    """The simulator's own /metrics pages, V1 and V0, after some traffic."""
    from monitor.sim.metrics import FinishedStats, StepStats, VllmMetrics

    out = {}
    for version in ("v1", "v0"):
        metrics = VllmMetrics(version, "sim-model", 4096, {"block_size": "16", "num_gpu_blocks": "2000"})
        metrics.bind_scheduler(lambda: 3.0, lambda: 1.0, lambda: 0.42)
        metrics.step(StepStats(512, 128, 40, 1, (0.12, 0.31), (0.02,) * 40, 512, 128))
        for reason in ("stop", "length", "abort", "error"):
            metrics.finished(FinishedStats(reason, 1.5, 0.1, 0.2, 1.4, 1.2, 300, 64, 128, 200, 0.02))
        out[f"simulator-{version}"] = metrics.render().decode()
    return out


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
    from scrape_cycle import baseline_parse_page  # bench/: prometheus_client + the same normaliser

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
