"""What a dashboard is before grafanalib sees it: plain `PanelSpec`s (title, queries, unit, whether a
live fleet must return data) in rows, the template variables, and the label filters every query of
a dashboard shares. The dashboards (`dashboard_*`) are written in these terms and the tests run the
very same queries against a real Prometheus; `dashboards` turns them into Grafana JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import monitor.generate.expressions as q

RATE = "$__rate_interval"
TOKENS_PER_S = "suffix: tok/s"  # Grafana's custom-unit syntax; it has no built-in token unit
TIMES = "suffix:x"

VLLM = 'pool=~"$pool", model_name=~"$model_name", instance=~"$instance"'
SLO = 'slo=~"$slo", pool=~"$pool", model_name=~"$model_name"'
GPU = 'pool=~"$pool", instance=~"$instance"'
DECISION = 'pool=~"$pool", instance=~"$instance"'
SERVICE_SLO = 'slo=~"$slo", pool=~"$pool", model_name=~"$model_name"'
NS = "slo_monitor"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    queries: tuple[Query, ...]
    unit: str
    description: str
    kind: str = "timeseries"  # timeseries | stat | state
    expect_data: bool = True  # on a live fleet with traffic (the tests hold each panel to it)
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None
    decimals: int | None = None
    mappings: tuple[dict[str, Any], ...] = ()
    thresholds: tuple[tuple[float | None, str], ...] = ()
    stack: bool = False


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    query: str  # label_values(...) for query variables


@dataclass
class DashboardSpec:
    uid: str
    title: str
    description: str
    file_stem: str
    time_from: str
    variables: list[Variable]
    rows: list[tuple[str, list[PanelSpec]]] = field(default_factory=list)

    def panels(self) -> list[PanelSpec]:
        return [p for _, panels in self.rows for p in panels]


def query(expr: str, legend: str) -> Query:
    return Query(expr, legend)


def quantiles(names: Sequence[str]) -> tuple[Query, ...]:
    """p50 / p90 / p99 per pool and model from a latency histogram (either spelling of its name)."""
    buckets = q.rate_any(names, [VLLM], RATE, "_bucket")
    return tuple(
        query(f"histogram_quantile({quant}, sum by (le, pool, model_name) ({buckets}))", f"p{pct} {{{{pool}}}} {{{{model_name}}}}")
        for quant, pct in ((0.5, "50"), (0.9, "90"), (0.99, "99"))
    )


def pool_variables(pool_from: str, model_from: str, instance_from: str) -> list[Variable]:
    return [
        Variable("pool", "Pool", f"label_values({pool_from}, pool)"),
        Variable("model_name", "Model", f'label_values({model_from}{{pool=~"$pool"}}, model_name)'),
        Variable("instance", "Instance", f'label_values({instance_from}{{pool=~"$pool"}}, instance)'),
    ]

