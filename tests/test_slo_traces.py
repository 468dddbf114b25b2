"""Exact latency SLIs from traces: where a pool's spans cover a settled minute, its latency events are
recounted from them (no bucket interpolation) and the API says `source: traces`, `exact: true`; where
they do not (too few spans), the histogram count stays."""

from __future__ import annotations

import math
import time

import pytest

from monitor.service.wiring import slo_engine
from monitor.evaluate.slo.engine import SloEngine
from monitor.evaluate.slo.track import SloKey
from monitor.otlp.records import RequestRecord
from monitor.otlp.store import TraceStore
from monitor.service import create_app

from tests.helpers.asgi_client import AUTH, Client
from tests.helpers.slo_scrapes import T0, Server, config, result

TTFT_300 = {"name": "ttft-300", "indicator": {"type": "latency", "metric": "ttft", "threshold": "300ms"},
            "objective": "99%"}
A, B = "10.0.0.1:8000", "10.0.0.2:8000"
# per 5-second interval: 8 fast requests, and 2 in the (0.25, 0.5] bucket, one under 300 ms and one over.
# Interpolation puts 20% of that bucket under 300 ms (8.4 good of 10); the spans say 9 of 10.
PER_INTERVAL = ((8, 0.2), (1, 0.27), (1, 0.45))
HIST_GOOD, TRACE_GOOD = 8 + 2 * (0.3 - 0.25) / (0.5 - 0.25), 9


def record(n: int, at: float, ttft: float, instance: str = A, pool: str = "llama") -> RequestRecord:
    return RequestRecord(pool=pool, instance=instance, model="m", at=at, e2e_s=ttft + 1.0, ttft_s=ttft,
                         output_tokens=11, tpot_s=0.1, trace_id=f"{n:032x}", span_id=f"{n:016x}")


class Traffic:
    """One instance scraped every 5 s, with spans for `traced` of its requests."""

    def __init__(self, engine: SloEngine, store: TraceStore, instance: str = A, traced: float = 1.0) -> None:
        self.engine, self.store, self.instance, self.traced = engine, store, instance, traced
        self.server = Server(model="m")
        self.n = 0 if instance == A else 1_000_000

    def run(self, start: float, end: float) -> None:
        t = start
        self.engine.observe([result("llama", self.instance, t, self.server)])
        while t < end:
            t += 5
            records = []
            for count, ttft in PER_INTERVAL:
                self.server.requests(count, ttft_s=ttft)
                for _ in range(count):
                    self.n += 1
                    records.append(record(self.n, t - 1.0, ttft, self.instance))
            self.store.add(records[: round(len(records) * self.traced)])
            self.engine.observe([result("llama", self.instance, t, self.server)])


def minute_row(engine: SloEngine, minute: int) -> tuple[float, float]:
    track = engine._tracks[SloKey("ttft-300", "llama")]
    _, good, total = track.series.minute(T0 + 60 * minute)
    return good, total


def test_settled_minutes_covered_by_traces_are_recounted_exactly():
    clock = [T0]
    store = TraceStore(clock=lambda: clock[0])
    engine = slo_engine(config(TTFT_300))
    engine.use_traces(store, T0)
    Traffic(engine, store).run(T0, T0 + 180)
    clock[0] = T0 + 180
    [status] = engine.evaluate(T0 + 180)  # settle 20 s: minutes 0 and 1 have settled, minute 2 not yet
    assert status.source == "traces" and status.evaluation.exact is True
    assert minute_row(engine, 0) == (12 * TRACE_GOOD, 120.0) and minute_row(engine, 1) == (12 * TRACE_GOOD, 120.0)
    assert minute_row(engine, 2) == pytest.approx((12 * HIST_GOOD, 120.0))  # still the histograms' count
    assert status.evaluation.good == pytest.approx(24 * TRACE_GOOD + 12 * HIST_GOOD)
    rows = {(r.minute - T0) // 60: (r.good, r.total) for r in engine.take_rows()}
    assert rows[0] == rows[1] == (12 * TRACE_GOOD, 120.0)  # the store gets the exact minutes

    clock[0] = T0 + 240
    [status] = engine.evaluate(T0 + 240)  # minute 2 settles now
    assert minute_row(engine, 2) == (12 * TRACE_GOOD, 120.0)


def test_too_few_spans_keep_the_histogram_count():
    clock = [T0]
    store = TraceStore(clock=lambda: clock[0])
    engine = slo_engine(config(TTFT_300))
    engine.use_traces(store, T0)
    Traffic(engine, store, traced=0.8).run(T0, T0 + 180)  # 80% of the requests have a span: under 90%
    clock[0] = T0 + 180
    [status] = engine.evaluate(T0 + 180)
    assert status.source == "histograms" and status.evaluation.exact is False
    assert minute_row(engine, 0) == pytest.approx((12 * HIST_GOOD, 120.0))


def test_a_late_histogram_increase_does_not_add_to_a_traced_minute():
    clock = [T0]
    store = TraceStore(clock=lambda: clock[0])
    engine = slo_engine(config(TTFT_300))
    engine.use_traces(store, T0)
    late = Server(model="m")
    engine.observe([result("llama", B, T0, late)])  # B's baseline; its next scrape comes 4 minutes later
    Traffic(engine, store).run(T0, T0 + 180)
    clock[0] = T0 + 180
    engine.evaluate(T0 + 180)
    late.requests(40, ttft_s=0.2)
    engine.observe([result("llama", B, T0 + 240, late)])  # (T0, T0+240]: 10 requests per minute
    assert minute_row(engine, 0) == minute_row(engine, 1) == (12 * TRACE_GOOD, 120.0)
    assert minute_row(engine, 3) == (10.0, 10.0)


def test_exact_slis_off_and_without_traces():
    engine = slo_engine(config(TTFT_300, traces={"exact_slis": False}))
    server = Server(model="m")
    engine.observe([result("llama", A, T0, server)])
    server.requests(10, ttft_s=0.45)
    engine.observe([result("llama", A, T0 + 5, server)])
    [status] = engine.evaluate(T0 + 100)
    assert status.source == "histograms" and status.evaluation.exact is False
    assert slo_engine(config({"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99%"})
                     ).evaluate(T0)[0].source == "counters"
    app = create_app(config(TTFT_300, traces={"exact_slis": False}), store=None)
    assert app.state.service.slo._traces is None  # `exact_slis: false`: the service never hands traces over


def test_the_api_says_where_latency_events_came_from():
    app = create_app(config(TTFT_300), store=None)
    service = app.state.service
    start = math.floor(time.time() / 60) * 60 - 300  # within the trace store's retention
    service.slo.use_traces(service.traces, start)
    traffic = Traffic(service.slo, service.traces)
    traffic.run(start, start + 180)
    service.slo.evaluate(start + 180)
    [body] = Client(app).get("/api/v1/slos", headers=AUTH).json()
    assert (body["source"], body["exact"]) == ("traces", True)
    assert body["good"] == pytest.approx(24 * TRACE_GOOD + 12 * HIST_GOOD) and body["total"] == 360.0


def test_spans_without_the_metric_do_not_cover_its_slo():
    clock = [T0]
    store = TraceStore(clock=lambda: clock[0])
    queue = {"name": "queue-1s", "indicator": {"type": "latency", "metric": "queue", "threshold": "1s"},
             "objective": "99%"}
    engine = slo_engine(config(TTFT_300, queue))
    engine.use_traces(store, T0)
    Traffic(engine, store).run(T0, T0 + 180)  # the records carry TTFT but no time in queue
    clock[0] = T0 + 180
    sources = {s.key.slo: s.source for s in engine.evaluate(T0 + 180)}
    assert sources == {"ttft-300": "traces", "queue-1s": "histograms"}
