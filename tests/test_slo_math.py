"""SLO arithmetic against hand-worked numbers and the Workbook's cases (shared/reference/slo-method.md).

Time is simulated: traffic is fed into an EventSeries interval by interval and evaluated at chosen
moments, so days of history cost milliseconds and nothing sleeps.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from monitor.config import (
    AvailabilityIndicator,
    ErrorRatioIndicator,
    LatencyIndicator,
    SaturationIndicator,
)
from monitor.evaluate.slo import (
    DAY,
    PAIRS,
    EventSeries,
    Events,
    burn_factor,
    burn_factors,
    burn_rate,
    count_events,
    alert_verdict,
    error_budget_remaining,
    error_events,
    evaluate,
    exhaustion_seconds,
    instance_available,
    latency_events,
    never_firing_pairs,
    objective_warnings,
    retention_for,
    saturation_events,
    seconds_to_fire,
)
from monitor.evaluate.windows import WindowStats
from monitor.samples import Histogram, ScrapeResult

T0 = 60 * 20_000_000  # a minute boundary (2008-01-10), the onset of every scripted fault
PERIOD = 30 * DAY
TTFT_BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
               20.0, 40.0, 80.0, 160.0, 640.0, 2560.0, float("inf"))


# --- simulation helpers -------------------------------------------------------------------------


def feed(series: EventSeries, start: float, end: float, rate: float, error_ratio: float = 0.0,
         step: float = 60.0) -> None:
    """Steady traffic over [start, end): `rate` requests/s, a share `error_ratio` of them bad.

    Each interval is filed at its midpoint, as the series asks.
    """
    t = start
    while t < end:
        dt = min(step, end - t)
        total = rate * dt
        series.add(t + dt / 2, total * (1 - error_ratio), total)
        t += dt


def first_second(series: EventSeries, start: float, seconds: int, rate: float, error_ratio: float,
                 predicate, objective: float = 0.999) -> int | None:
    """Feed `seconds` one-second intervals after `start`; the first k at which predicate(evaluation) holds."""
    found = None
    for k in range(1, seconds + 1):
        feed(series, start + k - 1, start + k, rate, error_ratio, step=1.0)
        if found is None and predicate(evaluate(series, start + k, objective)):
            found = k
    return found


def healthy_history(days: float, rate: float = 10.0, retention: float = PERIOD) -> EventSeries:
    series = EventSeries(retention)
    feed(series, T0 - days * DAY, T0, rate)
    return series


def stats(**kwargs) -> WindowStats:
    return WindowStats(start=kwargs.pop("start", 0.0), end=kwargs.pop("end", 5.0), **kwargs)


# --- event counting -----------------------------------------------------------------------------


def ttft(counts_at: dict[float, float]) -> Histogram:
    """A TTFT histogram delta with the given cumulative counts at some bounds (filled in between)."""
    cumulative, last = [], 0.0
    for bound in TTFT_BOUNDS:
        last = counts_at.get(bound, last)
        cumulative.append(last)
    return Histogram(TTFT_BOUNDS, tuple(cumulative), 0.0, cumulative[-1])


def test_latency_on_a_bucket_boundary_is_exact():
    hist = ttft({0.25: 60.0, 0.5: 90.0, float("inf"): 100.0})
    assert latency_events(stats(histograms={"ttft": hist}), "ttft", 0.5) == Events(90.0, 100.0, True)


def test_latency_between_buckets_is_interpolated_and_inexact():
    # 0.3 s lies a fifth of the way from 0.25 to 0.5: 60 + (90 - 60) * 0.05 / 0.25 = 66
    hist = ttft({0.25: 60.0, 0.5: 90.0, float("inf"): 100.0})
    events = latency_events(stats(histograms={"ttft": hist}), "ttft", 0.3)
    assert events.good == pytest.approx(66.0)
    assert events.total == 100.0
    assert events.exact is False
    assert (events + Events(10, 10)).exact is False


def test_latency_without_traffic_or_histogram_counts_nothing():
    assert latency_events(stats(), "tpot", 0.1) == Events(0.0, 0.0, True)
    assert latency_events(None, "e2e", 1.0) == Events(0.0, 0.0, True)
    with pytest.raises(ValueError):
        latency_events(stats(), "prefill", 0.1)  # not a latency vLLM reports


def test_error_ratio_counts_errors_and_rejections_but_not_aborts():
    s = stats(finished={"stop": 90.0, "length": 5.0, "abort": 3.0, "error": 2.0},
              increases={"admission_rejections": 4.0, "prompt_tokens": 1000.0})
    events = error_events(s)
    assert events.total == 104.0  # 100 finished + 4 rejected
    assert events.bad == 6.0  # 2 errors + 4 rejections; the 3 aborts are good
    assert events.good == 98.0


def test_error_ratio_without_rejection_counter():
    assert error_events(stats(finished={"stop": 9.0, "error": 1.0})) == Events(9.0, 10.0, True)


def test_saturation_counts_seconds_at_or_under_threshold():
    assert saturation_events(stats(gauges={"kv_cache_usage": 0.95}), 0.9) == Events(0.0, 5.0, True)
    assert saturation_events(stats(gauges={"kv_cache_usage": 0.9}), 0.9) == Events(5.0, 5.0, True)
    assert saturation_events(stats(start=0, end=60, gauges={"kv_cache_usage": 0.2}), 0.9).total == 60.0
    assert saturation_events(stats(gauges={}), 0.9) == Events(0.0, 0.0, True)


def scrape(error: str | None = None, health: int | None = 200) -> ScrapeResult:
    return ScrapeResult("p", "h:1", "http://h:1", 0.0, 0.01, error=error, health_status=health)


def test_availability_needs_reachable_and_health_200():
    assert instance_available(scrape()) is True
    assert instance_available(scrape(health=503)) is False
    assert instance_available(scrape(health=None)) is False  # /health timed out
    assert instance_available(scrape(error="connection refused", health=None)) is False
    assert instance_available(scrape(health=None), health_checked=False) is True
    assert instance_available(scrape(error="timeout", health=None), health_checked=False) is False


def test_count_events_dispatches_on_the_configured_indicator():
    s = stats(histograms={"ttft": ttft({0.5: 9.0, float("inf"): 10.0})},
              finished={"stop": 4.0, "error": 1.0}, gauges={"kv_cache_usage": 0.5})
    latency = LatencyIndicator(type="latency", metric="ttft", threshold="500ms")
    assert count_events(latency, s) == Events(9.0, 10.0, True)
    assert count_events(ErrorRatioIndicator(type="error_ratio"), s) == Events(4.0, 5.0, True)
    assert count_events(SaturationIndicator(type="saturation", threshold="80%"), s) == Events(5.0, 5.0, True)
    availability = AvailabilityIndicator(type="availability")
    assert count_events(availability, None, available=False) == Events(0.0, 1.0, True)
    assert count_events(availability, None, available=True) == Events(1.0, 1.0, True)
    with pytest.raises(ValueError):
        count_events(availability, s)


# --- the event series ---------------------------------------------------------------------------


def test_window_sums_whole_minutes_and_prorates_the_cut_one():
    series = EventSeries()
    for i in range(10):  # minute T0 + i*60 holds i good of 10 total
        series.add(T0 + i * 60 + 30, float(i), 10.0)
    end = T0 + 600  # just after the last minute
    assert series.window(end, 300) == (5 + 6 + 7 + 8 + 9, 50.0)
    # 90 s back: minute 9 whole, half of minute 8
    assert series.window(end, 90) == pytest.approx((9 + 4.0, 15.0))
    # within the current minute only up to `now` counts as elapsed: 20 s back at T0+9m+40s
    # reads (40-20)/40 of minute 9
    assert series.window(T0 + 9 * 60 + 40, 20) == pytest.approx((4.5, 5.0))
    assert series.window(end, 3600) == (45.0, 100.0)
    assert series.window(T0, 60) == (0.0, 0.0)  # before any data
    assert series.window(T0 + 150, 60) == pytest.approx((0.5 + 2, 15.0))  # minutes 3-9 ignored


def test_late_events_for_a_past_minute_are_added_in_place():
    series = EventSeries()
    series.add(T0 + 30, 1.0, 1.0)
    series.add(T0 + 300, 1.0, 1.0)
    series.add(T0 + 90, 0.0, 2.0)  # a slow scrape reports late
    series.add(T0 - 60, 3.0, 3.0)  # even before the first minute
    assert series.window(T0 + 360, 3600) == (5.0, 7.0)
    assert series.window(T0 + 120, 60) == (0.0, 2.0)
    with pytest.raises(ValueError):
        series.add(T0, 3.0, 2.0)  # more good than valid events is a counting bug upstream


def test_minutes_past_the_retention_are_dropped():
    series = EventSeries(retention=3600)
    feed(series, T0, T0 + 4 * 3600, 1.0)
    assert len(series) <= 61
    assert series.window(T0 + 4 * 3600, 3600) == pytest.approx((3600.0, 3600.0))
    assert series.window(T0 + 4 * 3600, 4 * 3600) == pytest.approx((3600.0, 3600.0), abs=60)
    series.add(T0, 1.0, 1.0)  # far older than the retention: ignored, not resurrected
    assert series.rows()[0][0] >= T0 + 3 * 3600 - 60


def test_reload_from_rows_answers_the_same():
    series = EventSeries()
    feed(series, T0 - 2 * DAY, T0, 3.0, error_ratio=0.01)
    feed(series, T0, T0 + 600, 3.0, error_ratio=0.5, step=1.0)
    rows = series.rows()
    assert all(start % 60 == 0 for start, _, _ in rows)
    reloaded = EventSeries.from_rows(reversed(rows))
    now = T0 + 600
    for seconds in (300, 1800, 3600, 7200, 21600, DAY, 3 * DAY, PERIOD):
        assert reloaded.window(now, seconds) == pytest.approx(series.window(now, seconds))
    before, after = evaluate(series, now, 0.999), evaluate(reloaded, now, 0.999)
    assert (after.alert, after.fired) == (before.alert, before.fired) == ("page", tuple(p.name for p in PAIRS))
    assert after.burn_rates == pytest.approx(before.burn_rates)
    assert after.error_budget_remaining == pytest.approx(before.error_budget_remaining)


def test_reload_accepts_datetimes_duplicates_and_drops_stale_rows():
    minute = datetime.fromtimestamp(T0, tz=timezone.utc)
    naive_utc = minute.replace(tzinfo=None)
    rows = [(minute, 5.0, 6.0), (naive_utc, 1.0, 1.0), (T0 - 40 * DAY, 7.0, 7.0)]
    series = EventSeries.from_rows(rows, now=T0 + 60)
    assert series.rows() == [(T0, 6.0, 7.0)]
    assert series.minute(T0 + 59.9) == (T0, 6.0, 7.0)
    assert series.minute(T0 + 60) == (T0 + 60, 0.0, 0.0)
    assert EventSeries.from_rows([]).window(T0, 60) == (0.0, 0.0)


def test_thirty_days_stay_small_and_windows_stay_fast():
    series = healthy_history(31)
    assert len(series) <= 30 * 24 * 60 + 1
    started = time.perf_counter()
    for k in range(1000):
        evaluate(series, T0 + k, 0.999)
    assert time.perf_counter() - started < 2.0  # about 9 window reads each, O(1) apiece


# --- budget and burn-rate arithmetic ------------------------------------------------------------


def test_burn_rate_and_budget_by_hand():
    assert burn_rate(1, 1000, 0.999) == pytest.approx(1.0)
    assert burn_rate(5, 100, 0.99) == pytest.approx(5.0)
    assert burn_rate(0, 0, 0.99) is None
    assert error_budget_remaining(1, 1000, 0.999) == pytest.approx(0.0)
    assert error_budget_remaining(25, 10_000, 0.99) == pytest.approx(0.75)
    assert error_budget_remaining(30, 1000, 0.99) == pytest.approx(-2.0)  # overspent shows below zero
    assert error_budget_remaining(0, 0, 0.99) == 1.0


def test_burn_factors_from_budget_shares():
    assert burn_factors(30 * DAY) == pytest.approx({"1h/5m": 14.4, "6h/30m": 6.0, "1d/2h": 3.0, "3d/6h": 1.0})
    assert burn_factors(28 * DAY) == pytest.approx(
        {"1h/5m": 13.44, "6h/30m": 5.6, "1d/2h": 2.8, "3d/6h": 0.9333}, rel=1e-4)
    assert burn_factor(0.02, 30 * DAY, 3600) == pytest.approx(14.4)


def test_budget_exhaustion_times_table_5_4():
    assert exhaustion_seconds(1, PERIOD) == pytest.approx(30 * DAY)
    assert exhaustion_seconds(2, PERIOD) == pytest.approx(15 * DAY)
    assert exhaustion_seconds(10, PERIOD) == pytest.approx(3 * DAY)
    assert exhaustion_seconds(1000, PERIOD) / 60 == pytest.approx(43.2)
    assert exhaustion_seconds(1 / (1 - 0.99999), PERIOD) == pytest.approx(25.92)  # 99.999%: 26 s
    assert exhaustion_seconds(0, PERIOD) == float("inf")


def test_time_to_fire_formula():
    assert seconds_to_fire(1.0, 0.999, 3600, 14.4) == pytest.approx(51.84)
    assert seconds_to_fire(1.0, 0.999, 6 * 3600, 6) == pytest.approx(129.6)
    assert seconds_to_fire(1.0, 0.999, DAY, 3) == pytest.approx(259.2)
    assert seconds_to_fire(1.0, 0.999, 3 * DAY, 1) == pytest.approx(259.2)
    assert seconds_to_fire(0.0145, 0.999, 3600, 14.4) is not None  # needs e >= 1.44%
    assert seconds_to_fire(0.014, 0.999, 3600, 14.4) is None


def test_objectives_too_low_for_a_pair_are_reported():
    names = [pair.name for pair, _ in never_firing_pairs(0.90)]
    assert names == ["1h/5m"]  # 100% errors burn at 10 < 14.4
    (warning,) = objective_warnings(0.90, name="errors")
    assert "1h/5m" in warning and "14.4" in warning and "10" in warning and "'errors'" in warning
    assert never_firing_pairs(0.999) == []
    assert never_firing_pairs(0.99999) == []
    assert [p.name for p, _ in never_firing_pairs(0.80)] == ["1h/5m", "6h/30m"]  # 5 < 6


def test_decide_needs_both_windows_and_enough_bad_events():
    rates = {"5m": 20.0, "1h": 20.0, "30m": 1.0, "6h": 1.0, "2h": 0.0, "1d": 0.0, "3d": 0.0}
    bad = {"1h": 10.0}
    assert alert_verdict(rates, bad).alert == "page"
    assert alert_verdict(rates, bad).fired == ("1h/5m",)
    assert alert_verdict({**rates, "5m": 14.0}, bad).alert == "none"  # the short window has recovered
    assert alert_verdict({**rates, "5m": None}, bad).alert == "none"  # no traffic is not an outage
    held = alert_verdict(rates, {"1h": 4.0})
    assert held.alert == "none" and held.held == ("1h/5m",)
    assert alert_verdict({**rates, "5m": 0.5, "1h": 0.5, "2h": 4, "1d": 4}, {"1d": 100}).fired == ("1d/2h",)


def test_retention_covers_the_longest_alert_window():
    assert retention_for(30 * DAY) == 30 * DAY
    assert retention_for(DAY) == 3 * DAY


# --- the Workbook's cases, simulated ------------------------------------------------------------


def fired(name: str):
    return lambda ev: name in ev.fired


def test_full_outage_at_99_9_fires_each_pair_on_time():
    """100% errors: 1h/5m after 51.84 s, 6h/30m after 129.6 s, both tickets after 259.2 s."""
    times = {}
    for pair in PAIRS:
        series = healthy_history(3.1)
        times[pair.name] = first_second(series, T0, 300, rate=10.0, error_ratio=1.0, predicate=fired(pair.name))
    assert times == {"1h/5m": 52, "6h/30m": 130, "1d/2h": 260, "3d/6h": 260}


def test_full_outage_pages_with_the_page_pair_first():
    series = healthy_history(3.1)
    assert first_second(series, T0, 51, 10.0, 1.0, lambda ev: ev.alert != "none") is None
    feed(series, T0 + 51, T0 + 52, 10.0, 1.0, step=1.0)
    ev = evaluate(series, T0 + 52, 0.999)
    assert ev.alert == "page" and ev.pair == "1h/5m"
    assert ev.burn_rates["5m"] == pytest.approx(52 / 300 / 0.001)
    assert ev.burn_rates["1h"] == pytest.approx(52 / 3600 / 0.001)
    feed(series, T0 + 52, T0 + 260, 10.0, 1.0, step=1.0)
    assert evaluate(series, T0 + 260, 0.999).fired == ("1h/5m", "6h/30m", "1d/2h", "3d/6h")


def test_reset_after_a_sustained_outage():
    """Pairs clear ~ short window x (1 - factor x b / e) after recovery: 295.7 s and 1789.2 s."""
    series = healthy_history(1)
    feed(series, T0, T0 + 7200, 10.0, 1.0)  # two hours down
    end = T0 + 7200
    assert evaluate(series, end, 0.999).fired == ("1h/5m", "6h/30m", "1d/2h", "3d/6h")
    cleared: dict[str, int] = {}
    alerts: dict[int, str] = {}
    for k in range(1, 1801):
        feed(series, end + k - 1, end + k, 10.0, 0.0, step=1.0)
        ev = evaluate(series, end + k, 0.999)
        alerts[k] = ev.alert
        for name in ("1h/5m", "6h/30m"):
            if name not in ev.fired:
                cleared.setdefault(name, k)
    assert cleared == {"1h/5m": 296, "6h/30m": 1790}
    assert abs(cleared["1h/5m"] - 300 * (1 - 14.4 * 0.001 / 1.0)) < 1  # 295.68
    assert abs(cleared["6h/30m"] - 1800 * (1 - 6 * 0.001 / 1.0)) < 1  # 1789.2
    # the page holds through the 6h/30m pair, then the tickets' long windows still burn
    assert alerts[1789] == "page" and alerts[1790] == "ticket"


def test_fifteen_percent_errors_for_ten_minutes_pages():
    """Workbook Fig. 5-6: the 5m window trips at once (28.8 s), the 1h window after ~5.8 min."""
    series = healthy_history(31)
    short_at = first_second(series, T0, 600, 10.0, 0.15, lambda ev: ev.burn_rates["5m"] > 14.4)
    assert short_at == 29
    series = healthy_history(31)
    page_at = first_second(series, T0, 600, 10.0, 0.15, lambda ev: ev.alert == "page")
    assert page_at == 346  # 0.15 x t / 3600 > 14.4 x 0.001  <=>  t > 345.6 s
    ev = evaluate(series, T0 + 600, 0.999)
    assert ev.fired == ("1h/5m",)  # the 6h window would need 864 s
    # 900 bad of 10/s over 30 days = 25,920,000: 3.47% of the budget spent
    assert ev.total == pytest.approx(10.0 * PERIOD)
    assert ev.error_budget_remaining == pytest.approx(1 - 900 / 25_920_000 / 0.001)
    assert ev.sli == pytest.approx(1 - 900 / 25_920_000)


def test_low_traffic_single_failure_does_not_page():
    """10 requests/hour: one failure is a 1000x burn and 13.9% of the monthly budget, yet no page."""
    series = EventSeries()
    count = 30 * 24 * 10
    first = T0 - count * 360
    for k in range(count):  # one request every 6 minutes, in the middle of its minute; the last fails
        series.add(first + k * 360 + 30, 0.0 if k == count - 1 else 1.0, 1.0)
    now = T0 - 360 + 60  # the end of the failed request's minute
    ev = evaluate(series, now, 0.999)
    assert ev.burn_rates["5m"] == pytest.approx(1000.0)
    assert ev.burn_rates["1h"] == pytest.approx(100.0)  # 1 of 10
    assert ev.alert == "none" and "1h/5m" in ev.held
    assert ev.total == pytest.approx(7200.0, abs=1)
    assert ev.error_budget_remaining == pytest.approx(1 - 1 / 7200 / 0.001, abs=1e-3)  # 13.9% spent
    assert evaluate(series, now, 0.999, min_bad_events=1).alert == "page"  # the guard is what stops it


def test_short_spike_seen_by_5m_only_does_not_page():
    series = healthy_history(3.1)
    feed(series, T0, T0 + 30, 10.0, 1.0, step=1.0)  # 30 s of 100% errors
    assert evaluate(series, T0 + 30, 0.999).burn_rates["5m"] == pytest.approx(100.0)
    assert evaluate(series, T0 + 30, 0.999).burn_rates["1h"] == pytest.approx(30 / 3600 / 0.001)
    assert first_second(series, T0 + 30, 3600, 10.0, 0.0, lambda ev: ev.alert != "none") is None


def test_ninety_percent_objective_never_pages_on_the_1h_pair():
    """At 90% a full outage burns at 10 < 14.4; the 6h/30m pair fires after 0.1 x 6h x 6 = 3.6 h."""
    series = healthy_history(3.1)
    seen_1h, first_6h = False, None
    for minute in range(1, 7 * 60 + 1):
        feed(series, T0 + (minute - 1) * 60, T0 + minute * 60, 10.0, 1.0)
        ev = evaluate(series, T0 + minute * 60, 0.90)
        seen_1h = seen_1h or "1h/5m" in ev.fired
        if first_6h is None and "6h/30m" in ev.fired:
            first_6h = minute
        if minute >= 60:
            assert ev.burn_rates["1h"] == pytest.approx(10.0)
    assert not seen_1h
    assert first_6h is not None and 215 < first_6h <= 217


def test_budget_with_uneven_traffic_counts_events_not_ratios():
    """A busy hour at 1% errors and a quiet one at 50%: 15 bad of 1010, not the average of 1% and 50%."""
    series = EventSeries()
    feed(series, T0, T0 + 3600, 1000 / 3600, error_ratio=0.01)
    feed(series, T0 + 3600, T0 + 7200, 10 / 3600, error_ratio=0.5)
    ev = evaluate(series, T0 + 7200, 0.99)
    assert ev.total == pytest.approx(1010.0)
    assert ev.sli == pytest.approx(995 / 1010)
    assert ev.error_budget_remaining == pytest.approx(1 - (15 / 1010) / 0.01)  # -0.485
    averaged = 1 - ((0.01 + 0.5) / 2) / 0.01  # -24.5: what averaging ratios would claim
    assert abs(ev.error_budget_remaining - averaged) > 20


def test_exact_flag_is_carried_into_the_evaluation():
    series = healthy_history(0.1)
    assert evaluate(series, T0, 0.99).exact is True
    assert evaluate(series, T0, 0.99, exact=False).exact is False
