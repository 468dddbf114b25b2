"""What a pool's GPUs cost per million generated tokens and per request, from a GPU-hour price.

```yaml
pools:
  - name: llama
    targets: [...]
    cost:
      gpu_hour: 2.50          # price of one GPU for one hour
      gpus_per_instance: 2    # GPUs behind each target (tensor x pipeline parallel size); default 1
      currency: USD           # a label for the API and /metrics; default USD
```

The pool is billed for every configured target, whether it serves, is ejected or cannot be
scraped: a reserved GPU costs the same idle or not, and an idle pool's cost per token *should* look
bad. Throughput is the pool's sum of the per-instance rates over `evaluation.window` (generated
tokens from `vllm:generation_tokens_total`, finished requests from `vllm:request_success_total`),
so cost figures move with the same window as the other per-instance figures. Where traces cover
the pool, the cost per *good* request (one that met every latency SLO: goodput) is given too.

Without traffic a per-token or per-request cost is undefined (None, absent on /metrics), not
infinite: alerting on "cost per token too high" should not fire on an idle night.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from monitor.evaluate.fleet import InstanceView
    from monitor.service import Service

NAMESPACE = "slo_monitor"


class CostConfig(BaseModel):
    """`pools[].cost`: what the pool's GPUs cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_hour: float = Field(gt=0, description="price of one GPU for one hour")
    gpus_per_instance: int = Field(default=1, ge=1, le=1024, description="GPUs behind each target")
    currency: str = Field(default="USD", min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_.$€£¥-]+$")


@dataclass(frozen=True, slots=True)
class PoolCost:
    """One pool's cost figures at one moment."""

    pool: str
    currency: str
    gpu_hour: float
    instances: int
    gpus: int
    window_s: float
    requests_per_s: float | None
    generation_tokens_per_s: float | None
    goodput_rps: float | None = None  # from traces, when they cover the pool

    @property
    def cost_per_hour(self) -> float:
        return self.gpus * self.gpu_hour

    def _per(self, rate_per_s: float | None, unit: float = 1.0) -> float | None:
        """Cost of `unit` of something produced at `rate_per_s`; None without any."""
        if rate_per_s is None or rate_per_s <= 0:
            return None
        return self.cost_per_hour / 3600.0 / rate_per_s * unit

    @property
    def cost_per_million_tokens(self) -> float | None:
        return self._per(self.generation_tokens_per_s, 1e6)

    @property
    def cost_per_request(self) -> float | None:
        return self._per(self.requests_per_s)

    @property
    def cost_per_good_request(self) -> float | None:
        return self._per(self.goodput_rps)

    def to_json(self) -> dict[str, Any]:
        """The `GET /api/v1/pools/{pool}/cost` body."""
        from monitor.evaluate.slo_engine import format_duration

        return {
            "pool": self.pool,
            "currency": self.currency,
            "gpu_hour": self.gpu_hour,
            "instances": self.instances,
            "gpus": self.gpus,
            "cost_per_hour": self.cost_per_hour,
            "window": format_duration(self.window_s),
            "window_seconds": self.window_s,
            "requests_per_s": self.requests_per_s,
            "generation_tokens_per_s": self.generation_tokens_per_s,
            "goodput_rps": self.goodput_rps,
            "cost_per_million_tokens": self.cost_per_million_tokens,
            "cost_per_request": self.cost_per_request,
            "cost_per_good_request": self.cost_per_good_request,
        }


def _sum(values: Iterable[float | None]) -> float | None:
    """Sum of the known values; None when none is known (nothing scraped yet), not 0."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def pool_cost(pool: str, cost: CostConfig, instances: int, views: Iterable[InstanceView], *, window_s: float,
              goodput_rps: float | None = None) -> PoolCost:
    """Cost figures of `pool` from its instances' views (others in `views` are skipped)."""
    mine = [v for v in views if v.pool == pool]
    return PoolCost(
        pool=pool, currency=cost.currency, gpu_hour=cost.gpu_hour, instances=instances,
        gpus=instances * cost.gpus_per_instance, window_s=window_s,
        requests_per_s=_sum(v.figures.get("requests_per_s") for v in mine),
        generation_tokens_per_s=_sum(v.figures.get("generation_tokens_per_s") for v in mine),
        goodput_rps=goodput_rps,
    )


def service_pool_cost(service: Service, pool: str, now: float | None = None) -> PoolCost | None:
    """The pool's cost as the service sees it now; None when the pool has no `cost` configured."""
    from monitor.otlp.goodput import compute_goodput, latency_objectives

    pool_config = service.config.pool(pool)
    if pool_config is None or pool_config.cost is None:
        return None
    now = time.time() if now is None else now
    fleet = service.fleet
    views = [fleet.view(t, now) for t in fleet.tracks.values() if t.pool == pool]
    goodput = None
    window = service.config.traces.goodput_window
    records = service.traces.records(pool, since=now - window)
    if records:
        goodput = compute_goodput(records, latency_objectives(service.config.slos, pool), pool=pool, now=now,
                                  window_s=window, first_at=service.traces.first_at(pool)).goodput_rps
    return pool_cost(pool, pool_config.cost, len(pool_config.targets), views, window_s=fleet.window,
                     goodput_rps=goodput)


class CostCollector(Collector):
    """`slo_monitor_pool_cost_*` for every pool with a `cost`, computed at scrape time."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator:
        labels = ["pool", "currency"]
        per_hour = GaugeMetricFamily(f"{NAMESPACE}_pool_cost_per_hour",
                                     "What the pool's GPUs cost per hour (gpu_hour x GPUs of every target).",
                                     labels=labels)
        per_token = GaugeMetricFamily(f"{NAMESPACE}_pool_cost_per_million_generated_tokens",
                                      "Cost per million generated tokens over the evaluation window "
                                      "(absent without traffic).", labels=labels)
        per_request = GaugeMetricFamily(f"{NAMESPACE}_pool_cost_per_request",
                                        "Cost per finished request over the evaluation window (absent without "
                                        "traffic).", labels=labels)
        per_good = GaugeMetricFamily(f"{NAMESPACE}_pool_cost_per_good_request",
                                     "Cost per request that met every latency SLO (goodput, from traces).",
                                     labels=labels)
        now = time.time()
        for pool in self.service.config.pools:
            cost = service_pool_cost(self.service, pool.name, now)
            if cost is None:
                continue
            who = [cost.pool, cost.currency]
            per_hour.add_metric(who, cost.cost_per_hour)
            for family, value in ((per_token, cost.cost_per_million_tokens), (per_request, cost.cost_per_request),
                                  (per_good, cost.cost_per_good_request)):
                if value is not None:
                    family.add_metric(who, value)
        yield from (per_hour, per_token, per_request, per_good)
