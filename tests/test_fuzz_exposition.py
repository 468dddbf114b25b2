"""The page reader fuzzed for OpenMetrics and for non-finite values (issue 19), in the style of
tests/test_fault_fuzz.py (which holds the text-format properties).

* Valid OpenMetrics 1.0 pages, as generated here, read exactly as prometheus_client's OpenMetrics
  parser reads them (exemplars, `_created`, timestamps in float seconds, # UNIT, info families).
* Anything shaped like an OpenMetrics page, damaged: only ExpositionError / PageError escape.
* Pages with NaN, ±Inf and values at the edge of the float range in any series the monitor judges
  by: nothing non-finite comes out of parse_page, and the windows, figures, SLO events and sums and
  the scaling recommendation built from a run of such pages stay finite and raise nothing.

Runs are bounded (a few hundred examples each, no deadline: the CI machine may be busy).
"""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from monitor.collect.exposition import ExpositionError, samples
from monitor.collect.vllm import PageError, parse_page
from monitor.decide.scaling import PoolScaler, scaling_signals
from monitor.evaluate.slo import EventSeries, count_events
from monitor.evaluate.slo.track import SloKey, SloTrack
from monitor.evaluate.windows import instance_figures, merge_stats, stats_over
from monitor.settings import ScalingSettings, SloConfig
from tests.helpers.exposition_pages import openmetrics_pages

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# -- valid OpenMetrics pages ------------------------------------------------------------------------

metric_tail = st.from_regex(r"[a-z0-9_]{0,10}", fullmatch=True)
vllm_name = st.builds(lambda first, tail: "vllm:" + first + tail, st.sampled_from("abkz"), metric_tail)
label_name = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: not n.startswith("__") and n not in ("le", "quantile"))
label_value = st.text(st.characters(exclude_categories=("Cs",)), max_size=10) | st.sampled_from(
    ['', '"', '\\', '\n', '}', '{', ',', '=', ' # {a="b"} 1', 'x\\y\nz', '\u2028'])
finite = st.floats(allow_nan=False, allow_infinity=False)
non_negative = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}" if labels else ""


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


@st.composite
def exemplar(draw) -> str:
    if not draw(st.booleans()):
        return ""
    labels = draw(st.dictionaries(st.sampled_from(["trace_id", "span_id"]), st.from_regex(r"[0-9a-f]{1,16}", fullmatch=True),
                                  max_size=2))
    text = f" # {_labels(labels) or '{}'} {_number(draw(finite))}"
    if draw(st.booleans()):
        text += f" {_number(draw(st.floats(0, 2e9)))}"
    return text


@st.composite
def stamp(draw) -> str:
    return f" {_number(draw(st.floats(0, 2e9)))}" if draw(st.integers(0, 3)) == 0 else ""


@st.composite
def om_family(draw, name: str) -> list[str]:
    """Metadata and samples of one family as OpenMetrics 1.0 allows them (what prometheus_client's
    strict parser accepts: counters and buckets non-negative and not NaN, buckets cumulative)."""
    kind = draw(st.sampled_from(["counter", "gauge", "histogram", "info", "unknown", "summary"]))
    lines = []
    if draw(st.booleans()):
        lines.append(f"# HELP {name} {_escape(draw(st.text(max_size=12)))}")
    lines.append(f"# TYPE {name} {kind}")
    if kind in ("counter", "gauge", "histogram", "summary") and draw(st.integers(0, 3)) == 0:
        unit = draw(st.sampled_from(["seconds", "tokens"]))
        if not name.endswith("_" + unit):
            lines = [line.replace(name, name + "_" + unit) for line in lines]
            name += "_" + unit
        lines.append(f"# UNIT {name} {unit}")
    label_sets = draw(st.lists(st.dictionaries(label_name, label_value, max_size=2), min_size=1, max_size=2,
                               unique_by=lambda d: tuple(sorted(d.items()))))
    for labels in label_sets:
        if kind == "counter":
            created = draw(st.booleans())  # a timestamp on all of a series' samples or on none
            lines.append(f"{name}_total{_labels(labels)} {_number(draw(non_negative))}"
                         f"{'' if created else draw(stamp())}{draw(exemplar())}")
            if created:
                lines.append(f"{name}_created{_labels(labels)} {_number(draw(st.floats(0, 2e9)))}")
        elif kind == "gauge":
            value = draw(finite | st.sampled_from([math.nan, math.inf, -math.inf]))
            lines.append(f"{name}{_labels(labels)} {_number(value)}{draw(stamp())}")
        elif kind == "unknown":
            lines.append(f"{name}{_labels(labels)} {_number(draw(finite))}")
        elif kind == "info":
            lines.append(f"{name}_info{_labels(labels)} 1")
        elif kind == "summary":
            lines.append(f"{name}{_labels({**labels, 'quantile': '0.99'})} {_number(draw(non_negative))}")
            lines.append(f"{name}_sum{_labels(labels)} {_number(draw(non_negative))}")
            lines.append(f"{name}_count{_labels(labels)} {draw(st.integers(0, 10**9))}")
        else:
            bounds = sorted(set(draw(st.lists(finite, max_size=3))))
            counts = sorted(draw(st.lists(st.integers(0, 10**12), min_size=len(bounds) + 1, max_size=len(bounds) + 1)))
            for le, count in zip([*(repr(b) for b in bounds), "+Inf"], counts):
                lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {count}{draw(exemplar())}")
            if not bounds or bounds[0] >= 0:  # _count and _sum go together, and not with negative buckets
                lines.append(f"{name}_count{_labels(labels)} {counts[-1]}")
                lines.append(f"{name}_sum{_labels(labels)} {_number(draw(non_negative))}")
            if draw(st.booleans()):
                lines.append(f"{name}_created{_labels(labels)} {_number(draw(st.floats(0, 2e9)))}")
    return lines


@st.composite
def openmetrics_page(draw) -> str:
    names = draw(st.lists(vllm_name, min_size=1, max_size=4, unique=True))
    # no family may be the prefix of another (their samples' names would clash)
    names = [n for n in names if not any(n != o and n.startswith(o) for o in names)]
    blocks = [draw(om_family(n)) for n in names]
    blocks.append(["# TYPE process_cpu_seconds counter", "process_cpu_seconds_total 12.5"])
    blocks = draw(st.permutations(blocks))
    return "\n".join(line for block in blocks for line in block) + "\n# EOF\n"


def _key(value: float) -> object:
    return "nan" if math.isnan(value) else value


def reference(text: str) -> list[tuple]:
    return sorted(((s.name, tuple(sorted(s.labels.items())), _key(s.value))
                   for family in openmetrics_families(text) for s in family.samples if s.name.startswith("vllm:")),
                  key=repr)


def ours(text: str) -> list[tuple]:
    return sorted(((n, tuple(sorted(labels.items())), _key(v)) for n, labels, v in samples(text)), key=repr)


@FUZZ
@given(openmetrics_page())
@example('# TYPE vllm:a counter\nvllm:a_total{x="1"} 151.0 # {trace_id="4bf9"} 0.087 1795342661.5\n# EOF\n')
@example('# TYPE vllm:h histogram\nvllm:h_bucket{le="+Inf"} 0.0 # {} 1\nvllm:h_count 0.0\nvllm:h_sum 0.0\n# EOF\n')
def test_valid_openmetrics_pages_read_exactly_as_prometheus_clients_openmetrics_parser(page: str) -> None:
    assert ours(page) == reference(page)


# -- damaged OpenMetrics pages: only the declared errors ----------------------------------------------

BASE = [om for _, (_, om) in sorted(openmetrics_pages().items()) if len(om) < 40_000][:3]
TOKENS = ["# EOF", "# {", ' # {trace_id="a"} 1', " # ", "#", "{", "}", '"', "\\", "=", ",", " ", "\t", "\n", "\r",
          "_total", "_created", "+Inf", "NaN", "-Inf", "1e308", "1e999", "1795342661.5", "1.5.5", "# UNIT x y",
          "# TYPE vllm:x info", "vllm:", "vllm_", "le", "\x00", "\ufeff", "\u2028", "1" * 3000]


@st.composite
def damaged_page(draw) -> str:
    text = draw(st.sampled_from(BASE))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["delete", "insert", "replace", "cut"]))
        token = draw(st.sampled_from(TOKENS))
        if op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
        elif op == "insert":
            text = text[:at] + token + text[at:]
        elif op == "replace":
            text = text[:at] + token + text[at + len(token):]
        else:
            text = text[:at]
    return text


any_page = damaged_page() | openmetrics_page() | st.lists(st.sampled_from(TOKENS) | st.text(max_size=5),
                                                          max_size=40).map("".join)


@FUZZ
@given(any_page)
@example('vllm:x 1 # {a="b"} 1 # {a="c"} 2\n')
@example('vllm:x{a="1"} 1 #\n')
@example('vllm:x 1 # {' + 'a="b",' * 2000 + '} 1\n')
def test_the_sample_reader_raises_only_exposition_errors_on_any_openmetrics_shaped_text(text: str) -> None:
    try:
        for name, labels, value in samples(text):
            assert name.startswith("vllm:") and isinstance(labels, dict) and isinstance(value, float)
    except ExpositionError:
        pass


@FUZZ
@given(any_page)
def test_parse_page_raises_only_page_errors_on_any_openmetrics_shaped_text(text: str) -> None:
    try:
        result = parse_page(text)
    except PageError as exc:
        assert str(exc)
    else:
        assert result and all(_finite_sample(s) for s in result)


# -- non-finite values: nothing comes out, downstream stays finite --------------------------------------

# every family the normaliser reads, one model and two engines where it sums them; {v} is drawn per line
TEMPLATE = [
    'vllm:time_to_first_token_seconds_bucket{{engine="{e}",le="0.1",model_name="m"}} {v}',
    'vllm:time_to_first_token_seconds_bucket{{engine="{e}",le="0.5",model_name="m"}} {v}',
    'vllm:time_to_first_token_seconds_bucket{{engine="{e}",le="+Inf",model_name="m"}} {v}',
    'vllm:time_to_first_token_seconds_count{{engine="{e}",model_name="m"}} {v}',
    'vllm:time_to_first_token_seconds_sum{{engine="{e}",model_name="m"}} {v}',
    'vllm:e2e_request_latency_seconds_bucket{{le="1.0",model_name="m"}} {v}',
    'vllm:e2e_request_latency_seconds_bucket{{le="+Inf",model_name="m"}} {v}',
    'vllm:request_success_total{{engine="{e}",finished_reason="stop",model_name="m"}} {v}',
    'vllm:request_success_total{{engine="{e}",finished_reason="error",model_name="m"}} {v}',
    'vllm:prompt_tokens_total{{engine="{e}",model_name="m"}} {v}',
    'vllm:generation_tokens_total{{engine="{e}",model_name="m"}} {v}',
    'vllm:iteration_tokens_total_count{{engine="{e}",model_name="m"}} {v}',
    'vllm:admission_rejections_total{{reason="max_num_queued_reqs",model_name="m"}} {v}',
    'vllm:num_requests_running{{engine="{e}",model_name="m"}} {v}',
    'vllm:num_requests_waiting{{engine="{e}",model_name="m"}} {v}',
    'vllm:num_requests_waiting_by_reason{{reason="capacity",model_name="m"}} {v}',
    'vllm:kv_cache_usage_perc{{engine="{e}",model_name="m"}} {v}',
    'vllm:engine_sleep_state{{engine="{e}",sleep_state="awake",model_name="m"}} {v}',
    'vllm:prompt_tokens_by_source_total{{source="local_compute",model_name="m"}} {v}',
]
hostile = (st.sampled_from(["NaN", "+Inf", "-Inf", "nan", "1.7e308", "-1.7e308", "1e-320", "0", "-1", "5"])
           | finite.map(repr) | st.integers(-10**6, 10**6).map(str))


@st.composite
def hostile_page(draw) -> str:
    lines = []
    for line in TEMPLATE:
        for engine in ("0", "1") if "{e}" in line else ("",):
            if draw(st.integers(0, 9)):  # now and then a series is missing
                lines.append(line.format(e=engine, v=draw(hostile)))
    fmt = draw(st.sampled_from(["text", "openmetrics"]))
    return "\n".join(lines) + ("\n# EOF\n" if fmt == "openmetrics" else "\n")


def _finite_sample(sample) -> bool:
    numbers = [*sample.counters.values(), *sample.gauges.values(), *sample.finished.values()]
    for hist in sample.histograms.values():
        numbers += [*hist.cumulative, hist.sum, hist.count, *hist.bounds[:-1]]
    return all(math.isfinite(x) for x in numbers)


@FUZZ
@given(hostile_page())
def test_nothing_non_finite_comes_out_of_parse_page(page: str) -> None:
    try:
        result = parse_page(page)
    except PageError:
        return
    assert all(_finite_sample(s) for s in result)


SLOS = [SloConfig.model_validate({"name": "s", "indicator": indicator, "objective": 0.99}) for indicator in (
    {"type": "latency", "metric": "ttft", "threshold": "300ms"},
    {"type": "latency", "metric": "e2e", "threshold": "1s"},
    {"type": "error_ratio"},
    {"type": "saturation", "metric": "kv_cache_usage", "threshold": 0.9},
)]


@FEW
@given(st.lists(hostile_page(), min_size=2, max_size=4), st.lists(st.floats(0.001, 60.0), min_size=4, max_size=4))
def test_windows_figures_slo_sums_and_scaling_stay_finite_over_a_run_of_hostile_pages(pages, gaps) -> None:
    points, t = [], 1.8e9
    for page, gap in zip(pages, gaps):
        t += gap
        try:
            [sample] = parse_page(page)
        except PageError:
            continue
        points.append((t, sample))
    if len(points) < 2:
        return
    stats = stats_over(points)
    assert stats is not None
    figures = instance_figures(stats)
    assert all(v is None or math.isfinite(v) for v in figures.values()), figures
    merged = merge_stats([stats, stats])
    assert all(v is None or math.isfinite(v) for v in instance_figures(merged).values())
    series = EventSeries(3600.0)
    for config in SLOS:
        track = SloTrack(SloKey("s", "p"), config, keep_rows=False)
        for (t0, a), (t1, b) in zip(points, points[1:]):
            events = count_events(config.indicator, stats_over([(t0, a), (t1, b)]))
            assert math.isfinite(events.good) and math.isfinite(events.total)
            track.file(t0, t1, events)
            if 0 <= events.good <= events.total:
                series.add_events((t0 + t1) / 2, events)
        good, total = track.series.window(points[-1][0] + 60, 3600.0)
        assert math.isfinite(good) and math.isfinite(total)
    assert all(math.isfinite(x) for x in series.window(points[-1][0] + 60, 3600.0))
    scaler = PoolScaler("p", ScalingSettings())
    decision = scaler.recommend(3, scaling_signals([stats, stats], burn_rate=None), now=t)
    assert isinstance(decision.desired_replicas, int)
    json.dumps(decision.to_json(), allow_nan=False)
