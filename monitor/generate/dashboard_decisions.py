"""The decisions dashboard: what slo-monitor decided per instance (health state over time, weight,
scrape failures, pools failing open), the signals behind it, desired against current replicas, and
each pool's GPU spend against its daily budget."""

from __future__ import annotations

from monitor.generate.panels import DECISION, NS, DashboardSpec, PanelSpec, pool_variables, query
from monitor.generate.rules_service import COST_BUDGET, COST_TODAY

STATE_CODES = {"healthy": (0, "green"), "degraded": (1, "yellow"), "ejected": (2, "red"), "unknown": (3, "gray")}


def decisions_dashboard(replica_metrics: tuple[str, str] | None) -> DashboardSpec:
    state = f"{NS}_instance_state"
    parts = [f'({state}{{{DECISION}, state="{s}"}} == 1) * 0 + {code}' for s, (code, _) in STATE_CODES.items()]
    timeline = "max by (pool, instance) (\n    " + "\n  or\n    ".join(parts) + "\n)"
    mapping = {"type": "value", "options": {str(code): {"text": s, "color": color, "index": code}
                                            for s, (code, color) in STATE_CODES.items()}}
    spec = DashboardSpec(
        uid="llm-slo-decisions", title="LLM health and scaling decisions", file_stem="decisions", time_from="now-6h",
        description="What slo-monitor decided: each instance's health state over time, the signals behind it, and "
                    "desired against current replicas per pool.",
        variables=pool_variables(state, f"{NS}_instance_requests_running", state),
    )
    health = [
        PanelSpec("Instance health", (query(timeline, "{{pool}} {{instance}}"),), "none",
                  "healthy, degraded (less weight), ejected (out of the load balancer) or unknown (no data); "
                  "GET /api/v1/instances gives the reasons and /api/v1/decisions the history.",
                  kind="state", width=24, height=9, mappings=(mapping,)),
        PanelSpec("Instances by state", (query(f"sum by (pool, state) ({state}{{{DECISION}}})", "{{pool}} {{state}}"),),
                  "short", "How many instances of each pool are in each state.", stack=True),
        PanelSpec("Load-balancer weight", (
            query(f"{NS}_instance_weight_ratio{{{DECISION}}}", "{{pool}} {{instance}}"),
        ), "percentunit", "Share of a healthy server's traffic each instance should get (NGINX weight, HAProxy "
                          "agent percentage); 0 while ejected.", min=0, max=1),
        PanelSpec("Consecutive scrape failures", (
            query(f"{NS}_scrape_consecutive_failures{{{DECISION}}}", "{{instance}}"),
        ), "short", "Three in a row make an instance unknown."),
        PanelSpec("Pools failing open", (query(f'{NS}_pool_fail_open{{pool=~"$pool"}}', "{{pool}}"),), "none",
                  "While a pool fails open (its data is stale, or every target failed at once) nothing new is "
                  "ejected.", kind="state",
                  mappings=({"type": "value", "options": {"0": {"text": "deciding", "color": "green", "index": 0},
                                                           "1": {"text": "failing open", "color": "orange",
                                                                 "index": 1}}},)),
    ]
    signals = [
        PanelSpec("TTFT p99 as slo-monitor sees it", (
            query(f'{NS}_instance_ttft_seconds{{{DECISION}, model_name=~"$model_name", quantile="0.99"}}',
               "{{instance}} {{model_name}}"),
        ), "s", "The latency signal of the health decisions, over the service's evaluation window."),
        PanelSpec("Error ratio as slo-monitor sees it", (
            query(f'{NS}_instance_error_ratio{{{DECISION}, model_name=~"$model_name"}}', "{{instance}} {{model_name}}"),
        ), "percentunit", "The error signal of the health decisions.", min=0),
    ]
    rows = [("Health", health), ("Signals", signals)]
    if replica_metrics:
        desired, current = replica_metrics
        rows.append(("Scaling", [
            PanelSpec("Desired and current replicas", (
                query(f'{desired}{{pool=~"$pool"}}', "desired {{pool}}"),
                query(f'{current}{{pool=~"$pool"}}', "current {{pool}}"),
            ), "short", "The HPA-style recommendation (what KEDA or an HPA would act on) against what runs.",
                width=24),
        ]))
    rows.append(("Cost", [
        PanelSpec("GPU spend today against the daily budget", (
            query(f'max by (pool, currency) ({COST_TODAY}{{pool=~"$pool"}})', "spent today {{pool}} ({{currency}})"),
            query(f'max by (pool, currency) ({COST_BUDGET}{{pool=~"$pool"}})', "daily budget {{pool}} ({{currency}})"),
        ), "none", "What each pool's GPUs have cost since midnight UTC (replica-hours x GPUs x gpu_hour), and its "
                   "cost.daily_budget: CostBudgetWarning at 80%, CostBudgetExceeded at 100% (pools with a `cost` "
                   "only).", expect_data=False, min=0),
        PanelSpec("GPU cost per hour", (
            query(f'max by (pool, currency) ({NS}_pool_cost_per_hour{{pool=~"$pool"}})', "{{pool}} ({{currency}})"),
        ), "none", "What the pool's GPUs cost per hour now (gpu_hour x GPUs of every member).", expect_data=False,
            min=0),
    ]))
    spec.rows = rows
    return spec
