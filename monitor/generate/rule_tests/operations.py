"""The promtool test files of the fleet rules (vLLM targets and metrics) and of the rules on
slo-monitor's own decisions and health: whole worlds where everything is wrong or fine."""

from __future__ import annotations

from typing import Any, Sequence

import monitor.generate.expressions as q
from monitor.generate.rule_tests.inputs import MODEL
from monitor.generate.rule_tests.series import expected_alert, labels_text, series_values
from monitor.generate.rules_service import (
    COST_BUDGET,
    COST_EXCEEDED_ALERT,
    COST_TODAY,
    COST_WARNING_ALERT,
    LAST_CYCLE_SUCCESS,
    NS,
    ServiceAlert,
)

STEP_MIN = 1  # samples and evaluations a minute apart (no `sum_over_time` in these rules)


def fleet_test_file(pools: Sequence[str], groups: list[dict[str, Any]], rules_file: str) -> dict[str, Any]:
    target_down = next(r for r in groups[0]["rules"] if r["alert"] == "VllmTargetDown")
    absent = [r for r in groups[0]["rules"] if r["alert"] == "VllmMetricsAbsent"]
    pool = pools[0]
    down = {"pool": pool, "instance": "vllm-0:8000", "job": q.VLLM_JOB}
    minutes = 20
    present = [{"series": labels_text(q.RUNNING, {"pool": p, "instance": "vllm-0:8000", "job": q.VLLM_JOB,
                                                  "engine": "0", "model_name": MODEL}),
                "values": series_values([1.0] * (minutes + 1))} for p in pools]

    def absent_alerts() -> list[dict[str, Any]]:
        return [expected_alert(r, {"pool": next(p for p in pools if f'pool="{p}"' in r["expr"])})
                for r in absent]

    return {"rule_files": [rules_file], "evaluation_interval": f"{STEP_MIN}m", "tests": [
        {"name": "a target down and no vLLM metrics anywhere: both fire (after their for:)",
         "interval": f"{STEP_MIN}m",
         "input_series": [{"series": labels_text("up", down), "values": series_values([0.0] * (minutes + 1))}],
         "alert_rule_test": [
             {"eval_time": "3m", "alertname": "VllmTargetDown", "exp_alerts": []},
             {"eval_time": f"{minutes}m", "alertname": "VllmTargetDown",
              "exp_alerts": [expected_alert(target_down, down)]},
             {"eval_time": f"{minutes}m", "alertname": "VllmMetricsAbsent", "exp_alerts": absent_alerts()},
         ]},
        {"name": "every target up with metrics: both stay quiet", "interval": f"{STEP_MIN}m",
         "input_series": [{"series": labels_text("up", down), "values": series_values([1.0] * (minutes + 1))},
                          *present],
         "alert_rule_test": [
             {"eval_time": f"{minutes}m", "alertname": "VllmTargetDown", "exp_alerts": []},
             {"eval_time": f"{minutes}m", "alertname": "VllmMetricsAbsent", "exp_alerts": []},
         ]},
    ]}


def service_test_file(alerts: list[ServiceAlert], groups: list[dict[str, Any]], rules_file: str,
                      replica_metrics: tuple[str, str] | None) -> dict[str, Any]:
    """Three worlds: everything wrong (all fire but the absent alert), everything fine (nothing
    fires), and the service not scraped at all (only the absent alert fires)."""
    by_name = {r["alert"]: r for r in groups[0]["rules"]}
    minutes = 30
    job = {"job": q.SERVICE_JOB, "instance": "monitor:9470"}
    pool = "pool-a"

    def flat(value: float) -> str:
        return series_values([value] * (minutes + 1))

    def inst(name: str) -> dict[str, str]:
        return {"job": q.SERVICE_JOB, "pool": pool, "instance": name}

    states = {"a:8000": "ejected", "b:8000": "unknown", "c:8000": "degraded"}

    def world(bad: bool) -> list[dict[str, str]]:
        series = [{"series": labels_text("up", job), "values": flat(0.0 if bad else 1.0)}]
        for name, state in states.items():
            for s in ("healthy", "degraded", "ejected", "unknown"):
                active = s == (state if bad else "healthy")
                series.append({"series": labels_text(f"{NS}_instance_state", {**inst(name), "state": s}),
                               "values": flat(1.0 if active else 0.0)})
            failing = bad and state == "unknown"
            series.append({"series": labels_text(f"{NS}_scrape_consecutive_failures", inst(name)),
                           "values": flat(5.0 if failing else 0.0)})
        errors = [float(t) if bad else 0.0 for t in range(minutes + 1)]
        series.append({"series": labels_text(f"{NS}_slo_evaluation_errors_total", job),
                       "values": series_values(errors)})
        series.append({"series": labels_text(f"{NS}_alertmanager_up", job), "values": flat(0.0 if bad else 1.0)})
        series.append({"series": labels_text(f"{NS}_storage_up", job), "values": flat(0.0 if bad else 1.0)})
        series.append({"series": labels_text(f"{NS}_pool_fail_open", {**job, "pool": pool}),
                       "values": flat(1.0 if bad else 0.0)})
        series.append({"series": labels_text(f"{NS}_decision_errors_total", job),
                       "values": series_values([float(t) if bad else 0.0 for t in range(minutes + 1)])})
        series.append({"series": labels_text(f"{NS}_nginx_last_apply_ok", job), "values": flat(0.0 if bad else 1.0)})
        # the loop's heartbeat: stuck at 0 (never moved since the start), or the time of each evaluation
        series.append({"series": labels_text(LAST_CYCLE_SUCCESS, job),
                       "values": series_values([0.0 if bad else 60.0 * t for t in range(minutes + 1)])})
        # today's spend: 120 of a 100 budget (both cost alerts), or 10 of it
        money = {**job, "pool": pool, "currency": "USD"}
        series.append({"series": labels_text(COST_TODAY, money), "values": flat(120.0 if bad else 10.0)})
        series.append({"series": labels_text(COST_BUDGET, money), "values": flat(100.0)})
        if replica_metrics:
            desired, current = replica_metrics
            series.append({"series": labels_text(desired, {**job, "pool": pool}), "values": flat(4.0 if bad else 2.0)})
            series.append({"series": labels_text(current, {**job, "pool": pool}), "values": flat(2.0)})
        return series

    def fired(name: str) -> list[dict[str, Any]]:
        rule = by_name[name]
        if name == "SloMonitorDown":
            return [expected_alert(rule, job)]
        if name == "SloMonitorAbsent":
            return [expected_alert(rule, {"job": q.SERVICE_JOB})]
        if name in ("SloMonitorInstanceEjected", "SloMonitorInstanceDegraded"):
            state = "ejected" if name.endswith("Ejected") else "degraded"
            who = next(n for n, s in states.items() if s == state)
            return [expected_alert(rule, {**inst(who), "state": state})]
        if name == "SloMonitorPoolCapacityLow":
            return [expected_alert(rule, {"pool": pool})]
        if name == "SloMonitorScrapeFailing":
            return [expected_alert(rule, inst("b:8000"))]
        if name in (COST_WARNING_ALERT, COST_EXCEEDED_ALERT):
            return [expected_alert(rule, {"pool": pool})]
        if name in ("SloMonitorScaleUpPending", "SloMonitorFailingOpen"):
            return [expected_alert(rule, {**job, "pool": pool})]
        return [expected_alert(rule, job)]

    at = f"{minutes}m"
    names = [a.name for a in alerts]
    # between the two cost thresholds: 85 of 100 spent, only the warning
    between = [{"series": labels_text(COST_TODAY, {**job, "pool": pool, "currency": "USD"}), "values": flat(85.0)},
               {"series": labels_text(COST_BUDGET, {**job, "pool": pool, "currency": "USD"}), "values": flat(100.0)}]
    return {"rule_files": [rules_file], "evaluation_interval": f"{STEP_MIN}m", "tests": [
        {"name": "85% of today's budget spent: the cost warning fires, not the page", "interval": f"{STEP_MIN}m",
         "input_series": between,
         "alert_rule_test": [{"eval_time": at, "alertname": COST_WARNING_ALERT, "exp_alerts": fired(COST_WARNING_ALERT)},
                             {"eval_time": at, "alertname": COST_EXCEEDED_ALERT, "exp_alerts": []}]},
        {"name": "everything wrong for 30m: every decision alert fires", "interval": f"{STEP_MIN}m",
         "input_series": world(True),
         "alert_rule_test": [{"eval_time": at, "alertname": n,
                              "exp_alerts": [] if n == "SloMonitorAbsent" else fired(n)} for n in names]},
        {"name": "everything fine for 30m: nothing fires", "interval": f"{STEP_MIN}m",
         "input_series": world(False),
         "alert_rule_test": [{"eval_time": at, "alertname": n, "exp_alerts": []} for n in names]},
        {"name": "slo-monitor not scraped at all: only the absent alert fires", "interval": f"{STEP_MIN}m",
         "input_series": [{"series": labels_text("up", {"job": "other", "instance": "x:1"}), "values": flat(1.0)}],
         "alert_rule_test": [{"eval_time": at, "alertname": n,
                              "exp_alerts": fired(n) if n == "SloMonitorAbsent" else []} for n in names]},
    ]}


__all__ = ["fleet_test_file", "service_test_file"]
