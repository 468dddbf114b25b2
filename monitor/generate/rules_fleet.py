"""Prometheus alerts on the fleet: vLLM targets and metrics that disappeared, which every SLO and
panel silently depends on. One rule file for all pools (`FLEET_FILE`)."""

from __future__ import annotations

from typing import Any, Sequence

import monitor.generate.expressions as q

FLEET_FILE = "fleet"
ABSENT_FOR = "10m"  # the fleet's VllmMetricsAbsent; an SLO's own is its `absent_for`


def fleet_rules(pools: Sequence[str], interval_s: float = 60.0) -> list[dict[str, Any]]:
    """vLLM targets down and pools without vLLM metrics: what every SLO and panel silently depends on."""
    job = f"job={q.quote(q.VLLM_JOB)}"
    rules: list[dict[str, Any]] = [{
        "alert": "VllmTargetDown",
        "expr": q.block(f"up{{{job}}} == 0"),
        "for": "5m",
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "Prometheus cannot scrape vLLM at {{ $labels.instance }} (pool {{ $labels.pool }})",
            "description": "The /metrics endpoint has failed every scrape for 5 minutes: the server is down, "
                           "still loading its model, or unreachable from Prometheus.",
        },
    }]
    for pool in pools:
        rules.append({
            "alert": "VllmMetricsAbsent",
            "expr": q.block(f"absent({q.selector(q.RUNNING, [f'pool={q.quote(pool)}'])})"),
            "for": ABSENT_FOR,
            "labels": {"pool": pool, "severity": "ticket"},
            "annotations": {
                "summary": f"No vLLM metrics for pool {pool}",
                "description": f'No series of {q.RUNNING} with pool="{pool}" for {ABSENT_FOR}: Prometheus '
                               "does not scrape the pool, or scrapes it without the `pool` label.",
            },
        })
    return [{"name": "fleet:alerts", "interval": q.duration(interval_s), "rules": rules}]
