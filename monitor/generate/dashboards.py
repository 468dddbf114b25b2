"""Grafana dashboards, built with grafanalib: fleet, SLOs, GPUs and decisions.

Every panel and query reads the template variable `datasource`, so the dashboards load into any
Grafana whatever its Prometheus is called; `pool`, `model_name` and `instance` filter every query
that has those labels (the `pool` label comes from the generated scrape config). uids are constants:
links and bookmarks survive regeneration, and re-provisioning replaces a dashboard instead of adding
a copy.

Each dashboard is described first as plain `PanelSpec`s (title, queries, unit, whether a live
fleet must return data) and only then turned into grafanalib objects; the tests run the very same
queries against a real Prometheus, so what ships is what was proven.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

from monitor.evaluate.slo import WINDOW_NAMES
import monitor.generate.expressions as q
from monitor.generate.rules import ABSENT_ALERT, BURN_ALERT, EXHAUSTED_ALERT
from monitor.generate.rules_service import COST_BUDGET, COST_TODAY, REPLICA_METRICS

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TAG = "llm-slo-monitor"
RATE = "$__rate_interval"
TOKENS_PER_S = "suffix: tok/s"  # Grafana's custom-unit syntax; it has no built-in token unit
TIMES = "suffix:x"

VLLM = 'pool=~"$pool", model_name=~"$model_name", instance=~"$instance"'
SLO = 'slo=~"$slo", pool=~"$pool", model_name=~"$model_name"'
GPU = 'pool=~"$pool", instance=~"$instance"'
DECISION = 'pool=~"$pool", instance=~"$instance"'
SERVICE_SLO = 'slo=~"$slo", pool=~"$pool", model_name=~"$model_name"'
NS = "slo_monitor"

STATE_CODES = {"healthy": (0, "green"), "degraded": (1, "yellow"), "ejected": (2, "red"), "unknown": (3, "gray")}


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


def _q(expr: str, legend: str) -> Query:
    return Query(expr, legend)


def _quantiles(names: Sequence[str]) -> tuple[Query, ...]:
    """p50 / p90 / p99 per pool and model from a latency histogram (either spelling of its name)."""
    buckets = q.rate_any(names, [VLLM], RATE, "_bucket")
    return tuple(
        _q(f"histogram_quantile({quant}, sum by (le, pool, model_name) ({buckets}))", f"p{pct} {{{{pool}}}} {{{{model_name}}}}")
        for quant, pct in ((0.5, "50"), (0.9, "90"), (0.99, "99"))
    )


def _vars(pool_from: str, model_from: str, instance_from: str) -> list[Variable]:
    return [
        Variable("pool", "Pool", f"label_values({pool_from}, pool)"),
        Variable("model_name", "Model", f'label_values({model_from}{{pool=~"$pool"}}, model_name)'),
        Variable("instance", "Instance", f'label_values({instance_from}{{pool=~"$pool"}}, instance)'),
    ]


def fleet_dashboard() -> DashboardSpec:
    success = q.SUCCESS
    finished = f"rate({q.selector(success, [VLLM])}[{RATE}])"
    rejected = f"rate({q.selector(q.REJECTIONS, [VLLM])}[{RATE}])"
    errors = f'rate({q.selector(success, [VLLM, "finished_reason=" + q.quote("error")])}[{RATE}])'
    hits = q.rate_any(q.PREFIX_HITS, [VLLM], RATE)
    queries = q.rate_any(q.PREFIX_QUERIES, [VLLM], RATE)
    by_instance = ("pool", "model_name", "instance")
    spec = DashboardSpec(
        uid="llm-slo-fleet", title="LLM fleet (vLLM)", file_stem="fleet", time_from="now-3h",
        description="Traffic, latency, load and cache of every vLLM server, per pool, model and instance, read "
                    "straight from vLLM's /metrics (V0 and V1 names).",
        variables=_vars(q.RUNNING, q.RUNNING, q.RUNNING),
    )
    spec.rows = [
        ("Traffic", [
            PanelSpec("vLLM targets up", (_q(f'sum by (pool) (up{{job={q.quote(q.VLLM_JOB)}, pool=~"$pool", '
                                             f'instance=~"$instance"}})', "{{pool}}"),),
                      "none", "Targets Prometheus scraped successfully at the last scrape, per pool.",
                      kind="stat", width=6, height=6),
            PanelSpec("Requests per second", (_q(q.sum_by(by_instance, finished), "{{instance}} {{model_name}}"),),
                      "reqps", "Finished requests per second (every finished_reason), per instance.",
                      width=18, height=6),
            PanelSpec("Tokens per second", (
                _q(q.sum_by(("pool", "model_name"), f"rate({q.selector(q.PROMPT_TOKENS, [VLLM])}[{RATE}])"),
                   "prompt {{pool}} {{model_name}}"),
                _q(q.sum_by(("pool", "model_name"), f"rate({q.selector(q.GENERATION_TOKENS, [VLLM])}[{RATE}])"),
                   "generation {{pool}} {{model_name}}"),
            ), TOKENS_PER_S, "Prompt (prefill) and generated tokens per second."),
            PanelSpec("Errors and aborts by reason", (
                _q(f"sum by (pool, model_name, finished_reason) "
                   f'(rate({q.selector(success, [VLLM, "finished_reason=~" + q.quote("error|abort")])}[{RATE}]))',
                   "{{finished_reason}} {{pool}} {{model_name}}"),
                _q(f"sum by (pool, model_name, reason) ({rejected})", "rejected ({{reason}}) {{pool}} {{model_name}}"),
            ), "reqps", "Requests that finished with an error or were aborted by the client, and requests "
                        "rejected at admission (vLLM ≥ 0.33), per reason."),
            PanelSpec("Error ratio", (
                _q(f"{q.sum_by(('pool', 'model_name'), errors + ' or ' + rejected)}\n/\n"
                   f"{q.sum_by(('pool', 'model_name'), finished + ' or ' + rejected)}",
                   "{{pool}} {{model_name}}"),
            ), "percentunit", "Errors and admission rejections over all finished and rejected requests: the "
                              "error_ratio SLI. Client aborts count as requests, not errors.", min=0),
        ]),
        ("Latency", [
            PanelSpec("Time to first token", _quantiles(q.histogram_names("ttft")), "s",
                      "TTFT p50 / p90 / p99 per pool and model, from vllm:time_to_first_token_seconds."),
            PanelSpec("Time per output token", _quantiles(q.histogram_names("tpot")), "s",
                      "Inter-token latency p50 / p90 / p99 (vllm:inter_token_latency_seconds, or "
                      "vllm:time_per_output_token_seconds on older servers)."),
            PanelSpec("End-to-end request latency", _quantiles(q.histogram_names("e2e")), "s",
                      "Request latency p50 / p90 / p99, arrival to last token."),
            PanelSpec("Queue time", _quantiles(q.histogram_names("queue")), "s",
                      "Time requests waited before being scheduled, p50 / p90 / p99."),
            PanelSpec("TTFT p99 per instance", (
                _q(f"histogram_quantile(0.99, sum by (le, pool, instance) "
                   f"({q.rate_any(q.histogram_names('ttft'), [VLLM], RATE, '_bucket')}))", "{{instance}}"),
            ), "s", "One slow instance hides in a pool-wide percentile; this is where it shows.", width=24),
        ]),
        ("Load and cache", [
            PanelSpec("Requests running and waiting", (
                _q(q.sum_by(by_instance, q.selector(q.RUNNING, [VLLM])), "running {{instance}}"),
                _q(q.sum_by(by_instance, q.selector(q.WAITING, [VLLM])), "waiting {{instance}}"),
            ), "short", "Requests in the running batch and in the queue, per instance."),
            PanelSpec("KV-cache usage", (
                _q(f"avg by (pool, model_name, instance) ({q.any_of(q.KV_USAGE, [VLLM])})", "{{instance}}"),
            ), "percentunit", "vllm:kv_cache_usage_perc (vllm:gpu_cache_usage_perc before 0.9.2); 1 = full.",
                min=0, max=1),
            PanelSpec("Preemptions per second", (
                _q(q.sum_by(by_instance, f"rate({q.selector(q.PREEMPTIONS, [VLLM])}[{RATE}])"), "{{instance}}"),
            ), "ops", "Requests preempted (KV cache exhausted) per second, per instance."),
            PanelSpec("Prefix-cache hit rate", (
                _q(f"{q.sum_by(by_instance, hits)}\n/\n{q.sum_by(by_instance, queries)}\nor\n"
                   f"avg by (pool, model_name, instance) ({q.selector(q.PREFIX_HIT_RATE_V0, [VLLM])} >= 0)",
                   "{{instance}}"),
            ), "percentunit", "Prefix-cache hits over queries (tokens; blocks before vLLM 0.9), or V0's hit-rate "
                              "gauge (−1, prefix caching disabled, is left out).", min=0, max=1),
        ]),
    ]
    return spec


def slo_dashboard() -> DashboardSpec:
    spec = DashboardSpec(
        uid="llm-slo-slos", title="LLM SLOs", file_stem="slos", time_from="now-24h",
        description="Every configured SLO from the generated recording rules (Prometheus alone is enough), and "
                    "the same SLOs as slo-monitor evaluates them, side by side.",
        variables=[Variable("slo", "SLO", "label_values(slo:objective:ratio, slo)"),
                   *_vars("slo:valid_events:rate5m", "slo:valid_events:rate5m", q.RUNNING)],
    )
    budget = "slo:error_budget:ratio"
    burns = tuple(
        _q(f"slo:sli_error:ratio_rate{w}{{{SLO}}}\n/ on (slo) group_left ()\n{budget}",
           f"{{{{slo}}}} {w} {{{{pool}}}} {{{{model_name}}}}")
        for w in WINDOW_NAMES
    )
    remaining_thresholds = ((None, "red"), (0.0, "orange"), (0.25, "yellow"), (0.5, "green"))
    spec.rows = [
        ("Over the SLO window (recording rules)", [
            PanelSpec("SLI", (_q(f"slo:period_sli:ratio{{{SLO}}}", "{{slo}} {{pool}} {{model_name}}"),),
                      "percentunit", "Good events over valid events across the SLO window (counts, not an average "
                                     "of ratios).", kind="stat", width=8, height=6, decimals=3),
            PanelSpec("Error budget remaining",
                      (_q(f"slo:period_error_budget_remaining:ratio{{{SLO}}}", "{{slo}} {{pool}} {{model_name}}"),),
                      "percentunit", "1 − (error ratio over the SLO window ÷ error budget); below 0 the budget "
                                     "is overspent.", kind="stat", width=8, height=6, decimals=1,
                      thresholds=remaining_thresholds),
            PanelSpec("Objective", (_q('slo:objective:ratio{slo=~"$slo"}', "{{slo}}"),), "percentunit",
                      "The objective of each SLO, as configured.", kind="stat", width=8, height=6, decimals=3),
        ]),
        ("Burn (recording rules)", [
            PanelSpec("Burn rate per window", burns, TIMES,
                      "Error ratio over each window divided by the error budget: 1 spends exactly the budget "
                      "over the SLO window. Pages fire at 14.4x (1h and 5m) or 6x (6h and 30m) for a 30-day "
                      "window; tickets at 3x (1d and 2h) or 1x (3d and 6h).", width=24, height=9, min=0),
            PanelSpec("SLI against the objective", (
                _q(f"1 - slo:sli_error:ratio_rate1h{{{SLO}}}", "{{slo}} 1h {{pool}} {{model_name}}"),
                _q(f"1 - slo:sli_error:ratio_rate5m{{{SLO}}}", "{{slo}} 5m {{pool}} {{model_name}}"),
                _q('slo:objective:ratio{slo=~"$slo"}', "objective {{slo}}"),
            ), "percentunit", "The SLI over the last hour and five minutes, with the objective line."),
            PanelSpec("Error budget remaining over time",
                      (_q(f"slo:period_error_budget_remaining:ratio{{{SLO}}}", "{{slo}} {{pool}} {{model_name}}"),),
                      "percentunit", "How the budget of the SLO window has been spent."),
            PanelSpec("Burn-rate alerts firing", (
                _q(f'sum by (slo, pool, model_name, severity) (ALERTS{{alertname={q.quote(BURN_ALERT)}, '
                   f'alertstate="firing", {SLO}}})', "{{slo}} {{severity}} {{pool}} {{model_name}}"),
            ), "none", "The generated SloErrorBudgetBurn alerts while they fire (no series: none fires).",
                kind="state", expect_data=False, width=24, height=6,
                mappings=({"type": "value", "options": {"1": {"text": "firing", "color": "red", "index": 0}}},)),
            PanelSpec("Budget exhausted and metrics absent", (
                _q(f'sum by (alertname, slo, pool, model_name) (ALERTS{{alertname=~'
                   f'{q.quote(EXHAUSTED_ALERT + "|" + ABSENT_ALERT)}, alertstate="firing", slo=~"$slo", '
                   f'pool=~"$pool"}})', "{{alertname}} {{slo}} {{pool}} {{model_name}}"),
            ), "none", "ErrorBudgetExhausted (nothing left of the SLO window's budget) and SLOMetricAbsent (the "
                       "SLI's vLLM series are gone while the targets are up: a renamed metric) while they fire.",
                kind="state", expect_data=False, width=24, height=6,
                mappings=({"type": "value", "options": {"1": {"text": "firing", "color": "red", "index": 0}}},)),
        ]),
        ("As slo-monitor evaluates them", [
            PanelSpec("SLI (slo-monitor)", (
                _q(f"{NS}_slo_sli_ratio{{{SERVICE_SLO}}}", "{{slo}} {{pool}} {{model_name}}"),
            ), "percentunit", "The service's SLI over the SLO window, from its own per-minute event history."),
            PanelSpec("Error budget remaining (slo-monitor)", (
                _q(f"{NS}_slo_error_budget_remaining_ratio{{{SERVICE_SLO}}}", "{{slo}} {{pool}} {{model_name}}"),
            ), "percentunit", "The service's view of the same budget."),
            PanelSpec("Burn rate per window (slo-monitor)", (
                _q(f"{NS}_slo_burn_rate{{{SERVICE_SLO}}}", "{{slo}} {{window}} {{pool}} {{model_name}}"),
            ), TIMES, "The service's burn rates; they agree with the recording rules up to scrape timing."),
            PanelSpec("Alert state (slo-monitor)", (
                _q(f"max by (slo, pool, model_name, severity) ({NS}_slo_alert{{{SERVICE_SLO}}})",
                   "{{slo}} {{severity}} {{pool}} {{model_name}}"),
            ), "none", "1 while the service's own burn-rate alert of that severity fires.", kind="state",
                mappings=({"type": "value", "options": {"0": {"text": "quiet", "color": "green", "index": 0},
                                                         "1": {"text": "firing", "color": "red", "index": 1}}},)),
            PanelSpec("Maintenance windows in force", (
                _q(f'max by (slo, pool) ({NS}_exclusion_active{{slo=~"$slo", pool=~"$pool"}})', "{{slo}} {{pool}}"),
            ), "none", "1 while a maintenance window (slos[].exclusions, POST /api/v1/exclusions) is in force: its "
                       "minutes count neither good nor bad events, on the service and in the recording rules.",
                kind="state",
                mappings=({"type": "value", "options": {"0": {"text": "counting", "color": "green", "index": 0},
                                                         "1": {"text": "excluded", "color": "blue", "index": 1}}},)),
            PanelSpec("SLI metrics absent (slo-monitor)", (
                _q(f'max by (slo, pool) ({NS}_slo_metric_absent{{slo=~"$slo", pool=~"$pool"}})', "{{slo}} {{pool}}"),
            ), "none", "1 while the SLI's vLLM series have been missing from every scraped instance of the pool "
                       "for the SLO's absent_for (SLOMetricAbsent).", kind="state",
                mappings=({"type": "value", "options": {"0": {"text": "present", "color": "green", "index": 0},
                                                         "1": {"text": "absent", "color": "red", "index": 1}}},)),
            PanelSpec("Goodput (from vLLM traces)", (
                _q(f'{NS}_goodput_requests_per_second{{pool=~"$pool", model_name=~"$model_name"}}',
                   "{{pool}} {{model_name}}"),
            ), "reqps", "Requests per second that met every latency SLO of their pool at once, counted per "
                        "request from vLLM's OpenTelemetry spans (no series until the servers send traces to "
                        "slo-monitor).", expect_data=False, width=24),
        ]),
    ]
    return spec


GPU_METRICS = "DCGM_FI_DEV_GPU_UTIL"


# the service's `instance` on GPU series is the vLLM instance, not the exporter `$instance` picks here
SERVICE_GPU = 'pool=~"$pool"'


def gpu_dashboard() -> DashboardSpec:
    legend = "{{instance}} GPU {{gpu}}"
    svc_legend = "{{pool}} {{instance}} GPU {{gpu}}"
    spec = DashboardSpec(
        uid="llm-slo-gpus", title="LLM GPUs", file_stem="gpus", time_from="now-3h",
        description="GPU telemetry under dcgm-exporter's names, as dcgm-exporter and `slo-monitor exporter` "
                    "(NVML) both serve them. GPUs on a host that runs one pool's servers carry that pool.",
        variables=[Variable("pool", "Pool", f"label_values({q.RUNNING}, pool)"),
                   Variable("model_name", "Model", f'label_values({q.RUNNING}{{pool=~"$pool"}}, model_name)'),
                   Variable("instance", "Exporter", f'label_values({GPU_METRICS}{{pool=~"$pool"}}, instance)')],
    )
    spec.rows = [
        ("GPUs", [
            PanelSpec("GPU utilisation", (_q(f"DCGM_FI_DEV_GPU_UTIL{{{GPU}}}", legend),), "percent",
                      "Share of the sample period a kernel ran (DCGM_FI_DEV_GPU_UTIL).", min=0, max=100),
            PanelSpec("Tensor pipe active", (_q(f"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{GPU}}}", legend),), "percentunit",
                      "Ratio of cycles the tensor pipe was active (profiling metrics; absent where DCP is not "
                      "available).", expect_data=False, min=0, max=1),
            PanelSpec("GPU memory used", (
                _q(f"DCGM_FI_DEV_FB_USED{{{GPU}}}", f"used {legend}"),
                _q(f"DCGM_FI_DEV_FB_USED{{{GPU}}} + DCGM_FI_DEV_FB_FREE{{{GPU}}}", f"total {legend}"),
            ), "mbytes", "Framebuffer memory used, and used + free (MiB)."),
            PanelSpec("GPU memory used ratio", (
                _q(f"DCGM_FI_DEV_FB_USED{{{GPU}}}\n/\n(DCGM_FI_DEV_FB_USED{{{GPU}}} + DCGM_FI_DEV_FB_FREE{{{GPU}}})",
                   legend),
            ), "percentunit", "Above 90% a server is one long prompt away from out-of-memory.", min=0, max=1),
            PanelSpec("Temperature", (
                _q(f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}", f"GPU {legend}"),
                _q(f"DCGM_FI_DEV_MEMORY_TEMP{{{GPU}}}", f"memory {legend}"),
            ), "celsius", "GPU and memory temperature."),
            PanelSpec("Power draw", (_q(f"DCGM_FI_DEV_POWER_USAGE{{{GPU}}}", legend),), "watt",
                      "Board power draw (W)."),
            PanelSpec("Last XID error (exporters)", (
                _q(f"max by (instance, gpu, err_code, err_msg) (DCGM_FI_DEV_XID_ERRORS{{{GPU}}})",
                   "{{instance}} GPU {{gpu}} {{err_msg}}"),
            ), "none", "The code of the last XID event per GPU (0: none). 13, 31, 43, 45, 48, 63, 64, 74, 79, 92, 94, "
                       "95, 119 and 120 mean a server on that GPU needs a look.", width=24),
        ]),
        ("GPUs by the instance they serve (slo-monitor)", [
            # slo-monitor scrapes the same exporters and maps each GPU to the vLLM instance on it;
            # only the service knows that mapping, so these panels read its slo_monitor_gpu_* series
            PanelSpec("Utilisation by instance", (
                _q(f"{NS}_gpu_utilization_ratio{{{SERVICE_GPU}}}", svc_legend),
            ), "percentunit", "GPU utilisation of each vLLM instance's GPUs.", expect_data=False, min=0, max=1),
            PanelSpec("Memory used by instance", (
                _q(f"{NS}_gpu_memory_used_ratio{{{SERVICE_GPU}}}", svc_legend),
            ), "percentunit", "Above 90% the GPU becomes a health reason of its instance.", expect_data=False,
                min=0, max=1),
            PanelSpec("Temperature and power by instance", (
                _q(f"{NS}_gpu_temperature_celsius{{{SERVICE_GPU}}}", f"°C {svc_legend}"),
                _q(f"{NS}_gpu_power_watts{{{SERVICE_GPU}}}", f"W {svc_legend}"),
            ), "short", "GPU temperature (°C) and power draw (W).", expect_data=False),
            PanelSpec("XID events by instance", (
                _q(f"{NS}_gpu_xid_last{{{SERVICE_GPU}}}", f"last XID {svc_legend}"),
                _q(f"{NS}_gpu_xid_events_held{{{SERVICE_GPU}}}", f"held {svc_legend}"),
            ), "none", "The last XID per GPU and the XID events still counting against the instance's health.",
                expect_data=False),
        ]),
    ]
    return spec


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
        variables=_vars(state, f"{NS}_instance_requests_running", state),
    )
    health = [
        PanelSpec("Instance health", (_q(timeline, "{{pool}} {{instance}}"),), "none",
                  "healthy, degraded (less weight), ejected (out of the load balancer) or unknown (no data); "
                  "GET /api/v1/instances gives the reasons and /api/v1/decisions the history.",
                  kind="state", width=24, height=9, mappings=(mapping,)),
        PanelSpec("Instances by state", (_q(f"sum by (pool, state) ({state}{{{DECISION}}})", "{{pool}} {{state}}"),),
                  "short", "How many instances of each pool are in each state.", stack=True),
        PanelSpec("Load-balancer weight", (
            _q(f"{NS}_instance_weight_ratio{{{DECISION}}}", "{{pool}} {{instance}}"),
        ), "percentunit", "Share of a healthy server's traffic each instance should get (NGINX weight, HAProxy "
                          "agent percentage); 0 while ejected.", min=0, max=1),
        PanelSpec("Consecutive scrape failures", (
            _q(f"{NS}_scrape_consecutive_failures{{{DECISION}}}", "{{instance}}"),
        ), "short", "Three in a row make an instance unknown."),
        PanelSpec("Pools failing open", (_q(f'{NS}_pool_fail_open{{pool=~"$pool"}}', "{{pool}}"),), "none",
                  "While a pool fails open (its data is stale, or every target failed at once) nothing new is "
                  "ejected.", kind="state",
                  mappings=({"type": "value", "options": {"0": {"text": "deciding", "color": "green", "index": 0},
                                                           "1": {"text": "failing open", "color": "orange",
                                                                 "index": 1}}},)),
    ]
    signals = [
        PanelSpec("TTFT p99 as slo-monitor sees it", (
            _q(f'{NS}_instance_ttft_seconds{{{DECISION}, model_name=~"$model_name", quantile="0.99"}}',
               "{{instance}} {{model_name}}"),
        ), "s", "The latency signal of the health decisions, over the service's evaluation window."),
        PanelSpec("Error ratio as slo-monitor sees it", (
            _q(f'{NS}_instance_error_ratio{{{DECISION}, model_name=~"$model_name"}}', "{{instance}} {{model_name}}"),
        ), "percentunit", "The error signal of the health decisions.", min=0),
    ]
    rows = [("Health", health), ("Signals", signals)]
    if replica_metrics:
        desired, current = replica_metrics
        rows.append(("Scaling", [
            PanelSpec("Desired and current replicas", (
                _q(f'{desired}{{pool=~"$pool"}}', "desired {{pool}}"),
                _q(f'{current}{{pool=~"$pool"}}', "current {{pool}}"),
            ), "short", "The HPA-style recommendation (what KEDA or an HPA would act on) against what runs.",
                width=24),
        ]))
    rows.append(("Cost", [
        PanelSpec("GPU spend today against the daily budget", (
            _q(f'max by (pool, currency) ({COST_TODAY}{{pool=~"$pool"}})', "spent today {{pool}} ({{currency}})"),
            _q(f'max by (pool, currency) ({COST_BUDGET}{{pool=~"$pool"}})', "daily budget {{pool}} ({{currency}})"),
        ), "none", "What each pool's GPUs have cost since midnight UTC (replica-hours x GPUs x gpu_hour), and its "
                   "cost.daily_budget: CostBudgetWarning at 80%, CostBudgetExceeded at 100% (pools with a `cost` "
                   "only).", expect_data=False, min=0),
        PanelSpec("GPU cost per hour", (
            _q(f'max by (pool, currency) ({NS}_pool_cost_per_hour{{pool=~"$pool"}})', "{{pool}} ({{currency}})"),
        ), "none", "What the pool's GPUs cost per hour now (gpu_hour x GPUs of every member).", expect_data=False,
            min=0),
    ]))
    spec.rows = rows
    return spec


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


__all__ = ["DashboardSpec", "PanelSpec", "Query", "Variable", "build", "dashboard_specs", "render", "to_dict"]
