"""Figures that say what they stand on (issue 20): every SLO figure carries `coverage` (the share of
its window with data) and `valid_events`, and ErrorBudgetExhausted waits for `budget_min_events` and
`budget_min_coverage`, while the burn-rate alerts page as before."""

from __future__ import annotations

import pytest

from monitor.config import ConfigError, validate
from monitor.evaluate.slo import EventSeries, coverage_text, evaluate
from monitor.evaluate.slo.engine import SloEngine, SloStatus
from monitor.evaluate.slo.track import SloKey
from monitor.publish.alertmanager import wanted_alerts
from monitor.service import create_app
from monitor.service.wiring import slo_engine

from tests.helpers.asgi_client import AUTH, Client
from tests.helpers.slo_scrapes import T0, Server, config, result

ERRORS = {"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%"}
DAY = 86400.0


def status(engine: SloEngine, slo: str = "errors", pool: str = "llama", model: str = "") -> SloStatus:
    return next(s for s in engine.statuses if s.key == SloKey(slo, pool, model))


def drive(engine: SloEngine, start: float, seconds: float, reason: str = "error", per_scrape: float = 20.0,
          *servers: Server) -> float:
    """Scrapes every 5 s for `seconds`, `per_scrape` requests finishing with `reason` each time."""
    servers = servers or (Server(),)
    t = start
    for k in range(int(seconds / 5) + 1):
        t = start + 5 * k
        for server in servers:
            server.requests(per_scrape, reason)
        engine.observe([result("llama", "10.0.0.1:8000", t, *servers)])
    engine.evaluate(t)
    return t


def test_three_minutes_of_errors_on_a_fresh_service_page_but_do_not_exhaust_a_30_day_budget():
    engine = slo_engine(config(ERRORS))
    drive(engine, T0, 180.0)
    st = status(engine)
    ev = st.evaluation
    assert ev.error_budget_remaining < -900  # the arithmetic is what it is: about -1000x of the budget
    assert ev.coverage == pytest.approx(180.0 / (30 * DAY), rel=0.05)  # ~0.00007
    assert ev.covered == "3m of 30d"
    assert ev.valid_events == ev.total > 0
    assert not st.exhausted
    assert ev.budget_held is not None and "not enough data" in ev.budget_held and "3m of 30d" in ev.budget_held
    assert st.evaluation.alert == "page"  # the burn-rate page is not held back
    names = [labels["alertname"] for labels, _ in wanted_alerts(engine.statuses)]
    assert "ErrorBudgetExhausted" not in names
    assert ("SloErrorBudgetBurn", "page") in [(labels["alertname"], labels["severity"])
                                             for labels, _ in wanted_alerts(engine.statuses)]


def test_with_enough_of_the_window_and_events_behind_it_the_budget_is_exhausted():
    # a 1h SLO window: 10% of it is 6 minutes, reached after 8 minutes of 100% errors
    engine = slo_engine(config({**ERRORS, "window": "1h"}))
    drive(engine, T0, 180.0)
    assert not status(engine).exhausted and status(engine).evaluation.coverage < 0.1
    drive(engine, T0 + 185.0, 300.0)
    st = status(engine)
    assert st.evaluation.coverage >= 0.1 and st.evaluation.valid_events >= 100
    assert st.evaluation.covered == "8m of 1h"
    assert st.exhausted and st.evaluation.budget_held is None
    assert "ErrorBudgetExhausted" in [labels["alertname"] for labels, _ in wanted_alerts(engine.statuses)]


def test_too_few_valid_events_hold_exhausted_back_whatever_the_coverage():
    # a request every 5 s for 20 minutes of a 1h window, all failed: 240 events, under 1000
    engine = slo_engine(config({**ERRORS, "window": "1h", "budget_min_events": 1000}))
    drive(engine, T0, 1200.0, per_scrape=1.0)
    ev = status(engine).evaluation
    assert ev.coverage > 0.3 and ev.valid_events < 1000
    assert not status(engine).exhausted
    assert "under budget_min_events 1000" in (ev.budget_held or "")


def test_both_gates_can_be_turned_off():
    engine = slo_engine(config({**ERRORS, "budget_min_events": 0, "budget_min_coverage": 0}))
    drive(engine, T0, 180.0)
    assert status(engine).exhausted and status(engine).evaluation.budget_held is None


def test_the_gates_are_validated_and_default_to_a_tenth_of_the_window_and_100_events():
    slo = config(ERRORS).slos[0]
    assert (slo.budget_min_events, slo.budget_min_coverage) == (100.0, 0.1)
    assert config({**ERRORS, "budget_min_coverage": "25%"}).slos[0].budget_min_coverage == 0.25
    for bad in ({"budget_min_coverage": 2}, {"budget_min_coverage": "nan"}, {"budget_min_events": -1},
                {"budget_min_events": "inf"}):
        with pytest.raises(ConfigError, match="budget_min_"):
            config({**ERRORS, **bad})


def test_coverage_counts_from_the_first_minute_with_events_in_the_window():
    series = EventSeries(30 * DAY)
    now = T0 + 10 * DAY
    assert series.covered(now, 30 * DAY) == 0.0
    series.add(T0 + 30, 10, 10)  # one minute 10 days ago, then a quiet service
    series.add(now - 30, 10, 10)
    assert series.covered(now, 30 * DAY) == pytest.approx(10 * DAY)  # quiet minutes are no traffic, not gaps
    assert series.covered(now, 3600.0) == pytest.approx(60.0)  # the 1h window only holds the last minute
    ev = evaluate(series, now, 0.999, 30 * DAY)
    assert ev.coverage == pytest.approx(1 / 3) and ev.covered == "10d of 30d"
    long_ago = EventSeries(30 * DAY)
    long_ago.add(now - 40 * DAY, 1, 1)  # pruned: past the retention
    long_ago.add(now - 5 * DAY, 1, 1)
    assert long_ago.covered(now, 30 * DAY) == pytest.approx(5 * DAY, abs=60.0)


def test_coverage_text_rounds_to_what_a_reader_needs():
    assert coverage_text(180.0, 30 * DAY) == "3m of 30d"
    assert coverage_text(181.7, 30 * DAY) == "3m of 30d"
    assert coverage_text(3 * DAY + 1234.0, 30 * DAY) == "3d of 30d"
    assert coverage_text(0.0, 7 * DAY) == "0s of 7d"
    assert coverage_text(30 * DAY, 30 * DAY) == "30d of 30d"


CONFIG = validate({
    "pools": [{"name": "llama", "targets": ["http://10.0.0.1:8000"]}],
    "slos": [ERRORS],
    "api": {"token": "s3cret"},
}).config


def test_the_api_and_metrics_show_coverage_valid_events_and_why_exhausted_is_held():
    app = create_app(CONFIG, store=None)  # no lifespan: the test feeds the engine
    engine = app.state.service.slo
    small, large = Server(model="small"), Server(model="large")
    drive(engine, T0, 180.0, "error", 20.0, small, large)
    client = Client(app)
    row = client.get("/api/v1/slos", headers=AUTH).json()[0]
    assert row["coverage"] == pytest.approx(180.0 / (30 * DAY), rel=0.05) and row["covered"] == "3m of 30d"
    assert row["valid_events"] == row["total"] > 0
    assert row["error_budget_exhausted"] is False and "not enough data" in row["error_budget_held"]
    assert row["alert"] == "page"
    assert (row["budget_min_events"], row["budget_min_coverage"]) == (100.0, 0.1)
    assert set(row["models"]) == {"small", "large"}
    for model in row["models"].values():  # per-model entries carry them too
        assert 0 < model["coverage"] < 0.001 and model["valid_events"] > 0 and "covered" in model
        assert model["error_budget_exhausted"] is False
    text = client.get("/metrics").text
    assert 'slo_monitor_slo_coverage_ratio{model_name="",pool="llama",slo="errors"} 6.' in text
    assert 'slo_monitor_slo_valid_events{model_name="",pool="llama",slo="errors"}' in text
    assert 'slo_monitor_slo_error_budget_exhausted{model_name="",pool="llama",slo="errors"} 0.0' in text
