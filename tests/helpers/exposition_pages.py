"""Every /metrics page the exposition tests have, and prometheus_client's reading of one as the
baseline our parser is held to (tests/test_exposition.py, bench/scrape_cycle.py)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import ALLOWUTF8
from prometheus_client.openmetrics.exposition import (
    generate_latest as openmetrics_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from monitor.collect.vllm import samples_by_model
from monitor.sim.metrics import FinishedStats, StepStats, VllmMetrics
from tests.helpers.realistic_page import build, build_openmetrics
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
    return {f"simulator-{version}": _simulator(version).render().decode() for version in ("latest", "v1", "v0")}


def _simulator(version: str) -> VllmMetrics:
    metrics = VllmMetrics(version, "sim-model", 4096, {"block_size": "16", "num_gpu_blocks": "2000"})
    metrics.bind_scheduler(lambda: 3.0, lambda: 1.0, lambda: 0.42)
    metrics.step(StepStats(512, 128, 40, 1, (0.12, 0.31), (0.02,) * 40, 512, 128))
    for reason in ("stop", "length", "abort", "error"):
        metrics.finished(FinishedStats(reason, 1.5, 0.1, 0.2, 1.4, 1.2, 300, 64, 128, 200, 0.02))
    return metrics


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


def openmetrics_pages() -> dict[str, tuple[str, str]]:
    """Pages as (text format, OpenMetrics 1.0) pairs holding the same values: rendered from one
    prometheus_client registry both ways where the page comes from one (fake V1 servers, the
    realistic 58 KB page, the simulator), else converted through prometheus_client's parser (the V0
    multiprocess fixture)."""
    one = FakeVllmV1(seed=3)
    one.finish(50, ttft=(0.01, 3.0))
    one.set_load(5, 2, 0.73)
    two = FakeVllmV1(models=("a", "b"), seed=4)
    two.finish(5, model="a")
    two.finish(7, model="b", reason="error")
    found = {
        "v1-one-model": (one.render(), one.render_openmetrics()),
        "v1-two-models": (two.render(), two.render_openmetrics()),
        "v1-realistic-58k": (build(), build_openmetrics()),
    }
    v0 = (FIXTURES / "vllm_v0_multiproc.txt").read_text()
    found["v0-multiprocess"] = (v0, to_openmetrics(v0))
    for version in ("latest", "v1", "v0"):
        metrics = _simulator(version)
        found[f"simulator-{version}"] = (generate_latest(metrics.registry).decode(),
                                         openmetrics_latest(metrics.registry, escaping=ALLOWUTF8).decode())
    return found


class _Parsed:
    def __init__(self, text: str) -> None:
        self.families = list(text_string_to_metric_families(text))

    def collect(self):
        return self.families


def to_openmetrics(text: str) -> str:
    """A text-format page in OpenMetrics 1.0, through prometheus_client's parser and OpenMetrics writer."""
    return openmetrics_latest(_Parsed(text), escaping=ALLOWUTF8).decode()  # type: ignore[arg-type]
