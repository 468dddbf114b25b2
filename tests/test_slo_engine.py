"""The SLO engine on plain data: scrape results built by hand, simulated clocks, no sleeping.

What is checked: which events each indicator counts from successive scrapes (per pool, summed over
instances, per model where a pool serves several), that an off-boundary latency threshold is
interpolated and reported inexact, that the Workbook's 52-second page comes out of the counting
path too, and that the per-minute rows written to SQLite and PostgreSQL rebuild the same budget
and windows after a restart.
"""

from __future__ import annotations

import pytest

from monitor.evaluate.slo import DAY, PAIRS
from monitor.service.wiring import slo_engine
from monitor.evaluate.slo.engine import SloEngine, SloEventRow
from monitor.evaluate.slo.track import SloKey, predicted_exact
from monitor.units import format_duration
from monitor.store import Store, upgrade

from tests.helpers.slo_scrapes import T0, Server, config, result

ERRORS = {"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%"}


def status(engine: SloEngine, slo: str, pool: str = "llama", model: str = "") -> object:
    return next(s for s in engine.statuses if s.key == SloKey(slo, pool, model))


# --- counting -----------------------------------------------------------------------------------


def test_error_events_add_up_over_a_pools_instances():
    engine = slo_engine(config(ERRORS))
    a, b = Server(), Server(rejections=0.0)
    engine.observe([result("llama", "10.0.0.1:8000", T0, a), result("llama", "10.0.0.2:8000", T0, b)])
    engine.evaluate(T0 + 1)
    assert status(engine, "errors").evaluation.total == 0  # the first scrape is only a baseline
    a.requests(100)
    a.requests(3, "abort")  # client aborts: valid and good
    a.requests(2, "error")
    b.requests(50, "length")
    b.rejections = 5.0  # rejected at admission: never finished, still bad
    engine.observe([result("llama", "10.0.0.1:8000", T0 + 5, a), result("llama", "10.0.0.2:8000", T0 + 5, b)])
    ev = engine.evaluate(T0 + 10)[0].evaluation
    assert (ev.good, ev.total) == (153.0, 160.0)
    assert ev.sli == pytest.approx(153 / 160)
    assert ev.burn_rates["5m"] == pytest.approx(7 / 160 / 0.001)
    assert ev.window_events["1h"] == (153.0, 160.0)
    assert ev.alert == "page" and ev.fired[0] == "1h/5m"  # 7 bad events: over the guard of 5


def test_latency_off_a_bucket_boundary_is_interpolated_and_inexact():
    ttft_300 = {"name": "ttft-300", "indicator": {"type": "latency", "metric": "ttft", "threshold": "300ms"},
                "objective": "99%"}
    ttft_500 = {**ttft_300, "name": "ttft-500", "indicator": {**ttft_300["indicator"], "threshold": "500ms"}}
    cfg = config(ttft_300, ttft_500)
    assert [predicted_exact(s) for s in cfg.slos] == [False, True]
    engine = slo_engine(cfg)
    assert [s.evaluation.exact for s in engine.evaluate(T0)] == [False, True]  # before any data: as `check` says
    server = Server()
    engine.observe([result("llama", "10.0.0.1:8000", T0, server)])
    server.requests(60, ttft_s=0.2)  # bucket (0.1, 0.25]
    server.requests(30, ttft_s=0.4)  # bucket (0.25, 0.5]
    server.requests(10, ttft_s=0.7)
    engine.observe([result("llama", "10.0.0.1:8000", T0 + 5, server)])
    by_name = {s.key.slo: s.evaluation for s in engine.evaluate(T0 + 5)}
    # 0.3 s is a fifth of the way from 0.25 to 0.5: 60 + 30 x 0.05 / 0.25 = 66 good of 100
    assert by_name["ttft-300"].good == pytest.approx(66.0) and by_name["ttft-300"].total == 100.0
    assert by_name["ttft-300"].exact is False
    assert (by_name["ttft-500"].good, by_name["ttft-500"].exact) == (90.0, True)


def test_availability_counts_one_event_per_scrape():
    avail = {"name": "up", "indicator": {"type": "availability"}, "objective": "99%"}
    engine = slo_engine(config(avail))
    engine.observe([result("llama", "10.0.0.1:8000", T0, Server()),
                    result("llama", "10.0.0.2:8000", T0, Server(), health=503)])
    engine.observe([result("llama", "10.0.0.1:8000", T0 + 5, Server(), health=None),  # /health timed out
                    result("llama", "10.0.0.2:8000", T0 + 5, error="connection refused", health=None)])
    ev = engine.evaluate(T0 + 6)[0].evaluation
    assert (ev.good, ev.total) == (1.0, 4.0)
    # without a health probe, reachability alone decides
    engine = slo_engine(config(avail, scrape={"health_path": None}))
    engine.observe([result("llama", "10.0.0.1:8000", T0, Server(), health=None),
                    result("llama", "10.0.0.2:8000", T0, error="timed out", health=None)])
    assert engine.evaluate(T0 + 1)[0].evaluation.good == 1.0


def test_availability_leaves_out_instances_that_are_starting_leaving_or_asleep():
    avail = {"name": "up", "indicator": {"type": "availability"}, "objective": "99%"}
    engine = slo_engine(config(avail))
    engine.observe([result("llama", "10.0.0.1:8000", T0, Server()),
                    result("llama", "10.0.0.9:8000", T0, error="connection refused", health=None)],  # loading
                   not_serving={"10.0.0.9:8000"})
    ev = engine.evaluate(T0 + 1)[0].evaluation
    assert (ev.good, ev.total) == (1.0, 1.0)  # the loading instance is not an outage


def test_saturation_counts_seconds_at_or_under_the_threshold():
    kv = {"name": "kv", "indicator": {"type": "saturation", "threshold": 0.9}, "objective": "99%"}
    engine = slo_engine(config(kv))
    server = Server(kv=0.5)
    engine.observe([result("llama", "10.0.0.1:8000", T0, server)])
    server.kv = 0.95
    engine.observe([result("llama", "10.0.0.1:8000", T0 + 5, server)])
    server.kv = 0.9  # at the threshold is good
    engine.observe([result("llama", "10.0.0.1:8000", T0 + 15, server)])
    ev = engine.evaluate(T0 + 15).pop().evaluation
    assert (ev.good, ev.total) == (10.0, 15.0)


def test_a_pool_serving_several_models_is_also_evaluated_per_model():
    avail = {"name": "up", "indicator": {"type": "availability"}, "objective": "99%"}
    cfg = config(ERRORS, avail, pools=[{"name": "mixed", "targets": ["http://10.0.0.1:8000"]},
                                       {"name": "single", "targets": ["http://10.0.0.2:8000"]}])
    engine = slo_engine(cfg)
    small, large, only = Server(model="small"), Server(model="large"), Server(model="only")
    for k in range(3):
        small.requests(10)
        large.requests(8)
        large.requests(2, "error")
        only.requests(5)
        engine.observe([result("mixed", "10.0.0.1:8000", T0 + 5 * k, small, large),
                        result("single", "10.0.0.2:8000", T0 + 5 * k, only)])
    keys = [s.key for s in engine.evaluate(T0 + 10)]
    assert keys == [SloKey("errors", "mixed"), SloKey("errors", "mixed", "large"), SloKey("errors", "mixed", "small"),
                    SloKey("errors", "single"), SloKey("up", "mixed"), SloKey("up", "single")]
    assert status(engine, "errors", "mixed").evaluation.total == 40.0
    assert status(engine, "errors", "mixed", "large").evaluation.sli == pytest.approx(0.8)
    assert status(engine, "errors", "mixed", "small").evaluation.sli == 1.0
    assert status(engine, "errors", "mixed", "small").model_name == "small"
    assert status(engine, "errors", "single").model_name is None


def test_slo_limited_to_some_pools():
    cfg = config({**ERRORS, "pools": ["b"]}, pools=[{"name": "a", "targets": ["http://10.0.0.1:8000"]},
                                                    {"name": "b", "targets": ["http://10.0.0.2:8000"]}])
    assert [s.key for s in slo_engine(cfg).evaluate(T0)] == [SloKey("errors", "b")]


def test_an_instance_restart_counts_from_zero_and_a_gap_is_spread_over_its_minutes():
    engine = slo_engine(config(ERRORS))
    server = Server()
    server.requests(1000)
    engine.observe([result("llama", "10.0.0.1:8000", T0, server)])
    restarted = Server()
    restarted.requests(40)
    restarted.requests(2, "error")
    engine.observe([result("llama", "10.0.0.1:8000", T0 + 5, restarted)])
    assert engine.evaluate(T0 + 5)[0].evaluation.total == 42.0  # not 42 - 1000
    engine.take_rows()
    # ten minutes of failed scrapes: the increase covers them, spread evenly, not piled into one minute
    restarted.requests(600)
    engine.observe([result("llama", "10.0.0.1:8000", T0 + 5 + 60 * k, error="down") for k in range(1, 10)])
    engine.observe([result("llama", "10.0.0.1:8000", T0 + 605, restarted)])
    rows = engine.take_rows()
    assert [r.minute for r in rows] == [T0 + 60 * k for k in range(11)]
    # rows carry whole minutes: minute T0 also holds the 42 events counted before the gap
    assert sum(r.total for r in rows) == pytest.approx(42.0 + 600.0)
    assert rows[0].total == pytest.approx(42.0 + 55.0) and rows[1].total == pytest.approx(60.0)
    assert rows[-1].total == pytest.approx(5.0)
    assert engine.take_rows() == []  # nothing changed since


def test_full_outage_pages_after_52_seconds_through_the_counting_path():
    """100% errors at 99.9% over a healthy 3-day history: the 1h/5m page after 51.84 s (the Workbook)."""
    engine = slo_engine(config(ERRORS))
    # three days of healthy history at 10 requests/s, as reloaded from the database
    history = [SloEventRow("errors", "llama", "", T0 - 60 * k, 600.0, 600.0) for k in range(1, int(3.1 * 1440))]
    assert engine.load(history, T0) == len(history)
    server = Server()
    engine.observe([result("llama", "10.0.0.1:8000", T0, server)])
    paged_at = None
    for k in range(1, 80):
        server.requests(10, "error")  # scrapes 1 s apart, 10 failed requests in each interval
        engine.observe([result("llama", "10.0.0.1:8000", T0 + k, server)])
        ev = engine.evaluate(T0 + k)[0].evaluation
        if ev.alert == "page":
            paged_at = k
            break
    assert paged_at == 52
    assert ev.pair == "1h/5m" and ev.burn_rates["1h"] == pytest.approx(52 / 3600 / 0.001, rel=1e-3)


def test_min_bad_events_comes_from_the_config():
    one_of_ten = []
    for guard, expected in ((5, "none"), (1, "page")):
        engine = slo_engine(config({**ERRORS, "min_bad_events": guard}))
        server = Server()
        engine.observe([result("llama", "10.0.0.1:8000", T0, server)])
        server.requests(9)
        server.requests(1, "error")
        engine.observe([result("llama", "10.0.0.1:8000", T0 + 60, server)])
        one_of_ten.append(engine.evaluate(T0 + 60)[0].evaluation.alert)
        assert one_of_ten[-1] == expected


def test_format_duration():
    assert [format_duration(s) for s in (30 * DAY, 3600, 5400, 0.5, 90.25)] == ["30d", "1h", "1h30m", "500ms",
                                                                                 "1m30s250ms"]


# --- persistence: SQLite and PostgreSQL ---------------------------------------------------------


def drive(engine: SloEngine, start: float, end: float, step: float, server: Server, rate: float,
          error_ratio: float) -> None:
    t = start
    while t < end:
        t += step
        server.requests(rate * step * (1 - error_ratio))
        server.requests(rate * step * error_ratio, "error")
        engine.observe([result("llama", "10.0.0.1:8000", t, server)])


def test_restart_reloads_the_budget_and_windows_from_the_database(db_url):
    """Two hours of traffic with a 10-minute incident, written through the store's buffered path;
    a new engine reloads the rows and evaluates to the same numbers."""
    upgrade(db_url)
    cfg = config(ERRORS, {"name": "errors-7d", "indicator": {"type": "error_ratio"}, "objective": "99%",
                          "window": "7d"})
    store = Store.open(db_url)
    try:
        before = slo_engine(cfg)
        server = Server()
        before.observe([result("llama", "10.0.0.1:8000", T0, server)])
        drive(before, T0, T0 + 3600, 5, server, 20, 0.0)
        store.queue_slo_events(before.take_rows())
        store.flush()
        drive(before, T0 + 3600, T0 + 4200, 5, server, 20, 0.3)  # the incident
        drive(before, T0 + 4200, T0 + 7230, 5, server, 20, 0.001)  # ends inside a minute
        store.queue_slo_events(before.take_rows())
        assert store.flush() > 0 and store.pending == 0
        now = T0 + 7230
        old = {s.key: s.evaluation for s in before.evaluate(now)}

        after = slo_engine(cfg)
        used = after.load(store.slo_events(since=now - after.horizon()), now)
        assert used == 2 * 121  # two SLOs x minutes T0 .. T0+2h (the last one partial)
        new = {s.key: s.evaluation for s in after.evaluate(now)}
        assert new.keys() == old.keys()
        for key in old:
            assert new[key].error_budget_remaining == pytest.approx(old[key].error_budget_remaining, rel=1e-9)
            assert new[key].window_events["1h"] == pytest.approx(old[key].window_events["1h"], rel=1e-9)
            # prefix sums are subtracted in another order after a reload: equal to float rounding
            assert new[key].burn_rates == pytest.approx(old[key].burn_rates, rel=1e-9)
            assert (new[key].good, new[key].total) == pytest.approx((old[key].good, old[key].total), rel=1e-9)
            assert new[key].alert == old[key].alert
        # ~3,600 bad of 144,600 at 99.9%: the budget is overspent 24 times; the incident ended 50 min
        # ago, so the 5m and 30m windows have recovered and only the tickets still fire
        errors = new[SloKey("errors", "llama")]
        assert errors.total == pytest.approx(7230 * 20)
        assert errors.error_budget_remaining == pytest.approx(1 - (3600 + 0.001 * (7230 - 4200) * 20) / errors.total
                                                              / 0.001)
        assert errors.alert == "ticket" and errors.fired == ("1d/2h", "3d/6h")

        # the minute still filling is rewritten, not added to, when written again (also twice in a batch)
        after.observe([result("llama", "10.0.0.1:8000", now, server)])
        server.requests(100)
        after.observe([result("llama", "10.0.0.1:8000", now + 5, server)])
        rows = after.take_rows()
        store.queue_slo_events(rows)
        server.requests(100)
        after.observe([result("llama", "10.0.0.1:8000", now + 10, server)])
        store.queue_slo_events(after.take_rows())
        store.flush()
        stored = {(r.slo, r.minute): r.total for r in store.slo_events()}
        assert stored[("errors", T0 + 7200)] == pytest.approx(30 * 20 + 200)  # reloaded 600, then +100 +100

        assert store.cleanup_slo_events(older_than=T0 + 3600) == 2 * 60
        assert min(r.minute for r in store.slo_events()) == T0 + 3600
    finally:
        store.close()


def test_rows_of_unknown_slos_or_pools_are_ignored_on_reload():
    engine = slo_engine(config(ERRORS))
    rows = [SloEventRow("errors", "llama", "", T0, 5.0, 10.0), SloEventRow("gone", "llama", "", T0, 1.0, 1.0),
            SloEventRow("errors", "other-pool", "", T0, 1.0, 1.0), SloEventRow("errors", "llama", "m1", T0, 2.0, 4.0)]
    assert engine.load(rows, T0 + 60) == 2
    assert "llama" in engine.multi_model  # per-model history means the pool served several models
    statuses = {s.key: s.evaluation for s in engine.evaluate(T0 + 60)}
    assert statuses[SloKey("errors", "llama")].total == 10.0
    assert statuses[SloKey("errors", "llama", "m1")].total == 4.0


def test_check_reports_objectives_too_low_for_a_pair(tmp_path, capsys):
    from monitor.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("""
pools: [{name: p, targets: ["http://10.0.0.1:8000"]}]
slos:
  - {name: loose, indicator: {type: error_ratio}, objective: 90%}
  - {name: fine, indicator: {type: error_ratio}, objective: 99.9%, runbook_url: "https://runbooks.example/slo"}
""")
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: slos[0].objective: SLO 'loose': objective 90% leaves a 10% error budget: the page alert " \
           "1h/5m needs a burn rate above 14.4, but even 100% errors burn at only 10" in out
    assert "slos[1]" not in out


def test_alertmanager_settings_are_validated():
    from monitor.config import ConfigError

    cfg = config(alertmanager={"url": "http://127.0.0.1:9093", "resend_interval": "30s", "timeout": "2s"})
    assert (cfg.alertmanager.resend_interval, cfg.alertmanager.timeout) == (30.0, 2.0)
    with pytest.raises(ConfigError, match="alertmanager: timeout must not exceed resend_interval"):
        config(alertmanager={"url": "http://127.0.0.1:9093", "resend_interval": "1s", "timeout": "2s"})
    with pytest.raises(ConfigError, match=r"slos\[0\].runbook_url: not an http"):
        config({**ERRORS, "runbook_url": "wiki/slo"})
    with pytest.raises(ConfigError, match=r"slos\[0\].min_bad_events"):
        config({**ERRORS, "min_bad_events": -1})


def test_every_pair_is_known():
    assert [p.name for p in PAIRS] == ["1h/5m", "6h/30m", "1d/2h", "3d/6h"]
