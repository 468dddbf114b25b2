"""Cost per token and request as the service sees it now: the API's `/api/v1/pools/{pool}/cost` and
the `slo_monitor_pool_cost_*` series (the arithmetic is monitor/evaluate/cost.py's)."""

from __future__ import annotations

import time
from typing import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from monitor.evaluate.cost import PoolCost, pool_cost
from monitor.otlp.goodput import compute_goodput, latency_objectives
from monitor.publish.state import NAMESPACE, MonitorState


def service_pool_cost(service: MonitorState, pool: str, now: float | None = None) -> PoolCost | None:
    """The pool's cost as the service sees it now; None when the pool has no `cost` configured."""
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
    return pool_cost(pool, pool_config.cost, len(views), views, window_s=fleet.window,
                     goodput_rps=goodput)


class CostCollector(Collector):
    """`slo_monitor_pool_cost_*` for every pool with a `cost`, computed at scrape time."""

    def __init__(self, service: MonitorState) -> None:
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
