"""Every /metrics page the exposition tests have, and prometheus_client's reading of one as the
baseline our parser is held to (tests/test_exposition.py, bench/scrape_cycle.py)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from monitor.collect.vllm import samples_by_model
from monitor.sim.metrics import FinishedStats, StepStats, VllmMetrics
from tests.helpers.realistic_page import build
from tests.helpers.vllm_pages import FakeVllmV1

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def pages() -> dict[str, str]:
    """Fake V1 pages, the realistic 58 KB page, the V0 multiprocess fixture, escapes, the simulator's pages."""
    one = FakeVllmV1(seed=3)
    one.finish(50, ttft=(0.01, 3.0))
    one.set_load(5, 2, 0.73)
    two = FakeVllmV1(models=("a", "b"), seed=4)
    two.finish(5, model="a")
    two.finish(7, model="b", reason="error")
    found = {
        "v1-one-model": one.render(),
        "v1-two-models": two.render(),
        "v1-realistic-58k": build(),
        "v0-multiprocess": (FIXTURES / "vllm_v0_multiproc.txt").read_text(),
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
    """The simulator's own /metrics pages, latest, V1 and V0, after some traffic."""
    out = {}
    for version in ("latest", "v1", "v0"):
        metrics = VllmMetrics(version, "sim-model", 4096, {"block_size": "16", "num_gpu_blocks": "2000"})
        metrics.bind_scheduler(lambda: 3.0, lambda: 1.0, lambda: 0.42)
        metrics.step(StepStats(512, 128, 40, 1, (0.12, 0.31), (0.02,) * 40, 512, 128))
        for reason in ("stop", "length", "abort", "error"):
            metrics.finished(FinishedStats(reason, 1.5, 0.1, 0.2, 1.4, 1.2, 300, 64, 128, 200, 0.02))
        out[f"simulator-{version}"] = metrics.render().decode()
    return out


def baseline_parse_page(text: str):
    """prometheus_client's parser over the whole page, then the same normaliser as ours."""
    values: dict = defaultdict(lambda: defaultdict(list))
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("vllm:"):
                labels = dict(s.labels)
                model = labels.pop("model_name", "")
                values[s.name][model].append((labels, float(s.value)))
    return samples_by_model(values)
