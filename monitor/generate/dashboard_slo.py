"""The SLO dashboard: each SLO's budget, burn rates over every window, its alerts and maintenance
windows, from the recording rules and the service's own series."""

from __future__ import annotations

import monitor.generate.expressions as q
from monitor.evaluate.slo import WINDOW_NAMES
from monitor.generate.panels import (
    NS,
    SERVICE_SLO,
    SLO,
    TIMES,
    DashboardSpec,
    PanelSpec,
    Variable,
    pool_variables,
    query,
)
from monitor.generate.rules import ABSENT_ALERT, BURN_ALERT, COVERAGE, COVERED, EXHAUSTED_ALERT


def slo_dashboard() -> DashboardSpec:
    spec = DashboardSpec(
        uid="llm-slo-slos", title="LLM SLOs", file_stem="slos", time_from="now-24h",
        description="Every configured SLO from the generated recording rules (Prometheus alone is enough), and "
                    "the same SLOs as slo-monitor evaluates them, side by side.",
        variables=[Variable("slo", "SLO", "label_values(slo:objective:ratio, slo)"),
                   *pool_variables("slo:valid_events:rate5m", "slo:valid_events:rate5m", q.RUNNING)],
    )
    budget = "slo:error_budget:ratio"
    burns = tuple(
        query(f"slo:sli_error:ratio_rate{w}{{{SLO}}}\n/ on (slo) group_left ()\n{budget}",
           f"{{{{slo}}}} {w} {{{{pool}}}} {{{{model_name}}}}")
        for w in WINDOW_NAMES
    )
    remaining_thresholds = ((None, "red"), (0.0, "orange"), (0.25, "yellow"), (0.5, "green"))
    spec.rows = [
        ("Over the SLO window (recording rules)", [
            PanelSpec("SLI", (query(f"slo:period_sli:ratio{{{SLO}}}", "{{slo}} {{pool}} {{model_name}}"),),
                      "percentunit", "Good events over valid events across the SLO window (counts, not an average "
                                     "of ratios).", kind="stat", width=8, height=6, decimals=3),
            PanelSpec("Error budget remaining",
                      (query(f"slo:period_error_budget_remaining:ratio{{{SLO}}}", "{{slo}} {{pool}} {{model_name}}"),),
                      "percentunit", "1 − (error ratio over the SLO window ÷ error budget); below 0 the budget "
                                     "is overspent.", kind="stat", width=8, height=6, decimals=1,
                      thresholds=remaining_thresholds),
            PanelSpec("Objective", (query('slo:objective:ratio{slo=~"$slo"}', "{{slo}}"),), "percentunit",
                      "The objective of each SLO, as configured.", kind="stat", width=8, height=6, decimals=3),
            PanelSpec("Data behind the figures", (
                query(f"{COVERED}{{{SLO}}}", "{{slo}} {{pool}} {{model_name}} of {{window}}"),
            ), "dtdurations", "How much of the SLO window the SLI and budget stand on (\"3m of 30d\"): "
                              "three minutes of errors read as a deeply overspent 30-day budget. "
                              "ErrorBudgetExhausted waits for slos[].budget_min_coverage of the window (10% by "
                              "default) and budget_min_events; the burn-rate alerts do not.",
                kind="stat", width=12, height=6),
            PanelSpec("Coverage of the SLO window", (
                query(f"{COVERAGE}{{{SLO}}}", "{{slo}} {{pool}} {{model_name}} (rules)"),
                query(f"{NS}_slo_coverage_ratio{{{SERVICE_SLO}}}", "{{slo}} {{pool}} {{model_name}} (slo-monitor)"),
            ), "percentunit", "Share of the SLO window with data, 0-1, from the recording rules and from "
                              "slo-monitor (which counts from the first minute with events).",
                kind="stat", width=12, height=6, decimals=3),
        ]),
        ("Burn (recording rules)", [
            PanelSpec("Burn rate per window", burns, TIMES,
                      "Error ratio over each window divided by the error budget: 1 spends exactly the budget "
                      "over the SLO window. Pages fire at 14.4x (1h and 5m) or 6x (6h and 30m) for a 30-day "
                      "window; tickets at 3x (1d and 2h) or 1x (3d and 6h).", width=24, height=9, min=0),
            PanelSpec("SLI against the objective", (
                query(f"1 - slo:sli_error:ratio_rate1h{{{SLO}}}", "{{slo}} 1h {{pool}} {{model_name}}"),
                query(f"1 - slo:sli_error:ratio_rate5m{{{SLO}}}", "{{slo}} 5m {{pool}} {{model_name}}"),
                query('slo:objective:ratio{slo=~"$slo"}', "objective {{slo}}"),
            ), "percentunit", "The SLI over the last hour and five minutes, with the objective line."),
            PanelSpec("Error budget remaining over time",
                      (query(f"slo:period_error_budget_remaining:ratio{{{SLO}}}", "{{slo}} {{pool}} {{model_name}}"),),
                      "percentunit", "How the budget of the SLO window has been spent."),
            PanelSpec("Burn-rate alerts firing", (
                query(f'sum by (slo, pool, model_name, severity) (ALERTS{{alertname={q.quote(BURN_ALERT)}, '
                   f'alertstate="firing", {SLO}}})', "{{slo}} {{severity}} {{pool}} {{model_name}}"),
            ), "none", "The generated SloErrorBudgetBurn alerts while they fire (no series: none fires).",
                kind="state", expect_data=False, width=24, height=6,
                mappings=({"type": "value", "options": {"1": {"text": "firing", "color": "red", "index": 0}}},)),
            PanelSpec("Budget exhausted and metrics absent", (
                query(f'sum by (alertname, slo, pool, model_name) (ALERTS{{alertname=~'
                   f'{q.quote(EXHAUSTED_ALERT + "|" + ABSENT_ALERT)}, alertstate="firing", slo=~"$slo", '
                   f'pool=~"$pool"}})', "{{alertname}} {{slo}} {{pool}} {{model_name}}"),
            ), "none", "ErrorBudgetExhausted (nothing left of the SLO window's budget) and SLOMetricAbsent (the "
                       "SLI's vLLM series are gone while the targets are up: a renamed metric) while they fire.",
                kind="state", expect_data=False, width=24, height=6,
                mappings=({"type": "value", "options": {"1": {"text": "firing", "color": "red", "index": 0}}},)),
        ]),
        ("As slo-monitor evaluates them", [
            PanelSpec("SLI (slo-monitor)", (
                query(f"{NS}_slo_sli_ratio{{{SERVICE_SLO}}}", "{{slo}} {{pool}} {{model_name}}"),
            ), "percentunit", "The service's SLI over the SLO window, from its own per-minute event history."),
            PanelSpec("Error budget remaining (slo-monitor)", (
                query(f"{NS}_slo_error_budget_remaining_ratio{{{SERVICE_SLO}}}", "{{slo}} {{pool}} {{model_name}}"),
            ), "percentunit", "The service's view of the same budget."),
            PanelSpec("Burn rate per window (slo-monitor)", (
                query(f"{NS}_slo_burn_rate{{{SERVICE_SLO}}}", "{{slo}} {{window}} {{pool}} {{model_name}}"),
            ), TIMES, "The service's burn rates; they agree with the recording rules up to scrape timing."),
            PanelSpec("Alert state (slo-monitor)", (
                query(f"max by (slo, pool, model_name, severity) ({NS}_slo_alert{{{SERVICE_SLO}}})",
                   "{{slo}} {{severity}} {{pool}} {{model_name}}"),
            ), "none", "1 while the service's own burn-rate alert of that severity fires.", kind="state",
                mappings=({"type": "value", "options": {"0": {"text": "quiet", "color": "green", "index": 0},
                                                         "1": {"text": "firing", "color": "red", "index": 1}}},)),
            PanelSpec("Maintenance windows in force", (
                query(f'max by (slo, pool) ({NS}_exclusion_active{{slo=~"$slo", pool=~"$pool"}})', "{{slo}} {{pool}}"),
            ), "none", "1 while a maintenance window (slos[].exclusions, POST /api/v1/exclusions) is in force: its "
                       "minutes count neither good nor bad events, on the service and in the recording rules.",
                kind="state",
                mappings=({"type": "value", "options": {"0": {"text": "counting", "color": "green", "index": 0},
                                                         "1": {"text": "excluded", "color": "blue", "index": 1}}},)),
            PanelSpec("SLI metrics absent (slo-monitor)", (
                query(f'max by (slo, pool) ({NS}_slo_metric_absent{{slo=~"$slo", pool=~"$pool"}})', "{{slo}} {{pool}}"),
            ), "none", "1 while the SLI's vLLM series have been missing from every scraped instance of the pool "
                       "for the SLO's absent_for (SLOMetricAbsent).", kind="state",
                mappings=({"type": "value", "options": {"0": {"text": "present", "color": "green", "index": 0},
                                                         "1": {"text": "absent", "color": "red", "index": 1}}},)),
            PanelSpec("Goodput (from vLLM traces)", (
                query(f'{NS}_goodput_requests_per_second{{pool=~"$pool", model_name=~"$model_name"}}',
                   "{{pool}} {{model_name}}"),
            ), "reqps", "Requests per second that met every latency SLO of their pool at once, counted per "
                        "request from vLLM's OpenTelemetry spans (no series until the servers send traces to "
                        "slo-monitor).", expect_data=False, width=24),
        ]),
    ]
    return spec
