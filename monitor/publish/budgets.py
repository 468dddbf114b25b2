"""/metrics for complete alerting: maintenance windows in force, SLI series gone missing, exhausted
budgets, the budget without the exclusions, and each pool's GPU spend today against its daily
budget. The generated Prometheus rules read `slo_monitor_exclusion_active` (so maintenance windows
are honoured on both evaluation paths) and the two cost series (CostBudgetWarning/Exceeded)."""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from monitor.publish.state import NAMESPACE, MonitorState
from monitor.settings import AvailabilityIndicator


class BudgetCollector(Collector):
    """Series of the last evaluation, the same moment /api/v1/slos shows."""

    def __init__(self, service: MonitorState) -> None:
        self.service = service

    def collect(self) -> Iterator:
        slo_pool = ["slo", "pool"]
        per_key = ["slo", "pool", "model_name"]
        excluded = GaugeMetricFamily(f"{NAMESPACE}_exclusion_active",
                                     "1 while a maintenance window of the SLO and pool is in force: its minutes "
                                     "count neither good nor bad events (the generated rules read this).",
                                     labels=slo_pool)
        absent = GaugeMetricFamily(f"{NAMESPACE}_slo_metric_absent",
                                   "1 while SLOMetricAbsent fires: the SLI's vLLM series have been missing from every "
                                   "scraped instance of the pool for absent_for while the instances answer.",
                                   labels=slo_pool)
        last_seen = GaugeMetricFamily(f"{NAMESPACE}_slo_metric_last_seen_timestamp_seconds",
                                      "Unix time a scraped instance of the pool last had the SLI's series.",
                                      labels=slo_pool)
        exhausted = GaugeMetricFamily(f"{NAMESPACE}_slo_error_budget_exhausted",
                                      "1 while ErrorBudgetExhausted fires: nothing left of the SLO window's budget.",
                                      labels=per_key)
        unexcluded = GaugeMetricFamily(f"{NAMESPACE}_slo_error_budget_remaining_without_exclusions_ratio",
                                       "The budget left had the maintenance windows counted (equal to "
                                       "error_budget_remaining_ratio without any).", labels=per_key)
        for status in self.service.slo.statuses:
            who = [status.key.slo, status.key.pool]
            ev = status.evaluation
            exhausted.add_metric(who + [status.key.model_name], 1.0 if status.exhausted else 0.0)
            unexcluded.add_metric(who + [status.key.model_name], ev.error_budget_remaining_unexcluded)
            if status.key.model_name:
                continue
            excluded.add_metric(who, 1.0 if status.excluded else 0.0)
            if not isinstance(status.config.indicator, AvailabilityIndicator):
                absent.add_metric(who, 1.0 if status.absent else 0.0)
                if status.metric_last_seen is not None:
                    last_seen.add_metric(who, status.metric_last_seen)
        yield from (excluded, absent, last_seen, exhausted, unexcluded)
        money = ["pool", "currency"]
        today = GaugeMetricFamily(f"{NAMESPACE}_pool_cost_today",
                                  "What the pool's GPUs have cost since midnight UTC (replica-hours x "
                                  "gpus_per_instance x gpu_hour), for pools with a `cost`.", labels=money)
        budget = GaugeMetricFamily(f"{NAMESPACE}_pool_cost_daily_budget",
                                   "The pool's cost.daily_budget: CostBudgetWarning at 80% of it, CostBudgetExceeded "
                                   "at 100%.", labels=money)
        for status in getattr(self.service.slo, "cost_budgets", ()):
            who = [status.pool, status.currency]
            today.add_metric(who, status.spend_today)
            if status.daily_budget is not None:
                budget.add_metric(who, status.daily_budget)
        yield from (today, budget)
