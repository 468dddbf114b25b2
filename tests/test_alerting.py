"""Complete alerting on plain data, simulated clocks, no sleeping: the SLI's series going absent,
an exhausted budget, window sets as data, per-SLO labels and annotations, maintenance windows
(exclusions) in the arithmetic, and the daily cost budget. The same alerts against a real Prometheus
and Alertmanager are in tests/test_alerting_e2e.py."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from monitor.collect.vllm import parse_page
from monitor.config import ConfigError, validate
from monitor.evaluate.slo import (
    DAY,
    PAIRS,
    EventSeries,
    Exclusion,
    SpendMeter,
    WINDOWS,
    budget_statuses,
    burn_factors,
    evaluate_counts,
    indicator_present,
    minute_ranges,
    slo_pairs,
    slo_windows,
)
from monitor.evaluate.slo.exclusions import weekly_occurrences
from monitor.evaluate.slo.engine import SPEND_ROW, SloEngine, SloStatus
from monitor.evaluate.slo.track import SloKey
from monitor.publish.alertmanager import wanted_alerts
from monitor.service.wiring import slo_engine
from monitor.settings import LatencyIndicator, SaturationIndicator

from tests.helpers.slo_scrapes import T0, Server, config, result

ERRORS = {"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99%"}
KV = {"name": "kv", "indicator": {"type": "saturation", "threshold": "90%"}, "objective": "99%", "absent_for": "30s"}


def status(engine: SloEngine, slo: str, pool: str = "llama") -> SloStatus:
    return next(s for s in engine.statuses if s.key == SloKey(slo, pool))


def renamed(server: Server):
    """The server's sample with its KV-cache gauge under a name the reader does not know (gone)."""
    sample = server.sample()
    return dataclasses.replace(sample, gauges={k: v for k, v in sample.gauges.items() if k != "kv_cache_usage"})


def scrape(t: float, *samples, pool: str = "llama", instance: str = "10.0.0.1:8000", error: str | None = None):
    base = result(pool, instance, t, error=error)
    return dataclasses.replace(base, models=() if error else tuple(samples))


# --- SLOMetricAbsent -----------------------------------------------------------------------------


def test_a_renamed_sli_metric_is_absent_after_absent_for_while_the_instances_answer():
    engine = slo_engine(config(KV, ERRORS))
    server = Server()
    for k in range(3):  # present at T0, T0+5, T0+10
        engine.observe([scrape(T0 + 5 * k, server.sample())])
    for k in range(3, 12):  # renamed from T0+15 on; the instance answers every time
        engine.observe([scrape(T0 + 5 * k, renamed(server))])
        engine.evaluate(T0 + 5 * k)
        kv = status(engine, "kv")
        assert kv.metric_last_seen == T0 + 10
        assert kv.absent is (5 * k - 10 >= 30), k  # absent_for after it was last seen, not before
    assert not status(engine, "errors").absent  # its own series (finished requests) are still there
    wanted = [labels for labels, _ in wanted_alerts(engine.statuses)]
    assert {"alertname": "SLOMetricAbsent", "slo": "kv", "pool": "llama", "severity": "page"} in wanted
    # back under a known name: clears at the next evaluation
    engine.observe([scrape(T0 + 60, server.sample())])
    engine.evaluate(T0 + 60)
    assert not status(engine, "kv").absent


def test_an_sli_metric_absent_while_every_instance_is_down_is_the_target_alerts_business():
    engine = slo_engine(config(KV))
    engine.observe([scrape(T0, Server().sample())])
    for k in range(1, 20):
        engine.observe([scrape(T0 + 5 * k, error="connection refused")])
    engine.evaluate(T0 + 95)
    assert not status(engine, "kv").absent
    engine.observe([scrape(T0 + 100, renamed(Server()))])  # up again, still renamed: it was gone 100 s
    engine.evaluate(T0 + 100)
    assert status(engine, "kv").absent


def test_a_metric_never_seen_is_absent_after_absent_for_from_the_first_good_scrape():
    engine = slo_engine(config(KV))
    engine.observe([scrape(T0, renamed(Server()))])
    engine.evaluate(T0 + 29)
    assert not status(engine, "kv").absent and status(engine, "kv").metric_last_seen is None
    engine.observe([scrape(T0 + 30, renamed(Server()))])
    engine.evaluate(T0 + 30)
    assert status(engine, "kv").absent


def test_every_spelling_a_vllm_release_used_counts_as_present():
    """V0's gpu_cache_usage_perc and time_per_output_token_seconds are the same keys as V1's names:
    switching a server between versions is no absence."""
    v0 = ("# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{model_name=\"m\"} 0.2\n"
          "# TYPE vllm:time_per_output_token_seconds histogram\n"
          "vllm:time_per_output_token_seconds_bucket{le=\"0.05\",model_name=\"m\"} 1.0\n"
          "vllm:time_per_output_token_seconds_bucket{le=\"+Inf\",model_name=\"m\"} 1.0\n"
          "vllm:time_per_output_token_seconds_count{model_name=\"m\"} 1.0\n"
          "vllm:time_per_output_token_seconds_sum{model_name=\"m\"} 0.01\n")
    sample = parse_page(v0)[0]
    assert indicator_present(SaturationIndicator(type="saturation", threshold=0.9), sample)
    assert indicator_present(LatencyIndicator(type="latency", metric="tpot", threshold="50ms"), sample)
    assert not indicator_present(LatencyIndicator(type="latency", metric="ttft", threshold="500ms"), sample)


def test_availability_never_goes_absent():
    engine = slo_engine(config({"name": "up", "indicator": {"type": "availability"}, "objective": "99%",
                                "absent_for": "1s"}))
    engine.observe([scrape(T0, renamed(Server()))])
    engine.observe([scrape(T0 + 60, renamed(Server()))])
    engine.evaluate(T0 + 60)
    assert not status(engine, "up").absent


# --- ErrorBudgetExhausted ------------------------------------------------------------------------


def evaluation(good: float, total: float, objective: float = 0.99, min_bad: float = 5.0, min_events: float = 100.0):
    return evaluate_counts({w: (good, total) for w in WINDOWS}, (good, total), objective, min_bad_events=min_bad,
                           budget_min_events=min_events)


def test_the_budget_is_exhausted_once_nothing_is_left_from_enough_bad_events():
    assert not evaluation(991, 1000).exhausted  # 9 bad of a 10-event budget: 10% left
    assert evaluation(990, 1000).exhausted  # exactly spent: 0 left
    assert evaluation(900, 1000).exhausted  # overspent
    assert not evaluation(6, 10).exhausted  # 4 bad events: a 4,000% overspend, yet too few to tell
    assert evaluation(6, 10, min_bad=0, min_events=0).exhausted
    assert not evaluation(6, 10, min_bad=0).exhausted  # 10 valid events: under budget_min_events (100)
    assert not evaluation(0, 0).exhausted  # no traffic: nothing spent


def test_exhausted_is_a_ticket_carrying_the_slos_labels_and_annotations():
    cfg = config({**ERRORS, "labels": {"team": "serving", "severity": "critical"},
                  "annotations": {"runbook_url": "https://r.example/x", "dashboard": "https://g.example/d"}})
    slo = cfg.slos[0]
    st = SloStatus(SloKey("errors", "llama"), slo, evaluation(900, 1000), T0)
    alerts = {labels["alertname"]: (labels, notes) for labels, notes in wanted_alerts([st])}
    labels, notes = alerts["ErrorBudgetExhausted"]
    # the SLO's `severity` replaces ours, on every alert of the SLO
    assert labels == {"alertname": "ErrorBudgetExhausted", "slo": "errors", "pool": "llama", "severity": "critical",
                      "team": "serving"}
    assert notes["dashboard"] == "https://g.example/d" and notes["runbook_url"] == "https://r.example/x"
    assert "100 bad of 1000 events" in notes["description"]
    burn_labels = [labels for name, (labels, _) in alerts.items() if name == "SloErrorBudgetBurn"]
    assert burn_labels and all(b["team"] == "serving" and b["severity"] == "critical" for b in burn_labels)


# --- window sets ---------------------------------------------------------------------------------


def test_google_window_sets_are_data_with_the_workbooks_factors():
    thirty = config({**ERRORS, "window": "30d"}).slos[0]
    twenty_eight = config({**ERRORS, "window": "28d"}).slos[0]
    assert thirty.window_set == "google-30d" and twenty_eight.window_set == "google-28d"
    assert slo_pairs(thirty) == PAIRS
    assert burn_factors(thirty.window, slo_pairs(thirty)) == pytest.approx(
        {"1h/5m": 14.4, "6h/30m": 6.0, "1d/2h": 3.0, "3d/6h": 1.0})
    assert burn_factors(twenty_eight.window, slo_pairs(twenty_eight)) == pytest.approx(
        {"1h/5m": 13.44, "6h/30m": 5.6, "1d/2h": 2.8, "3d/6h": 0.9333333})


def test_a_window_set_from_a_file_or_inline_is_selectable_per_slo(tmp_path):
    sloth = tmp_path / "windows.yaml"
    sloth.write_text("""
apiVersion: sloth.slok.dev/v1
kind: AlertWindows
metadata: {name: quick-7d}
spec:
  sloPeriod: 7d
  page:
    quick: {errorBudgetPercent: 8, shortWindow: 5m, longWindow: 1h}
    slow: {errorBudgetPercent: 12.5, shortWindow: 30m, longWindow: 6h}
  ticket:
    quick: {errorBudgetPercent: 20, shortWindow: 2h, longWindow: 1d}
    slow: {errorBudgetPercent: 42, shortWindow: 6h, longWindow: 3d}
""")
    cfg = config({**ERRORS, "window": "7d", "alerting": {"windows": "quick-7d"}},
                 {**ERRORS, "name": "inline", "alerting": {"windows": "mine"}},
                 {**ERRORS, "name": "default"},
                 alerting={"window_sets_file": str(sloth), "default_windows": "google-28d",
                           "window_sets": {"mine": {"pairs": [{"severity": "ticket", "long": "2h", "short": "10m",
                                                               "budget_percent": 5}]}}})
    quick, inline, default = cfg.slos
    assert [(p.name, round(p.factor(quick.window), 4)) for p in slo_pairs(quick)] == \
        [("1h/5m", 13.44), ("6h/30m", 3.5), ("1d/2h", 1.4), ("3d/6h", 0.98)]
    assert [(p.severity, p.name) for p in slo_pairs(inline)] == [("ticket", "2h/10m")]
    assert default.window_set == "google-28d"
    engine = slo_engine(cfg)
    engine.evaluate(T0)
    assert set(status(engine, "inline").evaluation.factors) == {"2h/10m"}


def test_unknown_or_clashing_window_sets_are_named_by_key():
    with pytest.raises(ConfigError) as err:
        config({**ERRORS, "alerting": {"windows": "google-31d"}})
    assert "slos[0].alerting: windows: unknown window set 'google-31d'" in str(err.value)
    with pytest.raises(ConfigError) as err:
        config(ERRORS, alerting={"window_sets": {"google-30d": {"pairs": [
            {"severity": "page", "long": "1h", "short": "5m", "budget_percent": 2}]}}})
    assert "built-in window set's name" in str(err.value)
    with pytest.raises(ConfigError) as err:
        config(ERRORS, alerting={"window_sets_file": "/nonexistent/windows.yaml"})
    assert "alerting.window_sets_file: cannot read /nonexistent/windows.yaml" in str(err.value)


def test_an_slos_labels_may_not_replace_the_alerts_identity():
    with pytest.raises(ConfigError) as err:
        config({**ERRORS, "labels": {"pool": "other", "bad-name": "x"}})
    assert "slos[0].labels" in str(err.value) and "'pool' names the alert itself" in str(err.value)


# --- maintenance windows --------------------------------------------------------------------------


def test_excluded_minutes_count_neither_good_nor_bad_in_any_window():
    series = EventSeries(retention=DAY)
    for m in range(60):
        bad = 10 if 20 <= m < 30 else 0
        series.add(T0 + 60 * m + 30, 100 - bad, 100)
    now = T0 + 3600
    assert series.window(now, 3600) == (5900.0, 6000.0)
    excluded = [(T0 // 60 + 20, T0 // 60 + 30)]
    assert series.window(now, 3600, excluded) == (5000.0, 5000.0)
    # a window starting inside the excluded range, cut pro rata at its start, loses those minutes too
    assert series.window(now, 35 * 60 + 30, excluded) == (3000.0, 3000.0)
    # without: half of minute 24 (45 of 50 good), minutes 25-29 (450 of 500), 30-59 (3000 of 3000)
    assert series.window(now, 35 * 60 + 30) == (3495.0, 3550.0)


def test_weekly_windows_follow_the_wall_clock_of_their_time_zone():
    # 2026-03-28 and 2026-04-04 are Saturdays; Europe/Berlin moves to summer time on 2026-03-29
    since = datetime(2026, 3, 25, tzinfo=timezone.utc).timestamp()
    until = datetime(2026, 4, 8, tzinfo=timezone.utc).timestamp()
    found = weekly_occurrences(["sat"], "02:00", 7200.0, "Europe/Berlin", since, until)
    starts = [datetime.fromtimestamp(a, timezone.utc).isoformat() for a, _ in found]
    assert starts == ["2026-03-28T01:00:00+00:00", "2026-04-04T00:00:00+00:00"]
    assert all(b - a == 7200.0 for a, b in found)


def test_an_outage_inside_a_maintenance_window_leaves_the_budget_untouched():
    start = datetime.fromtimestamp(T0 + 600, timezone.utc).isoformat()
    end = datetime.fromtimestamp(T0 + 1200, timezone.utc).isoformat()
    # 30 minutes of a 30-day window: the control's budget may be called exhausted on so little only
    # with the coverage gate off (`budget_min_coverage: 0`)
    judged = {**ERRORS, "budget_min_coverage": 0}
    cfg = config({**judged, "exclusions": [{"start": start, "end": end, "reason": "db migration"}]},
                 {**judged, "name": "control"})
    engine = slo_engine(cfg)
    server = Server()
    control_alerts = set()
    for k in range(0, 361):  # 30 minutes, 5 s apart; 100% errors from minute 12 to 16
        t = T0 + 5 * k
        server.requests(10, "error" if 720 <= t - T0 < 960 else "stop")
        engine.observe([scrape(t, server.sample())])
        engine.evaluate(t)
        excused, control = status(engine, "errors"), status(engine, "control")
        assert excused.excluded is (600 <= t - T0 < 1200)
        assert excused.evaluation.alert == "none" and not excused.exhausted
        control_alerts.add(control.evaluation.alert)
    assert "page" in control_alerts  # the same outage, not excused, pages
    ev = status(engine, "errors").evaluation
    assert ev.error_budget_remaining == 1.0 and ev.bad == 0.0
    assert ev.error_budget_remaining_unexcluded < 0  # the outage overspent it, had it counted
    assert status(engine, "control").evaluation.error_budget_remaining == pytest.approx(
        ev.error_budget_remaining_unexcluded)
    assert [labels["slo"] for labels, _ in wanted_alerts(engine.statuses)] == ["control"] * 3  # page, ticket, exhausted


def test_posted_windows_apply_to_their_slo_and_pool_and_end_when_ended():
    cfg = config(ERRORS, {**ERRORS, "name": "other"}, pools=[{"name": "llama", "targets": ["http://10.0.0.1:8000"]},
                                                            {"name": "mixtral", "targets": ["http://10.0.0.2:8000"]}])
    engine = slo_engine(cfg)
    engine.set_exclusions([Exclusion(1, T0, T0 + 3600, "upgrade", slo="errors", pool="llama"),
                           Exclusion(2, T0, T0 + 3600, "power", pool="mixtral", ended_at=T0 + 60),
                           Exclusion(3, T0, T0 + 3600, "cancelled", removed_at=T0 - 10)])
    engine.evaluate(T0 + 30)
    assert {(s.key.slo, s.key.pool) for s in engine.statuses if s.excluded} == \
        {("errors", "llama"), ("errors", "mixtral"), ("other", "mixtral")}
    assert status(engine, "errors").exclusions[0].reason == "upgrade"
    engine.evaluate(T0 + 90)
    assert {(s.key.slo, s.key.pool) for s in engine.statuses if s.excluded} == {("errors", "llama")}
    windows = slo_windows(cfg.slos[0], "mixtral", engine.adhoc_exclusions, T0 - DAY, T0 + DAY)
    assert minute_ranges(windows) == [(T0 // 60, T0 // 60 + 1)]  # ended after 60 s: one minute


# --- cost budgets ---------------------------------------------------------------------------------

COST = {"name": "llama", "targets": ["http://10.0.0.1:8000", "http://10.0.0.2:8000"],
        "cost": {"gpu_hour": 2.0, "gpus_per_instance": 4, "daily_budget": 100.0, "currency": "EUR"}}


def cycles(engine: SloEngine, start: float, seconds: float, replicas: int = 2, every: float = 5.0) -> float:
    t = start
    while t <= start + seconds:
        engine.observe([scrape(t, Server().sample(), instance=f"10.0.0.{i + 1}:8000") for i in range(replicas)])
        t += every
    return t - every


def test_spend_today_is_replica_hours_times_gpus_times_the_price_and_alerts_at_80_and_100_percent():
    engine = slo_engine(config(ERRORS, pools=[COST]))
    midnight = (T0 // DAY + 1) * DAY  # the next midnight UTC
    last = cycles(engine, midnight, 3600)  # 2 replicas x 1 h x 4 GPUs x 2.00 = 16
    engine.evaluate(last)
    [budget] = engine.cost_budgets
    assert budget.spend_today == pytest.approx(16.0) and budget.currency == "EUR"
    assert not budget.warning
    last = cycles(engine, last + 5, 4 * 3600 - 5)  # 80 by now
    engine.evaluate(last + 1)
    assert engine.cost_budgets[0].ratio == pytest.approx(0.8, abs=1e-3)
    assert [labels for labels, _ in wanted_alerts([], engine.cost_budgets)] == [
        {"alertname": "CostBudgetWarning", "pool": "llama", "severity": "ticket"}]
    last = cycles(engine, last + 5, 3600 * 1.25)
    engine.evaluate(last)
    names = [labels["alertname"] for labels, _ in wanted_alerts([], engine.cost_budgets)]
    assert names == ["CostBudgetWarning", "CostBudgetExceeded"]
    _, notes = wanted_alerts([], engine.cost_budgets)[1]
    assert "of 100.00 EUR today (UTC)" in notes["description"]


def test_the_day_starts_again_at_midnight_utc_and_a_long_gap_is_not_billed():
    engine = slo_engine(config(ERRORS, pools=[COST]))
    midnight = (T0 // DAY + 1) * DAY
    cycles(engine, midnight - 600, 1200, replicas=1)  # ten minutes each side of midnight
    engine.evaluate(midnight + 600)
    assert engine.cost_budgets[0].replica_seconds_today == pytest.approx(600.0)
    cycles(engine, midnight + 3600 * 3, 0, replicas=1)  # the service was paused for three hours
    engine.evaluate(midnight + 3600 * 3)
    assert engine.cost_budgets[0].replica_seconds_today == pytest.approx(600.0)


def test_spend_today_survives_a_restart_through_the_stored_rows():
    cfg = config(ERRORS, pools=[COST])
    engine = slo_engine(cfg)
    midnight = (T0 // DAY + 1) * DAY
    last = cycles(engine, midnight, 1800)
    engine.evaluate(last)
    before = engine.cost_budgets[0].spend_today
    rows = engine.take_rows()
    assert {r.slo for r in rows} >= {SPEND_ROW}
    restarted = slo_engine(cfg)
    restarted.load(rows, last)
    restarted.evaluate(last)
    assert restarted.cost_budgets[0].spend_today == pytest.approx(before)
    # a pool without `cost` is metered but neither stored nor shown
    plain = slo_engine(config(ERRORS))
    cycles(plain, midnight, 60)
    assert not [r for r in plain.take_rows() if r.slo == SPEND_ROW] and budget_statuses(plain.spend, {}, midnight) == []


def test_a_meter_without_storage_keeps_no_dirty_minutes():
    meter = SpendMeter(keep_dirty=False)
    meter.record("p", T0, 1)
    meter.record("p", T0 + 5, 1)
    assert meter.today("p", T0 + 5) == 5.0 and not meter.dirty


def test_both_paths_send_the_same_alert_names_and_severities():
    """Generation does not import the publish layer, so the names are kept twice; one Alertmanager fed
    by both paths shows one alert only while they agree."""
    from monitor.generate import rules, rules_service
    from monitor.publish import alertmanager

    assert (rules.ABSENT_ALERT, rules.ABSENT_SEVERITY) == (alertmanager.ABSENT_ALERT, alertmanager.ABSENT_SEVERITY)
    assert (rules.EXHAUSTED_ALERT, rules.EXHAUSTED_SEVERITY) == \
        (alertmanager.EXHAUSTED_ALERT, alertmanager.EXHAUSTED_SEVERITY)
    by_name = {a.name: a.severity for a in rules_service.service_alerts()}
    assert {name: by_name[name] for name in alertmanager.COST_SEVERITIES} == alertmanager.COST_SEVERITIES
    from monitor.evaluate.slo import spend

    assert rules_service.COST_WARNING_AT == spend.WARNING_AT
