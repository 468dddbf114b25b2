"""The window figures that lean on what ingest learnt of each series (FleetView's SeriesLog: resets and
whole-number counters noted once, bounds by binary search) answer exactly as the pair-by-pair rules
they replaced, kept here as the reference: over generated series with resets, bounds changes, keys
absent or refused in some scrapes, counts that are not whole, past 2**53 or past the float range, and
clocks that step back; windows of every length, cut by `since`, and minute rollups."""

from __future__ import annotations

import math
from operator import le, sub
from typing import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.evaluate.fleet import FleetView, minute_floor
from monitor.evaluate.windows import WindowStats, add_histograms, quantile, window_start
from monitor.samples import Histogram, ModelSample, ScrapeResult

# --- the reference: monitor/evaluate/windows.py before issue 21, word for word ------------------------


def ref_counter_increase(values: Sequence[float]) -> float:
    total = 0.0
    for previous, current in zip(values, values[1:]):
        total += current - previous if current >= previous else current
    return total


def ref_is_reset(previous: Histogram, current: Histogram) -> bool:
    if (previous.bounds is not current.bounds and previous.bounds != current.bounds) or current.count < previous.count:
        return True
    return not all(map(le, previous.cumulative, current.cumulative))


def ref_histogram_increase(readings: Sequence[Histogram]) -> Histogram | None:
    if len(readings) < 2:
        return None
    if not any(ref_is_reset(p, c) for p, c in zip(readings, readings[1:])):
        first, last = readings[0], readings[-1]
        return Histogram(last.bounds, tuple(map(sub, last.cumulative, first.cumulative)), last.sum - first.sum,
                         last.count - first.count)
    bounds = readings[0].bounds
    cumulative = [0.0] * len(bounds)
    total_sum = total_count = 0.0
    delta_cum: Sequence[float]
    for previous, current in zip(readings, readings[1:]):
        if ref_is_reset(previous, current):
            if current.bounds != bounds:
                bounds = current.bounds
                cumulative = [0.0] * len(bounds)
                total_sum = total_count = 0.0
            delta_cum, delta_sum, delta_count = current.cumulative, current.sum, current.count
        else:
            delta_cum = [c - p for p, c in zip(previous.cumulative, current.cumulative)]
            delta_sum, delta_count = current.sum - previous.sum, current.count - previous.count
        cumulative = [a + d for a, d in zip(cumulative, delta_cum)]
        total_sum += delta_sum
        total_count += delta_count
    return Histogram(tuple(bounds), tuple(cumulative), total_sum, total_count)


def ref_select_window(times: Sequence[float], now: float, window: float,
                      since: float | None = None) -> tuple[int, int] | None:
    last = max((i for i, t in enumerate(times) if t <= now), default=None)
    if last is None:
        return None
    start = window_start(now, window, since)
    first = max((i for i, t in enumerate(times[: last + 1]) if t <= start), default=0)
    return (first, last) if last > first else None


def ref_window_stats(points: Sequence[tuple[float, ModelSample]], now: float, window: float,
                     since: float | None = None) -> WindowStats | None:
    chosen = ref_select_window([t for t, _ in points], now, window, since)
    if chosen is None:
        return None
    first, last = chosen
    return ref_stats_over(points[first : last + 1])


def ref_finite_histogram(hist: Histogram) -> bool:
    return math.isfinite(hist.sum + hist.count + sum(hist.cumulative))


def ref_stats_over(used: Sequence[tuple[float, ModelSample]]) -> WindowStats | None:
    if len(used) < 2:
        return None
    samples = [s for _, s in used]
    histograms: dict[str, Histogram] = {}
    for key in samples[-1].histograms:
        readings = [s.histograms[key] for s in samples if key in s.histograms]
        delta = ref_histogram_increase(readings)
        if delta is not None and ref_finite_histogram(delta):
            histograms[key] = delta
    increases = {}
    for key in samples[-1].counters:
        increase = ref_counter_increase([s.counters[key] for s in samples if key in s.counters])
        if math.isfinite(increase):
            increases[key] = increase
    counted = [s for s in samples if "finished" not in s.refused]
    finished = {
        reason: ref_counter_increase([s.finished.get(reason, 0.0) for s in counted])
        for reason in samples[-1].finished
    }
    if not math.isfinite(sum(finished.values())):
        finished = {}
    return WindowStats(used[0][0], used[-1][0], histograms, increases, finished, dict(samples[-1].gauges),
                       dict(samples[-1].sources))


def ref_add_histograms(a: Histogram | None, b: Histogram | None) -> Histogram | None:
    if a is None:
        return b
    if b is None:
        return a
    if a.bounds != b.bounds:
        return None
    return Histogram(a.bounds, tuple(x + y for x, y in zip(a.cumulative, b.cumulative)),
                     a.sum + b.sum, a.count + b.count)


def ref_quantile(q: float, hist: Histogram | None) -> float | None:
    if hist is None or not hist.cumulative:
        return None
    total = hist.cumulative[-1]
    if total <= 0 or not 0.0 <= q <= 1.0:
        return None
    rank = q * total
    index = next((i for i, c in enumerate(hist.cumulative[:-1]) if c >= rank), len(hist.cumulative) - 1)
    if math.isinf(hist.bounds[index]):
        return hist.bounds[index - 1] if index > 0 else None
    upper = hist.bounds[index]
    lower = hist.bounds[index - 1] if index > 0 else 0.0
    below = hist.cumulative[index - 1] if index > 0 else 0.0
    if index == 0 and upper <= 0:
        return upper
    in_bucket = hist.cumulative[index] - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


def ref_rollup(series: Sequence[tuple[float, ModelSample]], minute_start: float) -> WindowStats | None:
    end = minute_start + 60.0
    before = [p for p in series if p[0] < minute_start][-1:]
    stats = ref_stats_over(before + [p for p in series if minute_start <= p[0] < end])
    return stats if stats is not None and stats.end >= minute_start else None


# --- generated series -----------------------------------------------------------------------------------

BOUNDS = ((0.1, 0.5, 1.0, math.inf), (0.25, 1.0, math.inf))
HIST_KEYS = ("ttft", "e2e")
COUNTER_KEYS = ("generation_tokens", "prompt_tokens")
REASONS = ("stop", "length", "error")
MODEL = "m"
INSTANCE = "10.0.0.1:8000"


HIST_STEPS = ("restart", "bounds", "copy", "odd", "huge")
COUNTER_STEPS = ("restart", "copy", "fraction", "ceil", "past_2_53", "huge", "negative", "int")
FINISHED_STEPS = ("absent", "restart", "fraction", "ceil")
PRESENCE = ("absent", "refused")


def steps(allowed: frozenset[str], usual: str) -> st.SearchStrategy[str]:
    """Mostly the usual step; the series' anomalies now and then."""
    return st.sampled_from([usual] * 6 + sorted(allowed))


@st.composite
def histogram_after(draw: st.DrawFn, previous: Histogram | None, allowed: frozenset[str]) -> Histogram:
    """The next reading of a histogram: more observations mostly, else a restart, new bounds or a hostile one."""
    step = draw(steps(allowed, "add"))
    if previous is None or step == "bounds":
        bounds = draw(st.sampled_from(BOUNDS))
        previous = Histogram(bounds if draw(st.booleans()) else tuple(bounds), (0.0,) * len(bounds), 0.0, 0.0)
    if step == "restart":
        previous = Histogram(previous.bounds, (0.0,) * len(previous.bounds), 0.0, 0.0)
    added = draw(st.lists(st.integers(0, 4), min_size=len(previous.bounds), max_size=len(previous.bounds)))
    cumulative, running = [], 0
    for a in added:
        running += a
        cumulative.append(running)
    if step == "copy":
        return previous
    new = Histogram(previous.bounds, tuple(p + c for p, c in zip(previous.cumulative, cumulative)),
                    previous.sum + draw(st.sampled_from([0.0, 0.1, 0.3, 1.7, 2.05])) * running,
                    previous.count + running)
    if step == "odd":  # a bucket that went down alone: not monotone, a reset by the cumulative rule
        at = draw(st.integers(0, len(new.bounds) - 1))
        cum = list(new.cumulative)
        cum[at] -= draw(st.sampled_from([1.0, 0.5]))
        new = Histogram(new.bounds, tuple(cum), new.sum, new.count)
    if step == "huge":  # finite, but differences leave the float range
        new = Histogram(new.bounds, tuple(c * 1e308 for c in new.cumulative), new.sum * -1e308, new.count + 1e308)
    return new


@st.composite
def counter_after(draw: st.DrawFn, previous: float | None, allowed: frozenset[str]) -> float:
    step = draw(steps(allowed, "add"))
    base = previous if previous is not None else 0.0
    if step == "restart":
        return float(draw(st.integers(0, 5)))
    if step == "copy":
        return base
    if step == "fraction":
        return base + draw(st.sampled_from([0.1, 0.5, 0.039585025136189556, 0.7010078039245232]))
    if step == "ceil":  # a whole number again, not lower
        return float(math.ceil(base)) if math.isfinite(base) else base
    if step == "past_2_53":
        return 2.0**53 + draw(st.sampled_from([0.0, 2.0, 4.0]))
    if step == "huge":
        return draw(st.sampled_from([1e308, -1e308, 1.7e308]))
    if step == "negative":
        return -float(draw(st.integers(1, 9)))
    if step == "int":
        return int(base) + draw(st.integers(0, 9)) if math.isfinite(base) and abs(base) < 1e15 else base
    return base + float(draw(st.integers(0, 40)))


@st.composite
def series(draw: st.DrawFn) -> list[tuple[float, ModelSample]]:
    # each series has a few kinds of trouble (or none): windows clear of it take the short ways
    hist_steps = draw(st.frozensets(st.sampled_from(HIST_STEPS)))
    counter_steps = draw(st.frozensets(st.sampled_from(COUNTER_STEPS)))
    finished_steps = draw(st.frozensets(st.sampled_from(FINISHED_STEPS)))
    presence = draw(st.frozensets(st.sampled_from(PRESENCE)))
    refuse_finished = draw(st.booleans())
    t = draw(st.sampled_from([0.0, 59.0, 1_700_000_000.0]))
    hists: dict[str, Histogram | None] = dict.fromkeys(HIST_KEYS)
    counters: dict[str, float | None] = dict.fromkeys(COUNTER_KEYS)
    finished: dict[str, float] = {}
    points = []
    for _ in range(draw(st.integers(1, 16))):
        t += draw(st.sampled_from([5.0] * 8 + [1.0, 0.0, -3.0, 50.0, 130.0]))
        refused: set[str] = set()
        sample_h, sample_c = {}, {}
        for key in HIST_KEYS:
            where = draw(steps(presence, "here"))
            if where == "here":
                hists[key] = sample_h[key] = draw(histogram_after(hists[key], hist_steps))
            elif where == "refused":
                refused.add(key)
        for key in COUNTER_KEYS:
            where = draw(steps(presence, "here"))
            if where == "here":
                counters[key] = sample_c[key] = draw(counter_after(counters[key], counter_steps))
            elif where == "refused":
                refused.add(key)
        finished_now: dict[str, float] = {}
        if refuse_finished and draw(st.integers(0, 5)) == 0:
            refused.add("finished")
        else:
            for reason in REASONS:
                step = draw(steps(finished_steps, "add"))
                if step == "absent":
                    continue
                old = finished.get(reason, 0.0)
                finished[reason] = finished_now[reason] = (
                    0.0 if step == "restart" else old + 0.1 if step == "fraction"
                    else float(math.ceil(old)) if step == "ceil" else old + draw(st.integers(0, 9)))
        sample = ModelSample(MODEL, sample_h, sample_c, {"running": float(draw(st.integers(0, 9)))}, finished_now,
                             {"ttft": "vllm:time_to_first_token_seconds"}, frozenset(refused))
        points.append((t, sample))
    return points


QUERIES = st.tuples(st.sampled_from([-7.0, -2.5, 0.0, 0.0, 0.0, 3.0]),
                    st.sampled_from([4.0, 5.0, 12.0, 30.0, 60.0, 60.0, 600.0, math.inf]),
                    st.one_of(st.none(), st.sampled_from([-20.0, -10.0, -6.0, -5.0, -0.5])))


def fleet_with(window: float) -> FleetView:
    return FleetView(window, 5.0, {"p": {INSTANCE: f"http://{INSTANCE}/metrics"}})


@settings(max_examples=600, deadline=None)
@given(series(), st.lists(QUERIES, min_size=1, max_size=6), st.sampled_from([10.0, 60.0]))
def test_window_figures_answer_as_the_pair_by_pair_rules(points, queries, keep_window):
    fleet = fleet_with(keep_window)  # keeps ~3-4 minutes: long series lose their oldest readings
    track = fleet.tracks[INSTANCE]
    for k, (t, sample) in enumerate(points):
        fleet.ingest([ScrapeResult("p", INSTANCE, "u", t, 0.01, (sample,))])
        kept = list(track.samples[MODEL])
        # after each reading, and over the whole series at the end
        for offset, window, since in queries if k == len(points) - 1 else queries[:1]:
            now = t + offset
            cut = None if since is None else now + since
            got = fleet.stats(track, now, window, cut)
            expected = ref_window_stats(kept, now, window, fleet_cut(now, window, cut))
            assert repr(got.get(MODEL)) == repr(expected)


def fleet_cut(now: float, window: float, since: float | None) -> float | None:
    """FleetView.stats drops a `since` older than the window (the same window either way)."""
    return None if since is not None and since <= now - window else since


@settings(max_examples=300, deadline=None)
@given(series())
def test_minute_rollups_answer_as_before(points):
    fleet = fleet_with(60.0)
    for t, sample in points:
        fleet.ingest([ScrapeResult("p", INSTANCE, "u", t, 0.01, (sample,))])
    kept = list(fleet.tracks[INSTANCE].samples[MODEL])
    for minute in sorted({minute_floor(t) + d for t, _ in kept for d in (-60.0, 0.0, 60.0)}):
        rollups = fleet.rollups(minute)
        expected = ref_rollup(kept, minute)
        assert repr(rollups[0].stats if rollups else None) == repr(expected)


COUNTS = st.one_of(st.integers(0, 50).map(float), st.floats(-5.0, 60.0), st.sampled_from([0.0, -0.0, 1e308]))


@st.composite
def any_histograms(draw: st.DrawFn) -> Histogram:
    """Window deltas as they may come: monotone or not, empty, negative, one bucket, odd bounds."""
    bounds = draw(st.sampled_from([*BOUNDS, (math.inf,), (0.0, math.inf), (-1.0, 2.0, math.inf), (0.5, 1.0)]))
    cumulative = draw(st.lists(COUNTS, min_size=len(bounds), max_size=len(bounds)))
    if draw(st.booleans()):
        cumulative.sort()
    return Histogram(bounds, tuple(cumulative), draw(COUNTS), draw(COUNTS))


@settings(max_examples=1500, deadline=None)
@given(any_histograms(), any_histograms(), st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0, 1.5, -0.1]))
def test_quantiles_and_sums_of_histograms_answer_as_before(a, b, q):
    assert repr(quantile(q, a)) == repr(ref_quantile(q, a))
    assert repr(add_histograms(a, b)) == repr(ref_add_histograms(a, b))
    same = Histogram(tuple(a.bounds), b.cumulative[: len(a.bounds)], b.sum, b.count)  # equal bounds, not shared
    assert repr(add_histograms(a, same)) == repr(ref_add_histograms(a, same))
    assert add_histograms(None, a) is a and add_histograms(a, None) is a


def test_counts_past_2_53_or_not_whole_are_added_step_by_step_as_before():
    # where the steps of a counter do not add up to last minus first exactly in floats
    for values in ((1.0, 2.0**53 + 2, 2.0**53 + 4), (0.039585025136189556, 3.0, 12.0)):
        fleet = fleet_with(60.0)
        for k, value in enumerate(values):
            fleet.ingest([ScrapeResult("p", INSTANCE, "u", 5.0 * k, 0.01, (ModelSample(
                MODEL, counters={"generation_tokens": value}, finished={"stop": value}),))])
        got = fleet.stats(fleet.tracks[INSTANCE], 10.0, 60.0)[MODEL]
        expected = (values[1] - values[0]) + (values[2] - values[1])
        assert expected != values[2] - values[0]
        assert got.increases["generation_tokens"] == expected and got.finished["stop"] == expected


def test_a_window_after_a_restart_counts_from_zero_and_a_later_one_is_last_minus_first():
    fleet = fleet_with(60.0)
    track = fleet.tracks[INSTANCE]
    for t, tokens in ((0.0, 100.0), (5.0, 150.0), (10.0, 20.0), (15.0, 50.0), (20.0, 90.0)):
        fleet.ingest([ScrapeResult("p", INSTANCE, "u", t, 0.01,
                                   (ModelSample(MODEL, counters={"generation_tokens": tokens}),))])
    assert fleet.stats(track, 20.0, 60.0)[MODEL].increases["generation_tokens"] == 50.0 + 20.0 + 30.0 + 40.0
    assert fleet.stats(track, 20.0, 10.0)[MODEL].increases["generation_tokens"] == 70.0  # from the restart on
