"""/metrics: every derived per-instance figure as Prometheus series.

A custom collector reads the fleet view at scrape time instead of keeping Gauge children in step with
it, so an instance removed from the config disappears from /metrics without any bookkeeping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from monitor.decide.verdicts import STATES, UNKNOWN
from monitor.evaluate.fleet import InstanceView
from monitor.evaluate.slo import WINDOW_NAMES
from monitor.gpu.publish import GpuMetricsCollector
from monitor.otlp.publish import TraceMetricsCollector
from monitor.publish.budgets import BudgetCollector
from monitor.publish.canaries import CanaryCollector
from monitor.publish.cost import CostCollector
from monitor.publish.state import NAMESPACE, MonitorState
from monitor.samples import BAD_SAMPLE_KINDS

# figure key -> (metric name, help, quantile label or None)
QUANTILE_FIGURES = {
    "ttft": ("instance_ttft_seconds", "Time to first token over the evaluation window, by quantile."),
    "tpot": ("instance_tpot_seconds", "Time per output token over the evaluation window, by quantile: per request "
                                      "where vLLM has vllm:request_time_per_output_token_seconds (0.11+), else "
                                      "per token."),
    "e2e": ("instance_e2e_latency_seconds", "End-to-end request latency over the evaluation window, by quantile."),
    "itl": ("instance_itl_seconds", "Inter-token latency (one observation per output event, which carries several "
                                    "tokens with speculative decoding) over the evaluation window, by quantile."),
}
PLAIN_FIGURES = {
    "queue_p99_s": ("instance_queue_time_p99_seconds", "99th percentile of time spent waiting in the queue."),
    "error_ratio": ("instance_error_ratio", "Share of requests finished with an error or rejected at admission."),
    "kv_cache_usage": ("instance_kv_cache_usage_ratio", "KV-cache usage reported by vLLM (1 = full)."),
    "requests_running": ("instance_requests_running", "Requests in the running batch."),
    "requests_waiting": ("instance_requests_waiting", "Requests waiting to be scheduled."),
    "requests_per_s": ("instance_requests_per_second", "Finished requests per second."),
    "prompt_tokens_per_s": ("instance_prompt_tokens_per_second", "Prompt (prefill) tokens per second."),
    "generation_tokens_per_s": ("instance_generation_tokens_per_second", "Generated tokens per second."),
    "preemptions_per_s": ("instance_preemptions_per_second", "Preemptions per second."),
    "prefix_cache_hit_rate": ("instance_prefix_cache_hit_ratio", "Prefix-cache hits over queries (tokens)."),
    "requests_waiting_capacity": ("instance_requests_waiting_capacity",
                                  "Requests waiting for scheduling capacity (vllm:num_requests_waiting_by_reason "
                                  "reason=capacity): the queue more replicas shorten."),
    "spec_decode_acceptance_rate": ("instance_spec_decode_acceptance_ratio",
                                    "Speculative decoding: accepted over draft tokens in the window."),
    "spec_decode_mean_acceptance_length": ("instance_spec_decode_mean_acceptance_length",
                                           "Speculative decoding: tokens emitted per draft step "
                                           "(1 + accepted tokens / drafts) in the window."),
    "kv_capacity_tokens": ("instance_kv_capacity_tokens",
                           "KV-cache capacity in tokens (num_gpu_blocks x block_size of vllm:cache_config_info)."),
    "prefill_kv_computed_tokens_per_request": ("instance_prefill_kv_computed_tokens_per_request",
                                               "Prompt tokens really computed (not served from a cache) per "
                                               "finished request in the window."),
}
# the per-instance families that are not figures: (metric name, help)
UP = ("instance_up", "1 when the last scrape of the instance succeeded.")
STATE = ("instance_state", "Current state of the instance (1 for the active one).")
DURATION = ("scrape_duration_seconds", "Duration of the last scrape.")
AGE = ("last_scrape_age_seconds", "Seconds since the last successful scrape.")
FAILURES = ("scrape_consecutive_failures", "Consecutive failed scrapes of the instance.")
BAD = ("bad_samples", "Series of the instance's pages that were not used (since it joined): NaN or +-Inf in a series "
       "the monitor judges by, or a series repeated with another value (the first kept); the instance's reasons "
       "name them.")
REJECTIONS = ("instance_admission_rejections_per_second", "Requests refused before queueing "
              "(vllm:admission_rejections_total), per second, by reason.")
# the stages of a cycle (monitor/service/stages.py), each exported from the start at 0 so that
# increase() sees the first failure
STAGES = ("cycle", "discovery", "membership", "scrape", "gpu", "ingest", "slo", "alerts", "signals", "decide",
          "events", "persist", "outputs")
# admission rejections per second, one series per vLLM `reason` (figure admission_rejections_{reason}_per_s)
REJECTION_REASONS = ("max_num_queued_reqs", "max_num_queued_tokens", "other")


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """What /metrics shows of one instance, copied off the live fleet."""

    view: InstanceView
    state: str
    up: bool
    last_success_at: float | None
    consecutive_failures: int


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    at: float
    rows: tuple[InstanceRow, ...]
    targets: int
    cycle_duration_s: float | None
    cycles: int
    storage: tuple[int, int, bool] | None  # pending rows, dropped rows, up


class FleetCollector(Collector):
    """Per-instance series. `snapshot()` copies what they need on the event loop (cheap: the figures
    are computed once per cycle); `families()` builds the 16,000 samples of a 1,000-instance fleet
    from that copy alone, so /metrics can do it in a worker thread (0.27 s on the loop otherwise)."""

    def __init__(self, service: MonitorState) -> None:
        self.service = service

    def collect(self) -> Iterator:
        return iter(self.families(self.snapshot()))

    def snapshot(self) -> FleetSnapshot:
        service, fleet = self.service, self.service.fleet
        rows = []
        for view in fleet.views(service.figures_at()):
            track = fleet.tracks[view.instance]
            verdict = service.decisions.verdict(view.pool, view.instance)
            rows.append(InstanceRow(view, verdict.state if verdict else UNKNOWN, track.last is not None and track.last.ok,
                                    track.last_success_at, track.consecutive_failures))
        store = service.store
        return FleetSnapshot(time.time(), tuple(rows), len(fleet.tracks), fleet.last_cycle_duration_s, service.cycles,
                             None if store is None else (store.pending, store.dropped, not store.last_error))

    @staticmethod
    def families(snap: FleetSnapshot) -> list:
        return FleetCollector.instance_families(snap) + FleetCollector.totals(snap)

    @staticmethod
    def instance_families(snap: FleetSnapshot) -> list:
        """The families with a series per instance (monitor/publish/fleet_text.py writes the same text
        faster: this is its reference)."""
        labels = ["pool", "instance", "model_name"]
        quantiles = {k: GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, labels=labels + ["quantile"])
                     for k, (name, doc) in QUANTILE_FIGURES.items()}
        plain = {k: GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, labels=labels)
                 for k, (name, doc) in PLAIN_FIGURES.items()}
        rejections = GaugeMetricFamily(f"{NAMESPACE}_{REJECTIONS[0]}", REJECTIONS[1], labels=labels + ["reason"])
        up, duration, age, failures = (GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, labels=["pool", "instance"])
                                       for name, doc in (UP, DURATION, AGE, FAILURES))
        state = GaugeMetricFamily(f"{NAMESPACE}_{STATE[0]}", STATE[1], labels=["pool", "instance", "state"])
        bad = CounterMetricFamily(f"{NAMESPACE}_{BAD[0]}", BAD[1], labels=["pool", "instance"])
        for row in snap.rows:
            view = row.view
            who = [view.pool, view.instance]
            up.add_metric(who, 1.0 if row.up else 0.0)
            for s in STATES:
                state.add_metric(who + [s], 1.0 if row.state == s else 0.0)
            if view.scrape_duration_s is not None:
                duration.add_metric(who, view.scrape_duration_s)
            if row.last_success_at is not None:
                age.add_metric(who, max(0.0, snap.at - row.last_success_at))
            failures.add_metric(who, float(row.consecutive_failures))
            bad.add_metric(who, float(sum(view.bad_samples_total.get(kind, 0) for kind in BAD_SAMPLE_KINDS)))
            for model, figures in view.models.items():
                series = who + [model]
                for key, family in quantiles.items():
                    for q in ("p50", "p90", "p99"):
                        value = figures.get(f"{key}_{q}_s")
                        if value is not None:
                            family.add_metric(series + ["0." + q[1:]], value)
                for key, family in plain.items():
                    value = figures.get(key)
                    if value is not None:
                        family.add_metric(series, value)
                for reason in REJECTION_REASONS:
                    value = figures.get(f"admission_rejections_{reason}_per_s")
                    if value is not None:
                        rejections.add_metric(series + [reason], value)
        return [up, state, duration, age, failures, bad, *quantiles.values(), *plain.values(), rejections]

    @staticmethod
    def totals(snap: FleetSnapshot) -> list:
        """The fleet's own series: targets, cycles, storage."""
        out: list[Metric] = [GaugeMetricFamily(f"{NAMESPACE}_targets", "Configured scrape targets.", value=snap.targets)]
        if snap.cycle_duration_s is not None:
            out.append(GaugeMetricFamily(f"{NAMESPACE}_scrape_cycle_duration_seconds",
                                         "Wall time of the last full scrape cycle.", value=snap.cycle_duration_s))
        out.append(CounterMetricFamily(f"{NAMESPACE}_scrape_cycles", "Scrape cycles run.", value=snap.cycles))
        if snap.storage is not None:
            pending, dropped, storage_up = snap.storage
            out.append(GaugeMetricFamily(f"{NAMESPACE}_storage_pending_rows",
                                         "Rows waiting to be written to the database.", value=pending))
            out.append(CounterMetricFamily(f"{NAMESPACE}_storage_dropped_rows",
                                           "Rows dropped because the write buffer was full.", value=dropped))
            out.append(GaugeMetricFamily(f"{NAMESPACE}_storage_up", "0 while database writes are failing.",
                                         value=1.0 if storage_up else 0.0))
        return out


class DecisionCollector(Collector):
    """Health weights, scaling recommendations (for KEDA's prometheus scaler / an HPA external
    metric) and the NGINX writer's state."""

    def __init__(self, service: MonitorState) -> None:
        self.service = service

    def collect(self) -> Iterator:
        service = self.service
        weight = GaugeMetricFamily(f"{NAMESPACE}_instance_weight_ratio",
                                   "Share of a healthy server's traffic the instance should get (0 when ejected).",
                                   labels=["pool", "instance"])
        ejected_until = GaugeMetricFamily(f"{NAMESPACE}_instance_ejected_until_timestamp_seconds",
                                          "When the current ejection may end (Unix time).", labels=["pool", "instance"])
        for pool in service.config.pools:
            for verdict in service.decisions.pool_verdicts(pool.name):
                weight.add_metric([pool.name, verdict.instance], verdict.weight)
                if verdict.ejected_until is not None:
                    ejected_until.add_metric([pool.name, verdict.instance], verdict.ejected_until)
        yield weight
        yield ejected_until
        desired = GaugeMetricFamily(f"{NAMESPACE}_pool_desired_replicas",
                                    "Recommended replicas for the pool (HPA formula with stabilisation).",
                                    labels=["pool"])
        current = GaugeMetricFamily(f"{NAMESPACE}_pool_current_replicas",
                                    "Current members of the pool (not leaving): what the recommendation started from.",
                                    labels=["pool"])
        for pool in service.config.pools:
            decision = service.decisions.recommendation(pool.name)
            if decision is not None:
                desired.add_metric([pool.name], decision.desired_replicas)
                current.add_metric([pool.name], decision.current_replicas)
        yield desired
        yield current
        fail_open = GaugeMetricFamily(f"{NAMESPACE}_pool_fail_open",
                                      "1 while the pool's health decisions are failing open (nothing newly ejected).",
                                      labels=["pool"])
        for pool in service.config.pools:
            fail_open.add_metric([pool.name], 1.0 if service.fail_open.get(pool.name) else 0.0)
        yield fail_open
        yield CounterMetricFamily(f"{NAMESPACE}_decision_errors", "Scrape cycles whose decision step failed.",
                                  value=service.decide_errors)
        stage_errors = CounterMetricFamily(f"{NAMESPACE}_stage_errors", "Failures contained inside the scrape "
                                           "cycle, by stage (each failing target, pool or stage counts once per "
                                           "cycle; /healthz names what fails now).", labels=["stage"])
        counts = service.stages.errors
        for stage in sorted(set(STAGES) | set(counts)):
            stage_errors.add_metric([stage], counts.get(stage, 0))
        yield stage_errors
        yield GaugeMetricFamily(f"{NAMESPACE}_last_cycle_success_timestamp_seconds",
                                "Unix time of the last scrape cycle that collected data and decided (0 before "
                                "the first): SLOMonitorStalled fires when it stops moving.",
                                value=service.last_cycle_success_at or 0.0)
        yield GaugeMetricFamily(f"{NAMESPACE}_leader", "1 while this replica leads (writes NGINX, pages Alertmanager, "
                                                       "writes history); always 1 without ha.",
                                value=1.0 if service.is_leader() else 0.0)
        lease = service.leadership
        if lease is not None:
            yield GaugeMetricFamily(f"{NAMESPACE}_leader_term", "Term of the leader lease as last read "
                                                                "(goes up at every change of leader).", value=lease.term)
            yield CounterMetricFamily(f"{NAMESPACE}_leader_elections", "Times this replica became the leader.",
                                      value=lease.elections)
            yield CounterMetricFamily(f"{NAMESPACE}_leader_lease_errors", "Lease renewals that failed.",
                                      value=lease.errors)
        yield from _discovery_and_reload(service)
        if service.nginx is not None:
            last = service.nginx.last_result
            yield GaugeMetricFamily(f"{NAMESPACE}_nginx_last_apply_ok",
                                    "1 when the last upstream write/validate/reload succeeded.",
                                    value=1.0 if last is None or last.ok else 0.0)


def _discovery_and_reload(service: MonitorState) -> Iterator:
    """Per discovery source: targets in use, failed refreshes, last success; and the config reload
    outcome under Prometheus's own names."""
    labels = ["pool", "source", "index"]
    targets = GaugeMetricFamily(f"{NAMESPACE}_discovery_targets", "Targets a discovery source lists now "
                                "(its last good list while it fails).", labels=labels)
    failures = CounterMetricFamily(f"{NAMESPACE}_discovery_failures", "Refreshes of a discovery source that "
                                   "failed (the last good list was kept).", labels=labels)
    up = GaugeMetricFamily(f"{NAMESPACE}_discovery_up", "0 while a discovery source's last refresh failed.",
                           labels=labels)
    success = GaugeMetricFamily(f"{NAMESPACE}_discovery_last_success_timestamp_seconds",
                                "Unix time of a discovery source's last successful refresh.", labels=labels)
    rejected = CounterMetricFamily(f"{NAMESPACE}_discovery_rejected_targets", "Targets a discovery source's "
                                   "answers listed and that were dropped (outside the target grammar, or listed "
                                   "twice), by reason; counted each time an answer is read.",
                                   labels=["pool", "source", "reason"])
    dropped: dict[tuple[str, str, str], int] = {}
    for status in service.discovery_statuses:
        who = [status.pool, status.kind, str(status.index)]
        targets.add_metric(who, status.targets)
        failures.add_metric(who, status.failures)
        up.add_metric(who, 1.0 if status.healthy else 0.0)
        if status.last_success is not None:
            success.add_metric(who, status.last_success)
        for reason, count in getattr(status, "rejected", {}).items():  # summed over a pool's sources of a kind
            dropped[(status.pool, status.kind, reason)] = dropped.get((status.pool, status.kind, reason), 0) + count
    for key, count in sorted(dropped.items()):
        rejected.add_metric(list(key), count)
    yield from (targets, failures, up, success, rejected)
    reload = service.reload_status
    yield GaugeMetricFamily(f"{NAMESPACE}_config_last_reload_successful",
                            "1 when the last configuration reload (or the start) succeeded.",
                            value=1.0 if reload.successful else 0.0)
    yield GaugeMetricFamily(f"{NAMESPACE}_config_last_reload_success_timestamp_seconds",
                            "Unix time of the last successful configuration load.", value=reload.success_at)


class SloCollector(Collector):
    """SLO series (labels slo, pool, model_name; model_name is "" for the whole pool) and
    Alertmanager delivery, from the last evaluation: the same numbers as /api/v1/slos."""

    def __init__(self, service: MonitorState) -> None:
        self.service = service

    def collect(self) -> Iterator:
        labels = ["slo", "pool", "model_name"]

        def gauge(name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{NAMESPACE}_slo_{name}", doc, labels=labels + list(extra))

        objective = gauge("objective_ratio", "Objective of the SLO (good events / valid events).")
        sli = gauge("sli_ratio", "Good / valid events over the SLO window so far (absent without events).")
        exact = gauge("sli_exact", "0 when the SLI is interpolated inside a histogram bucket, else 1.")
        good = gauge("good_events", "Good events over the SLO window.")
        valid = gauge("valid_events", "Valid (all) events over the SLO window.")
        coverage = gauge("coverage_ratio", "Share of the SLO window the figures stand on (from its first minute "
                                           "with events to now), 0-1; ErrorBudgetExhausted needs budget_min_coverage.")
        budget = gauge("error_budget_remaining_ratio",
                       "Share of the error budget left over the SLO window (1 = untouched; below 0 = overspent).")
        burn = gauge("burn_rate", "Error ratio over the window divided by the error budget (absent without events).",
                     ("window",))
        alert = gauge("alert", "1 while burn-rate alerts of this severity fire (page: 1h/5m or 6h/30m; "
                               "ticket: 1d/2h or 3d/6h).", ("severity",))
        for status in self.service.slo.statuses:
            ev = status.evaluation
            who = [status.key.slo, status.key.pool, status.key.model_name]
            objective.add_metric(who, ev.objective)
            if ev.sli is not None:
                sli.add_metric(who, ev.sli)
            exact.add_metric(who, 1.0 if ev.exact else 0.0)
            good.add_metric(who, ev.good)
            valid.add_metric(who, ev.total)
            coverage.add_metric(who, ev.coverage)
            budget.add_metric(who, ev.error_budget_remaining)
            for window in WINDOW_NAMES:
                rate = ev.burn_rates.get(window)
                if rate is not None:
                    burn.add_metric(who + [window], rate)
            fired = status.fired_severities()
            for severity in ("page", "ticket"):
                alert.add_metric(who + [severity], 1.0 if severity in fired else 0.0)
        yield from (objective, sli, exact, good, valid, coverage, budget, burn, alert)
        yield CounterMetricFamily(f"{NAMESPACE}_slo_evaluation_errors", "Scrape cycles whose SLO step failed.",
                                  value=self.service.slo_errors)
        notifier = self.service.notifier
        if notifier is None:
            return
        stats = notifier.stats
        prefix = f"{NAMESPACE}_alertmanager"
        yield GaugeMetricFamily(f"{prefix}_up", "0 while POSTs to Alertmanager are failing.",
                                value=0.0 if stats.consecutive_failures else 1.0)
        yield CounterMetricFamily(f"{prefix}_posts", "Successful POSTs to /api/v2/alerts.", value=stats.posts)
        yield CounterMetricFamily(f"{prefix}_errors", "Failed POSTs to /api/v2/alerts (each retry counts).",
                                  value=stats.errors)
        yield GaugeMetricFamily(f"{prefix}_consecutive_failures", "Failed POSTs since the last success.",
                                value=stats.consecutive_failures)
        yield GaugeMetricFamily(f"{prefix}_alerts_firing", "Alerts currently firing (sent or waiting to be).",
                                value=len(notifier.firing))
        if stats.last_success_at is not None:
            yield GaugeMetricFamily(f"{prefix}_last_success_timestamp_seconds",
                                    "Unix time of the last successful POST.", value=stats.last_success_at)


def make_registry(service: MonitorState, *, fleet: bool = True) -> CollectorRegistry:
    """Every series of /metrics; `fleet=False` leaves the per-instance ones out (the API serves
    those through `FleetCollector.snapshot` and `families`, see api.py)."""
    registry = CollectorRegistry(auto_describe=False)
    if fleet:
        registry.register(FleetCollector(service))
    registry.register(DecisionCollector(service))
    registry.register(GpuMetricsCollector(service.gpus))
    registry.register(TraceMetricsCollector(service.traces, service.config.slos,
                                            window_s=service.config.traces.goodput_window, receiver=service.receiver))
    registry.register(SloCollector(service))
    registry.register(CostCollector(service))
    registry.register(BudgetCollector(service))  # exclusions, absent SLI series, exhausted budgets, spend today
    registry.register(CanaryCollector(service))  # slo_monitor_canary_verdict, slo_monitor_canary_regression
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class Collected:
    """Metric families already read from the registry, for `generate_latest` to format elsewhere
    (a worker thread) while the event loop goes on changing the live figures."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self) -> Iterator:
        return iter(self.families)
