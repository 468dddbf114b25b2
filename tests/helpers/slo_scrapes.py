"""Scrape results built by hand for the SLO engine and the API tests: cumulative counters of a vLLM
server advanced by the test, on a simulated clock (no scraping, no sleeping)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from monitor.config import validate
from monitor.samples import Histogram, ModelSample, ScrapeResult

T0 = 60 * 29_800_000  # a minute boundary in 2026
TTFT_BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
               20.0, 40.0, 80.0, 160.0, 640.0, 2560.0, math.inf)
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@dataclass
class Server:
    """Cumulative counters of one vLLM server and model, advanced by hand."""

    model: str = MODEL
    finished: dict[str, float] = field(default_factory=lambda: {"stop": 0.0, "length": 0.0, "abort": 0.0,
                                                               "error": 0.0})
    rejections: float | None = None
    ttft: list[float] = field(default_factory=lambda: [0.0] * len(TTFT_BOUNDS))  # per-bucket (not cumulative)
    kv: float = 0.3

    def requests(self, n: float, reason: str = "stop", ttft_s: float = 0.05) -> None:
        self.finished[reason] += n
        index = next(i for i, b in enumerate(TTFT_BOUNDS) if ttft_s <= b)
        self.ttft[index] += n

    def sample(self) -> ModelSample:
        cumulative, running = [], 0.0
        for count in self.ttft:
            running += count
            cumulative.append(running)
        counters = {"generation_tokens": running * 10}
        if self.rejections is not None:
            counters["admission_rejections"] = self.rejections
        return ModelSample(
            self.model,
            histograms={"ttft": Histogram(TTFT_BOUNDS, tuple(cumulative), 0.0, running)},
            counters=counters,
            gauges={"kv_cache_usage": self.kv, "running": 1.0, "waiting": 0.0},
            finished=dict(self.finished),
        )


def result(pool: str, instance: str, t: float, *servers: Server, error: str | None = None,
           health: int | None = 200) -> ScrapeResult:
    return ScrapeResult(pool, instance, f"http://{instance}", t, 0.01,
                        models=() if error else tuple(s.sample() for s in servers),
                        error=error, error_kind="down" if error else None, health_status=health)


def config(*slos: dict, pools: list[dict] | None = None, **extra) -> object:
    return validate({
        "pools": pools or [{"name": "llama", "targets": ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]}],
        "slos": list(slos),
        **extra,
    }).config
