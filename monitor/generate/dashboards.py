"""Grafana dashboards, built with grafanalib: fleet, SLOs, GPUs and decisions.

Every panel and query reads the template variable `datasource`, so the dashboards load into any
Grafana whatever its Prometheus is called; `pool`, `model_name` and `instance` filter every query
that has those labels (the `pool` label comes from the generated scrape config). uids are constants:
links and bookmarks survive regeneration, and re-provisioning replaces a dashboard instead of adding
a copy.

Each dashboard is described first as plain `PanelSpec`s (`panels`; one module per dashboard:
`dashboard_fleet`, `dashboard_slo`, `dashboard_gpu`, `dashboard_decisions`) and only then turned
into grafanalib objects here; the tests run the very same queries against a real Prometheus, so
what ships is what was proven.
"""

from __future__ import annotations

import json
from typing import Any

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

from monitor.generate.dashboard_decisions import decisions_dashboard
from monitor.generate.dashboard_fleet import fleet_dashboard
from monitor.generate.dashboard_gpu import gpu_dashboard
from monitor.generate.dashboard_slo import slo_dashboard
from monitor.generate.panels import DashboardSpec, PanelSpec
from monitor.generate.rules_service import REPLICA_METRICS

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TAG = "llm-slo-monitor"


def dashboard_specs(*, gpus: bool = True,
                    replica_metrics: tuple[str, str] | None = REPLICA_METRICS) -> list[DashboardSpec]:
    """Every dashboard `generate` writes; the GPU one only where GPUs report (`gpus`)."""
    specs = [fleet_dashboard(), slo_dashboard()]
    if gpus:
        specs.append(gpu_dashboard())
    specs.append(decisions_dashboard(replica_metrics))
    return specs


# --- grafanalib ------------------------------------------------------------------------------------


def _templating(spec: DashboardSpec) -> g.Templating:
    variables: list[g.Template] = [g.Template(
        name="datasource", label="Data source", query="prometheus", type="datasource",
        default="default", hide=g.SHOW,
    )]
    for var in spec.variables:
        variables.append(g.Template(
            name=var.name, label=var.label, query=var.query, dataSource=DATASOURCE, type="query",
            includeAll=True, multi=True, allValue=".*", default="All", refresh=g.REFRESH_ON_TIME_RANGE_CHANGE,
            sort=g.SORT_ALPHA_ASC,
        ))
    return g.Templating(list=variables)


def _thresholds(panel: PanelSpec) -> list[dict[str, Any]]:
    if not panel.thresholds:
        return [{"color": "green", "value": None}]
    return [{"color": color, "value": value} for value, color in panel.thresholds]


def _targets(panel: PanelSpec) -> list[g.Target]:
    return [g.Target(expr=query.expr, legendFormat=query.legend, refId=chr(ord("A") + i), datasource=DATASOURCE,
                     intervalFactor=1, step=None)
            for i, query in enumerate(panel.queries)]


def _panel(panel: PanelSpec, pos: g.GridPos, panel_id: int) -> g.Panel:
    common = dict(title=panel.title, description=panel.description, dataSource=DATASOURCE, targets=_targets(panel),
                  gridPos=pos, id=panel_id, thresholds=_thresholds(panel), maxDataPoints=None)
    limits: dict[str, Any] = {}
    if panel.min is not None:
        limits["min"] = panel.min
    if panel.max is not None:
        limits["max"] = panel.max
    if panel.decimals is not None:
        limits["decimals"] = panel.decimals
    extra = {"fieldConfig": {"defaults": limits}} if limits else None
    if panel.kind == "stat":
        return g.Stat(**common, format=panel.unit, reduceCalc="lastNotNull", graphMode="area",
                      colorMode="value" if panel.thresholds else "none", mappings=list(panel.mappings),
                      extraJson=extra)
    if panel.kind == "state":
        return g.StateTimeline(**common, mappings=list(panel.mappings), extraJson=extra)
    stacking = {"mode": "normal", "group": "A"} if panel.stack else {"mode": "none", "group": "A"}
    return g.TimeSeries(**common, unit=panel.unit, stacking=stacking, fillOpacity=20 if panel.stack else 8,
                        legendDisplayMode="table", legendPlacement="right" if panel.width == 24 else "bottom",
                        legendCalcs=["lastNotNull", "max"], tooltipMode="multi", extraJson=extra)


def build(spec: DashboardSpec) -> g.Dashboard:
    """Lay the rows out on Grafana's 24-column grid, panels left to right, ids in reading order."""
    panels: list[g.Panel] = []
    y, next_id = 0, 1
    for title, row_panels in spec.rows:
        panels.append(g.RowPanel(title=title, gridPos=g.GridPos(h=1, w=24, x=0, y=y), id=next_id,
                                 dataSource=DATASOURCE))
        next_id += 1
        y += 1
        x, line_height = 0, 0
        for panel in row_panels:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel(panel, g.GridPos(h=panel.height, w=panel.width, x=x, y=y), next_id))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    links = [{"type": "dashboards", "tags": [TAG], "asDropdown": True, "includeVars": True, "keepTime": True,
              "title": "LLM SLO dashboards", "icon": "external link", "targetBlank": False}]
    return g.Dashboard(
        title=spec.title, uid=spec.uid, description=spec.description, tags=[TAG], panels=panels,
        templating=_templating(spec), time=g.Time(spec.time_from, "now"), refresh="30s", timezone="browser",
        links=links, graphTooltip=g.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR, editable=True,
        schemaVersion=39,
    )


def to_dict(spec: DashboardSpec) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, with what grafanalib leaves out filled in: query
    variables start on `All` (`$__all`, which Grafana expands to the `.*` allValue) and show their
    query as `definition`."""
    data = json.loads(json.dumps(build(spec).to_json_data(), cls=DashboardEncoder))
    for var in data["templating"]["list"]:
        if var["type"] == "query":
            var["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
            var["definition"] = var["query"]
        elif var["type"] == "datasource":
            var["current"] = {"selected": True, "text": "default", "value": "default"}
    return data


def render(spec: DashboardSpec) -> str:
    """The dashboard's JSON text, deterministic (sorted keys) so regeneration can be diffed."""
    return json.dumps(to_dict(spec), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


__all__ = ["TAG", "build", "dashboard_specs", "render", "to_dict"]
