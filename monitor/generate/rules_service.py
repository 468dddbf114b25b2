"""Prometheus alerts on slo-monitor itself: what it decided (ejections, pending scale-ups, daily cost
budgets) and whether it can decide at all (down, failing scrapes, storage, Alertmanager, NGINX).
One rule file (`SERVICE_FILE`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import monitor.generate.expressions as q

SERVICE_FILE = "decisions"  # not `slo-...`: that prefix belongs to the per-SLO files
NS = "slo_monitor"
# (desired, current) replica gauges on the service's /metrics (monitor.publish.metrics); a
# parameter wherever used, so scaling panels and alerts can be left out (None) for a service
# build without them.
REPLICA_METRICS: tuple[str, str] | None = (f"{NS}_pool_desired_replicas", f"{NS}_pool_current_replicas")
# the daily cost budget: spend so far today and the budget, per pool (monitor.publish.budgets)
COST_TODAY = f"{NS}_pool_cost_today"
COST_BUDGET = f"{NS}_pool_cost_daily_budget"
COST_WARNING_ALERT = "CostBudgetWarning"
COST_EXCEEDED_ALERT = "CostBudgetExceeded"
COST_WARNING_AT = 0.8
# the loop's heartbeat (monitor.publish.metrics) and how long it may stand still: a fixed 5 minutes,
# longer than any sane scrape interval's 3 cycles and short enough to page before the on-call wonders
LAST_CYCLE_SUCCESS = f"{NS}_last_cycle_success_timestamp_seconds"
STALLED_ALERT = "SLOMonitorStalled"
STALLED_AFTER_S = 300.0


@dataclass(frozen=True)
class ServiceAlert:
    name: str
    expr: str
    for_: str | None
    severity: str
    summary: str
    description: str


def service_alerts(replica_metrics: tuple[str, str] | None = REPLICA_METRICS) -> list[ServiceAlert]:
    """Alerts on what slo-monitor decided and on whether it can decide at all.

    `replica_metrics` is (desired, current) when the service exposes both, else None.
    """
    job = f"job={q.quote(q.SERVICE_JOB)}"
    alerts = [
        ServiceAlert(
            "SloMonitorDown", f"up{{{job}}} == 0", "2m", "page",
            "slo-monitor at {{ $labels.instance }} is down",
            "Prometheus has not scraped slo-monitor for 2 minutes. Load balancers that use its health checks "
            "get no answers, and its SLO alerts and scaling recommendations have stopped.",
        ),
        ServiceAlert(
            STALLED_ALERT, f"time() - {LAST_CYCLE_SUCCESS} > {STALLED_AFTER_S:g}", "2m", "page",
            "slo-monitor at {{ $labels.instance }} has not completed a scrape cycle for 5 minutes",
            "The service answers /metrics but its loop has stopped deciding (or fails in every cycle): health "
            "checks, the HAProxy agent and the NGINX file fail open on stale verdicts, scaling holds, and SLO "
            "alerts are not renewed. /healthz lists the failing stages; the service log names the error.",
        ),
        ServiceAlert(
            "SloMonitorAbsent", f"absent(up{{{job}}})", "10m", "ticket",
            "Prometheus does not scrape slo-monitor",
            f'No target with job="{q.SERVICE_JOB}": the alerts on health decisions below cannot fire.',
        ),
        ServiceAlert(
            "SloMonitorInstanceEjected", f'{NS}_instance_state{{state="ejected"}} == 1', "1m", "ticket",
            "{{ $labels.instance }} (pool {{ $labels.pool }}) is ejected from the load balancer",
            "slo-monitor took the instance out of rotation; GET /api/v1/instances gives the reasons and "
            "/api/v1/decisions the history.",
        ),
        ServiceAlert(
            "SloMonitorInstanceDegraded", f'{NS}_instance_state{{state="degraded"}} == 1', "15m", "ticket",
            "{{ $labels.instance }} (pool {{ $labels.pool }}) has been degraded for 15 minutes",
            "The instance is slow or erroring but still serves (with less weight). GET /api/v1/instances gives "
            "the reasons.",
        ),
        ServiceAlert(
            "SloMonitorPoolCapacityLow",
            f'sum by (pool) ({NS}_instance_state{{state=~"ejected|unknown"}})\n/\n'
            f"count by (pool) ({NS}_instance_state{{state=\"healthy\"}})\n>= 0.5",
            "5m", "page",
            "Half or more of pool {{ $labels.pool }} is ejected or unreachable",
            "At least half of the pool's instances have been ejected or unknown for 5 minutes: the rest carries "
            "the whole load (slo-monitor fails open rather than eject more).",
        ),
        ServiceAlert(
            "SloMonitorScrapeFailing", f"{NS}_scrape_consecutive_failures >= 3", "5m", "ticket",
            "slo-monitor cannot scrape {{ $labels.instance }} (pool {{ $labels.pool }})",
            "Three or more consecutive scrapes of the instance failed for 5 minutes; its state is unknown.",
        ),
        ServiceAlert(
            "SloMonitorSloEvaluationErrors", f"increase({NS}_slo_evaluation_errors_total[10m]) > 0", None, "ticket",
            "slo-monitor failed to evaluate its SLOs",
            "At least one scrape cycle's SLO step failed in the last 10 minutes; the service log names the error.",
        ),
        ServiceAlert(
            "SloMonitorAlertmanagerFailing", f"{NS}_alertmanager_up == 0", "5m", "ticket",
            "slo-monitor cannot deliver alerts to Alertmanager",
            "POSTs to Alertmanager have failed for 5 minutes: the service's own SLO pages are not arriving.",
        ),
        ServiceAlert(
            "SloMonitorStorageFailing", f"{NS}_storage_up == 0", "10m", "ticket",
            "slo-monitor cannot write to its database",
            "Database writes have failed for 10 minutes; rows wait in memory (bounded) and history is at risk.",
        ),
    ]
    alerts += [
        ServiceAlert(
            "SloMonitorFailingOpen", f"{NS}_pool_fail_open == 1", "10m", "ticket",
            "Health decisions for pool {{ $labels.pool }} have been failing open for 10 minutes",
            "slo-monitor's data for the pool is stale or every target failed at once, so it ejects nothing new: "
            "a broken instance can keep receiving traffic until this clears.",
        ),
        ServiceAlert(
            "SloMonitorDecisionErrors", f"increase({NS}_decision_errors_total[10m]) > 0", None, "ticket",
            "slo-monitor failed to compute its health or scaling decisions",
            "At least one scrape cycle's decision step failed in the last 10 minutes; the service log names the "
            "error.",
        ),
        ServiceAlert(
            "SloMonitorNginxApplyFailing", f"{NS}_nginx_last_apply_ok == 0", "5m", "ticket",
            "slo-monitor cannot apply its upstream changes to NGINX",
            "Writing, validating (`nginx -t`) or reloading the upstream file has failed for 5 minutes; NGINX keeps "
            "the last good file, so ejections and returns are not reaching it.",
        ),
    ]
    today, budget = f"max by (pool) ({COST_TODAY})", f"max by (pool) ({COST_BUDGET})"
    alerts += [
        ServiceAlert(
            COST_WARNING_ALERT, f"{today}\n/\n{budget}\n>= {q.number(COST_WARNING_AT)}", None, "ticket",
            "Pool {{ $labels.pool }} has spent 80% or more of today's GPU budget",
            "slo-monitor's spend so far today (replica-hours since midnight UTC x GPUs x gpu_hour) has reached "
            "80% of the pool's cost.daily_budget.",
        ),
        ServiceAlert(
            COST_EXCEEDED_ALERT, f"{today}\n/\n{budget}\n>= 1", None, "page",
            "Pool {{ $labels.pool }} has spent its whole GPU budget for today",
            "slo-monitor's spend so far today (replica-hours since midnight UTC x GPUs x gpu_hour) has reached "
            "the pool's cost.daily_budget.",
        ),
    ]
    if replica_metrics:
        desired, current = replica_metrics
        alerts.append(ServiceAlert(
            "SloMonitorScaleUpPending", f"{desired} > {current}", "15m", "ticket",
            "Pool {{ $labels.pool }} has wanted more replicas for 15 minutes",
            "slo-monitor recommends more replicas than the pool runs, and has for 15 minutes: the autoscaler "
            "is not acting on the recommendation, or cannot (quota, GPUs).",
        ))
    return alerts


def service_rules(alerts: list[ServiceAlert], interval_s: float = 60.0) -> list[dict[str, Any]]:
    rules = []
    for a in alerts:
        rule: dict[str, Any] = {"alert": a.name, "expr": q.block(a.expr)}
        if a.for_:
            rule["for"] = a.for_
        rule["labels"] = {"severity": a.severity}
        rule["annotations"] = {"summary": a.summary, "description": a.description}
        rules.append(rule)
    return [{"name": "slo-monitor:alerts", "interval": q.duration(interval_s), "rules": rules}]
