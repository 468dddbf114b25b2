"""Window math against hand-computed numbers."""

import math

import pytest

from monitor.evaluate.windows import (
    counter_increase,
    fraction_at_or_below,
    histogram_increase,
    instance_figures,
    merge_stats,
    quantile,
    select_window,
    window_stats,
)
from monitor.samples import Histogram, ModelSample

INF = math.inf


def h(bounds, cumulative, s=0.0):
    return Histogram(tuple(bounds) + (INF,), tuple(cumulative), s, cumulative[-1])


def test_counter_increase_counts_a_reset_from_zero():
    # 10 -> 25 (+15), restart, 4 (+4), 9 (+5)
    assert counter_increase([10, 25, 4, 9]) == 24
    assert counter_increase([5]) == 0
    assert counter_increase([3, 3, 3]) == 0


def test_histogram_increase_bucket_wise_with_reset():
    a = h([0.1, 0.5], [2, 5, 6], 1.0)
    b = h([0.1, 0.5], [4, 9, 11], 2.5)
    restarted = h([0.1, 0.5], [1, 1, 2], 0.4)
    delta = histogram_increase([a, b, restarted])
    # a->b: [2, 4, 5], sum 1.5; reset: [1, 1, 2], sum 0.4
    assert delta.cumulative == (3, 5, 7)
    assert delta.sum == pytest.approx(1.9)
    assert delta.count == 7
    assert histogram_increase([a]) is None


def test_histogram_increase_restarts_when_bounds_change():
    old = h([0.1, 0.5], [2, 5, 6])
    new = h([0.1, 0.25, 0.5], [1, 2, 3, 3])
    later = h([0.1, 0.25, 0.5], [2, 4, 5, 5])
    delta = histogram_increase([old, new, later])
    assert delta.bounds == (0.1, 0.25, 0.5, INF)
    assert delta.cumulative == (2, 4, 5, 5)


def test_quantile_interpolates_inside_the_bucket():
    # 100 observations: 10 in (0, 0.1], 80 in (0.1, 0.25], 10 in (0.25, 0.5]
    hist = h([0.1, 0.25, 0.5], [10, 90, 100, 100])
    assert quantile(0.5, hist) == pytest.approx(0.1 + 0.15 * 40 / 80)
    assert quantile(0.99, hist) == pytest.approx(0.25 + 0.25 * 9 / 10)
    assert quantile(0.05, hist) == pytest.approx(0.05)  # first bucket's lower edge is 0
    assert quantile(0.9, hist) == pytest.approx(0.25)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound():
    hist = h([0.1, 0.25], [10, 20, 100])
    assert quantile(0.99, hist) == 0.25


def test_quantile_of_an_empty_histogram_is_none():
    assert quantile(0.99, h([0.1], [0, 0])) is None
    assert quantile(0.99, None) is None


def test_fraction_at_a_boundary_is_exact():
    hist = h([0.1, 0.25, 0.5], [10, 90, 100, 100])
    f = fraction_at_or_below(hist, 0.25)
    assert (f.value, f.good, f.total, f.exact) == (0.9, 90, 100, True)


def test_fraction_off_a_boundary_interpolates_and_says_so():
    hist = h([0.1, 0.25, 0.5], [10, 90, 100, 100])
    f = fraction_at_or_below(hist, 0.3)  # 90 + 10 * (0.05 / 0.25) = 92
    assert f.value == pytest.approx(0.92) and not f.exact
    f = fraction_at_or_below(hist, 0.05)  # 10 * 0.5 = 5
    assert f.value == pytest.approx(0.05) and not f.exact


def test_fraction_beyond_the_last_bound_counts_the_inf_bucket_bad():
    hist = h([0.1, 0.25], [10, 20, 100])
    f = fraction_at_or_below(hist, 1.0)
    assert f.value == pytest.approx(0.2) and not f.exact


def _sample(t_tokens, finished, hist=None, waiting=0.0, kv=0.5):
    return ModelSample(
        "m",
        histograms={"ttft": hist} if hist else {},
        counters={"generation_tokens": t_tokens, "prompt_tokens": 2 * t_tokens},
        gauges={"waiting": waiting, "running": 3.0, "kv_cache_usage": kv},
        finished=finished,
    )


def test_select_window_uses_the_scrape_before_the_window_as_baseline():
    times = [0, 5, 10, 15, 20, 25]
    assert select_window(times, now=25, window=10) == (3, 5)
    assert select_window(times, now=25, window=12) == (2, 5)
    assert select_window(times, now=25, window=100) == (0, 5)
    assert select_window([25], now=25, window=10) is None


def test_window_stats_rates_and_counts():
    points = [
        (100.0, _sample(1000, {"stop": 10, "error": 0}, h([0.25, 0.5], [10, 10, 10]))),
        (105.0, _sample(1500, {"stop": 18, "error": 1}, h([0.25, 0.5], [16, 19, 19]))),
        (110.0, _sample(2100, {"stop": 30, "error": 2}, h([0.25, 0.5], [26, 31, 32]), waiting=4, kv=0.8)),
    ]
    stats = window_stats(points, now=110.0, window=10.0)
    assert stats.span == 10.0
    assert stats.increases["generation_tokens"] == 1100
    assert stats.rate("generation_tokens") == 110.0
    assert stats.finished == {"stop": 20, "error": 2}
    assert stats.histograms["ttft"].cumulative == (16, 21, 22)
    figures = instance_figures(stats)
    assert figures["generation_tokens_per_s"] == 110.0
    assert figures["prompt_tokens_per_s"] == 220.0
    assert figures["requests_per_s"] == 2.2
    assert figures["error_ratio"] == pytest.approx(2 / 22)
    assert figures["requests_waiting"] == 4 and figures["kv_cache_usage"] == 0.8
    # p99 rank 21.78 of 22: in (0.5, +Inf] -> highest finite bound
    assert figures["ttft_p99_s"] == 0.5
    # p50 rank 11 inside (0, 0.25] holding 16 -> 0.25 * 11/16
    assert figures["ttft_p50_s"] == pytest.approx(0.25 * 11 / 16)


def test_window_stats_survive_an_instance_restart():
    points = [
        (0.0, _sample(5000, {"stop": 100})),
        (5.0, _sample(5200, {"stop": 104})),
        (10.0, _sample(300, {"stop": 3})),  # restarted: counters begin again
    ]
    stats = window_stats(points, now=10.0, window=10.0)
    assert stats.increases["generation_tokens"] == 200 + 300
    assert stats.finished["stop"] == 4 + 3


def test_admission_rejections_count_as_errors():
    base = ModelSample("m", counters={"admission_rejections": 0}, finished={"stop": 0, "abort": 0, "error": 0})
    later = ModelSample("m", counters={"admission_rejections": 2}, finished={"stop": 6, "abort": 2, "error": 0})
    figures = instance_figures(window_stats([(0.0, base), (5.0, later)], now=5.0, window=5.0))
    assert figures["error_ratio"] == pytest.approx(2 / 10)  # aborts count as requests, not errors


def test_merge_stats_adds_models_and_averages_usage():
    one = window_stats([(0.0, _sample(0, {"stop": 0}, h([0.5], [0, 0]))),
                        (10.0, _sample(100, {"stop": 10}, h([0.5], [10, 10]), kv=0.2))], 10.0, 10.0)
    two = window_stats([(0.0, _sample(0, {"stop": 0}, h([0.5], [0, 0]))),
                        (10.0, _sample(300, {"stop": 30}, h([0.5], [0, 30]), kv=0.6))], 10.0, 10.0)
    merged = merge_stats([one, two])
    assert merged.increases["generation_tokens"] == 400
    assert merged.histograms["ttft"].cumulative == (10, 40)
    assert merged.gauges["kv_cache_usage"] == pytest.approx(0.4)
    assert merged.gauges["running"] == 6.0
