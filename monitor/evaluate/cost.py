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

from dataclasses import dataclass
from typing import Any, Iterable

from monitor.evaluate.fleet import InstanceView
from monitor.evaluate.windows import sum_known
from monitor.settings import CostConfig
from monitor.units import format_duration


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


def pool_cost(pool: str, cost: CostConfig, instances: int, views: Iterable[InstanceView], *, window_s: float,
              goodput_rps: float | None = None) -> PoolCost:
    """Cost figures of `pool` from its instances' views (others in `views` are skipped)."""
    mine = [v for v in views if v.pool == pool]
    return PoolCost(
        pool=pool, currency=cost.currency, gpu_hour=cost.gpu_hour, instances=instances,
        gpus=instances * cost.gpus_per_instance, window_s=window_s,
        requests_per_s=sum_known(v.figures.get("requests_per_s") for v in mine),
        generation_tokens_per_s=sum_known(v.figures.get("generation_tokens_per_s") for v in mine),
        goodput_rps=goodput_rps,
    )
