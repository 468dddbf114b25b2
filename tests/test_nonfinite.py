"""NaN and infinity stop at the door (issue 19): a non-finite sample in a series the monitor judges by
is a bad sample of that series, named and counted; it never reaches windows, SLO sums, scaling or
JSON, and the rest of the page and of the fleet is judged as without it."""

from __future__ import annotations

import json
import math
import re
import time

import pytest

from monitor.collect.promql import PrometheusSource
from monitor.collect.scraper import Scraper, Target, _Fetched
from monitor.collect.vllm import PageError, parse_page, read_page
from monitor.config import validate
from monitor.decide.scaling import (
    MAX_REPLICAS,
    PoolScaler,
    ScalingSignals,
    hpa_replicas,
    scaling_signals,
)
from monitor.evaluate.slo import EventSeries, count_events
from monitor.evaluate.slo.events import Events
from monitor.evaluate.slo.track import SloKey, SloTrack
from monitor.evaluate.windows import instance_figures, stats_over
from monitor.publish.finite_json import FiniteJSONResponse
from monitor.samples import DUPLICATE, NON_FINITE, Histogram, ModelSample
from monitor.service import create_app
from monitor.settings import ErrorRatioIndicator, ScalingSettings
from tests.helpers.asgi_client import AUTH, Client
from tests.helpers.vllm_pages import FakeVllmV1

HEALTHY = 'vllm:num_requests_running{model_name="m"} 3\n'


def _set(page: str, line_start: str, value: str, *, containing: str = "") -> str:
    """`page` with the value of every sample line starting with `line_start` (and holding
    `containing`) replaced by `value`."""
    pattern = re.compile(rf"^({re.escape(line_start)}[^\n]*{re.escape(containing)}[^\n]*?) \S+$", re.MULTILINE)
    out, n = pattern.subn(rf"\1 {value}", page)
    assert n, f"no line {line_start}...{containing}"
    return out


def poisoned(page: str) -> str:
    """The page of the issue: NaN finished counter, NaN TTFT count/sum/bucket, +Inf KV usage."""
    page = _set(page, "vllm:request_success_total{", "NaN", containing='finished_reason="stop"')
    page = _set(page, "vllm:time_to_first_token_seconds_count{", "NaN")
    page = _set(page, "vllm:time_to_first_token_seconds_sum{", "NaN")
    page = _set(page, "vllm:time_to_first_token_seconds_bucket{", "NaN", containing='le="0.5"')
    return _set(page, "vllm:kv_cache_usage_perc{", "+Inf")


# -- the page ---------------------------------------------------------------------------------------

def test_a_nan_sample_is_named_and_its_key_left_out_while_the_rest_of_the_page_is_read():
    fake = FakeVllmV1(models=("m",), seed=1)
    fake.finish(20)
    fake.set_load(4, 2, 0.5)
    page = read_page(poisoned(fake.render()))
    [sample] = page.models
    assert sorted(str(b) for b in page.bad) == [
        "bad sample: vllm:kv_cache_usage_perc = +Inf",
        "bad sample: vllm:request_success_total = NaN",
        "bad sample: vllm:time_to_first_token_seconds_bucket = NaN",
    ]
    assert {b.kind for b in page.bad} == {NON_FINITE}
    assert sample.refused == {"ttft", "finished", "kv_cache_usage"}
    assert "ttft" not in sample.histograms and sample.finished == {} and "kv_cache_usage" not in sample.gauges
    # everything else of the page is read as before
    assert sample.gauges["running"] == 4.0 and sample.counters["generation_tokens"] == 400.0
    assert sample.histograms["e2e"].count == 20.0


def test_nothing_a_page_can_hold_puts_a_non_finite_number_into_a_sample():
    fake = FakeVllmV1(models=("m",), seed=1)
    fake.finish(20)
    page = fake.render()
    for value in ("NaN", "+Inf", "-Inf"):
        for name in ("vllm:num_requests_running{", "vllm:prompt_tokens_total{", "vllm:e2e_request_latency_seconds_sum{"):
            [sample] = parse_page(_set(page, name, value))
            numbers = [*sample.counters.values(), *sample.gauges.values(), *sample.finished.values()]
            for hist in sample.histograms.values():
                numbers += [*hist.cumulative, hist.sum, hist.count, *hist.bounds[:-1]]
            assert all(math.isfinite(x) for x in numbers), (value, name)


def test_an_inf_bucket_label_is_a_label_not_a_bad_sample():
    page = ('vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="m"} 3\n'
            'vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 4\n'
            'vllm:time_to_first_token_seconds_count{model_name="m"} 4\n'
            'vllm:time_to_first_token_seconds_sum{model_name="m"} 1.5\n')
    read = read_page(page)
    assert read.bad == () and read.models[0].histograms["ttft"].bounds == (0.5, math.inf)


@pytest.mark.parametrize("le", ["NaN", "-Inf", "nan"])
def test_a_bucket_bound_that_is_not_a_number_or_plus_inf_is_a_malformed_page(le):
    page = (f'vllm:time_to_first_token_seconds_bucket{{le="{le}",model_name="m"}} 3\n'
            'vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 4\n')
    with pytest.raises(PageError, match="without a valid le label"):
        parse_page(page)


def test_a_sum_over_engines_past_the_float_range_is_a_bad_sample():
    page = ('vllm:prompt_tokens_total{engine="0",model_name="m"} 1.7e308\n'
            'vllm:prompt_tokens_total{engine="1",model_name="m"} 1.7e308\n' + HEALTHY)
    read = read_page(page)
    assert "prompt_tokens" not in read.models[0].counters and read.models[0].refused == {"prompt_tokens"}
    assert [str(b) for b in read.bad] == ["bad sample: vllm:prompt_tokens_total = +Inf"]


def test_a_page_whose_every_judged_series_is_nan_is_a_vllm_page_with_nothing_known():
    read = read_page('vllm:num_requests_running{model_name="m"} NaN\n')
    assert read.models[0].gauges == {} and read.models[0].refused == {"running"} and len(read.bad) == 1


def test_a_repeated_series_keeps_the_first_and_only_a_different_value_is_named():
    page = ('vllm:num_requests_running{model_name="m",engine="0"} 3\n'
            'vllm:num_requests_running{engine="0",model_name="m"} 5\n'  # same series, labels reordered
            'vllm:num_requests_waiting{model_name="m"} 2\n'
            'vllm:num_requests_waiting{model_name="m"} 2\n')  # same value: nothing to say, read once
    read = read_page(page)
    assert read.models[0].gauges == {"running": 3.0, "waiting": 2.0}
    assert [(b.kind, str(b)) for b in read.bad] == [
        (DUPLICATE, 'duplicate sample: vllm:num_requests_running{engine="0"} = 5.0 dropped (the first one kept)')]


def test_a_repeated_bucket_is_read_once():
    page = ('vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="m"} 3\n'
            'vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="m"} 3\n'
            'vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 4\n')
    assert parse_page(page)[0].histograms["ttft"].cumulative == (3.0, 4.0)


# -- the Prometheus source -------------------------------------------------------------------------

async def test_prometheus_answers_holding_nan_and_inf_are_refused_as_on_a_page():
    """Prometheus stores NaN/±Inf as scraped and answers them as the strings "NaN", "+Inf"."""
    source = PrometheusSource("http://127.0.0.1:9", timeout=1.0)
    target = Target("p", "http://10.0.0.1:8000")
    at = time.time()

    def series(name: str, value: str, **labels: str) -> dict:
        return {"metric": {"__name__": name, "instance": "10.0.0.1:8000", **labels}, "value": [at, value]}

    answer = [
        series("up", "1"), series("scrape_duration_seconds", "NaN"),
        {"metric": {"instance": "10.0.0.1:8000", "slo_monitor_series": "scrape_timestamp"}, "value": [at, str(at)]},
        series("vllm:kv_cache_usage_perc", "+Inf", model_name="m"),
        series("vllm:num_requests_running", "2", model_name="m"),
        series("vllm_num_requests_waiting", "7", model_name="m"),  # stored by Prometheus 2.x from an escaped page
    ]
    try:
        [result] = source._results([target], answer, at, 0.01)
    finally:
        await source.aclose()
    assert result.ok and result.duration_s == 0.0
    [sample] = result.models
    assert sample.gauges == {"running": 2.0, "waiting": 7.0} and sample.refused == {"kv_cache_usage"}
    assert [str(b) for b in result.bad_samples] == ["bad sample: vllm:kv_cache_usage_perc = +Inf"]


# -- windows, events, SLO sums ------------------------------------------------------------------------

def _sample(finished: float | None, tokens: float | None, refused: frozenset[str] = frozenset()) -> ModelSample:
    return ModelSample("m", counters={} if tokens is None else {"generation_tokens": tokens},
                       finished={} if finished is None else {"stop": finished}, refused=refused)


def test_a_scrape_whose_finished_counts_were_refused_is_stepped_over_not_read_as_a_reset():
    points = [(0.0, _sample(100.0, 1000.0)), (5.0, _sample(None, None, frozenset({"finished", "generation_tokens"}))),
              (10.0, _sample(110.0, 1100.0))]
    stats = stats_over(points)
    assert stats is not None
    assert stats.finished == {"stop": 10.0}  # not 110 (a reset from the missing reading)
    assert stats.increases == {"generation_tokens": 100.0}


def test_figures_past_the_float_range_are_not_known():
    points = [(0.0, _sample(-1.7e308, 0.0)), (5.0, _sample(1.7e308, 1.7e308))]
    stats = stats_over(points)
    figures = instance_figures(stats)
    assert all(v is None or math.isfinite(v) for v in figures.values())
    assert figures["requests_per_s"] is None


def test_events_that_are_not_finite_are_no_events():
    big = Histogram((0.5, math.inf), (1.7e308, 1.7e308), 0.0, 1.7e308)
    points = [(0.0, ModelSample("m", finished={"stop": -1.7e308, "error": 0.0})),
              (5.0, ModelSample("m", histograms={"ttft": big}, finished={"stop": 1.7e308, "error": 1.7e308}))]
    events = count_events(ErrorRatioIndicator(type="error_ratio"), stats_over(points))
    assert math.isfinite(events.good) and math.isfinite(events.total)


def test_the_event_series_drops_what_is_not_finite_instead_of_keeping_it_for_the_whole_window():
    series = EventSeries(3600.0)
    series.add(60.0, 9.0, 10.0)
    for good, total in ((math.nan, 10.0), (1.0, math.inf), (math.nan, math.nan), (2.0**41, 2.0**41)):
        series.add(90.0, good, total)
        series.set_minute(90.0, good, total)
    assert series.window(120.0, 600.0) == (9.0, 10.0)
    restored = EventSeries.from_rows([(60, 9.0, 10.0), (120, math.nan, 5.0), (180, 1.0, math.inf)], 3600.0)
    assert restored.rows() == [(60, 9.0, 10.0)]


def test_an_slo_track_files_only_finite_events_and_clamps_good_into_the_total():
    from monitor.settings import SloConfig

    config = SloConfig.model_validate({"name": "errors", "indicator": {"type": "error_ratio"}, "objective": 0.99})
    track = SloTrack(SloKey("errors", "p"), config, keep_rows=False)
    track.file(0.0, 5.0, Events(math.nan, 10.0))
    track.file(0.0, 5.0, Events(1.0, math.inf))
    track.file(5.0, 10.0, Events(-3.0, 10.0))  # a hostile page's buckets: bad, not a ValueError
    assert track.series.window(60.0, 60.0) == (0.0, 10.0)


# -- scaling --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_hpa_replicas_holds_on_a_value_that_is_not_a_number(value):
    assert hpa_replicas(3, value, 0.8, 0.1) == 3
    assert hpa_replicas(0, value, 5.0, 0.1) == 0


def test_hpa_replicas_never_goes_past_what_kubernetes_can_hold():
    assert hpa_replicas(2, 1e300, 1e-300, 0.1) == 2  # the ratio itself is infinite: hold
    assert hpa_replicas(2, 1e300, 1.0, 0.1) == MAX_REPLICAS


def test_a_recommendation_from_infinite_signals_holds_and_names_no_infinite_figure():
    scaler = PoolScaler("p", ScalingSettings())
    signals = ScalingSignals(replicas_reporting=2, requests_waiting=math.inf, kv_cache_usage=math.nan,
                             ttft_p99_s=math.inf, requests=100.0, ttft_burn_rate=math.inf)
    decision = scaler.recommend(2, signals, now=1000.0)
    assert decision.desired_replicas == 2 and decision.signals["metrics"] == {}
    json.dumps(decision.to_json(), allow_nan=False)


def test_scaling_signals_from_windows_past_the_float_range_are_not_known():
    from monitor.evaluate.windows import WindowStats

    stats = [WindowStats(0.0, 5.0, gauges={"waiting": 1.7e308, "kv_cache_usage": 0.5}),
             WindowStats(0.0, 5.0, gauges={"waiting": 1.7e308, "kv_cache_usage": 0.5})]
    signals = scaling_signals(stats)
    assert signals.requests_waiting_for_scaling is None and signals.requests_waiting is None


# -- JSON -----------------------------------------------------------------------------------------

def test_a_json_answer_holding_nan_writes_null_instead_of_failing():
    body = FiniteJSONResponse({"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": "NaN"}).body
    assert json.loads(body) == {"a": None, "b": [1.0, None, {"c": None}], "d": "NaN"}
    assert FiniteJSONResponse({"a": 1.5}).body == b'{"a":1.5}'


# -- the service: a poisoned instance beside healthy ones ----------------------------------------------

CONFIG = validate({
    "pools": [{"name": "chat", "targets": ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]}],
    "slos": [{"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99%"},
             {"name": "ttft", "indicator": {"type": "latency", "metric": "ttft", "threshold": "500ms"},
              "objective": "99%"},
             {"name": "kv", "indicator": {"type": "saturation", "metric": "kv_cache_usage", "threshold": 0.9},
              "objective": "99%"}],
    "api": {"token": "s3cret"},
}).config


def test_a_poisoned_instance_is_named_and_counted_and_the_fleet_is_judged_and_paged_without_it():
    app = create_app(CONFIG, store=None)  # no lifespan: the test feeds the service, as a cycle does
    service = app.state.service
    healthy, sick = FakeVllmV1(models=("m",), seed=1), FakeVllmV1(models=("m",), seed=2)
    healthy.set_load(4, 1, 0.5)
    sick.set_load(4, 1, 0.5)
    targets = [Target("chat", "http://10.0.0.1:8000"), Target("chat", "http://10.0.0.2:8000")]
    start = time.time() - 60.0
    cycles = 7
    for k in range(cycles):
        healthy.finish(40)
        healthy.finish(10, reason="error")  # 20% errors: burns a 99% budget 20x, a page
        sick.finish(50)
        t = start + 5.0 * k
        pages = [healthy.render(), poisoned(sick.render()) + 'vllm:num_requests_running{engine="0",model_name="m"} 9\n']
        results = [Scraper._finish(_Fetched(target, t, 0.01, page.encode(), None, None, 200, None))
                   for target, page in zip(targets, pages)]
        service.fleet.ingest(results)
        service.evaluate_slos(results)
        service.fleet.last_cycle_at = t
        service.decide(t)
    client = Client(app)

    answer = client.get("/api/v1/instances", headers=AUTH)
    assert answer.status_code == 200
    rows = {r["instance"]: r for r in json.loads(answer.text, parse_constant=_refuse)}
    sick_row, healthy_row = rows["10.0.0.2:8000"], rows["10.0.0.1:8000"]
    assert "bad sample: vllm:kv_cache_usage_perc = +Inf" in sick_row["reasons"]
    assert "bad sample: vllm:request_success_total = NaN" in sick_row["reasons"]
    assert any(r.startswith("duplicate sample: vllm:num_requests_running") for r in sick_row["reasons"])
    assert sick_row["scrape"]["bad_samples"] and sick_row["scrape"]["error"] is None
    assert sick_row["metrics"]["kv_cache_usage"] is None and sick_row["metrics"]["error_ratio"] is None
    assert sick_row["metrics"]["ttft_p99_s"] is None and sick_row["metrics"]["requests_running"] == 4.0
    assert healthy_row["reasons"] == [] or not any("bad sample" in r for r in healthy_row["reasons"])
    assert healthy_row["metrics"]["error_ratio"] == pytest.approx(0.2)

    answer = client.get("/api/v1/slos", headers=AUTH)
    assert answer.status_code == 200
    slos = {s["name"]: s for s in json.loads(answer.text, parse_constant=_refuse)}
    errors = slos["errors"]
    assert errors["total"] == 50.0 * (cycles - 1)  # the healthy instance's requests; the sick one's are unknown
    assert errors["sli"] == pytest.approx(0.8) and errors["alert"] == "page"
    assert all(v is not None and math.isfinite(v) for v in errors["burn_rates"].values())
    assert slos["kv"]["sli"] == 1.0 and slos["ttft"]["sli"] is not None

    answer = client.get("/api/v1/pools/chat/scaling", headers=AUTH)
    assert answer.status_code == 200 and answer.json()["desired_replicas"] >= 1

    text = client.get("/metrics").text
    # three non-finite series and one repeated with another value, every cycle
    assert f'slo_monitor_bad_samples_total{{instance="10.0.0.2:8000",pool="chat"}} {4.0 * cycles}' in text
    assert 'slo_monitor_bad_samples_total{instance="10.0.0.1:8000",pool="chat"} 0.0' in text


def _refuse(constant: str) -> None:
    raise AssertionError(f"{constant} in a JSON answer")
