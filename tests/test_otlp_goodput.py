"""Goodput, exact latency SLIs, span → record conversion, routing and the record store, on
hand-computed examples."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from monitor.config import SloConfig
from monitor.otlp.goodput import (
    LatencyObjective,
    compute_goodput,
    covered_seconds,
    goodput_report,
    latency_counts,
    latency_objectives,
)
from monitor.otlp.records import RequestRecord, Routing, extract_records, tpot
from monitor.otlp.store import TraceStore

SLOS = [
    SloConfig.model_validate({"name": "ttft-500ms", "indicator": {"type": "latency", "metric": "ttft",
                                                                  "threshold": "500ms"}, "objective": "99%"}),
    SloConfig.model_validate({"name": "tpot-50ms", "indicator": {"type": "latency", "metric": "tpot",
                                                                 "threshold": "50ms"}, "objective": "99%"}),
    SloConfig.model_validate({"name": "e2e-10s", "indicator": {"type": "latency", "metric": "e2e", "threshold": "10s"},
                              "objective": "99%", "pools": ["other"]}),
    SloConfig.model_validate({"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%"}),
]


def rec(n: int, at: float, ttft: float | None, e2e: float, out: int | None, *, pool: str = "llama",
        model: str | None = "a", status: str = "ok") -> RequestRecord:
    return RequestRecord(pool=pool, instance="10.0.0.11:8000", model=model, at=at, e2e_s=e2e, ttft_s=ttft,
                         tpot_s=tpot(e2e, ttft, out), output_tokens=out, status=status, trace_id=f"{n:032x}",
                         span_id=f"{n:016x}")


# now = 1000, window 60 s → (940, 1000]
RECORDS = [
    rec(1, 990.0, 0.2, 2.2, 41),   # tpot (2.2-0.2)/40 = 0.05 → at the threshold: met. good
    rec(2, 991.0, 0.6, 1.6, 21),   # ttft 0.6 > 0.5: not good (tpot 0.05 met)
    rec(3, 992.0, 0.3, 4.3, 41),   # tpot 0.1 > 0.05: not good
    rec(4, 993.0, 0.1, 0.1, 1),    # one output token: no TPOT, met. good
    rec(5, 994.0, 0.2, 1.2, 21, status="error"),  # every latency met, but failed: not good
    rec(6, 930.0, 0.1, 1.0, 11),   # finished before the window
    rec(7, 995.0, 0.1, 1.0, 21, pool="other"),   # another pool (tpot 0.045)
    rec(8, 996.0, 0.4, 1.4, 21, model="b"),      # tpot 0.05: good
    rec(9, 1000.0, 0.5, 2.5, 41),  # exactly at both thresholds and at `now`: good
]


def test_objectives_follow_slo_pools():
    assert latency_objectives(SLOS, "llama") == (LatencyObjective("ttft-500ms", "ttft", 0.5),
                                                 LatencyObjective("tpot-50ms", "tpot", 0.05))
    assert [o.slo for o in latency_objectives(SLOS, "other")] == ["ttft-500ms", "tpot-50ms", "e2e-10s"]


def test_goodput_by_hand():
    objectives = latency_objectives(SLOS, "llama")
    g = compute_goodput(RECORDS, objectives, pool="llama", now=1000.0, window_s=60.0)
    # in window, pool llama: 1, 2, 3, 4, 5, 8, 9 → 7 requests; good: 1, 4, 8, 9
    assert (g.requests, g.completed, g.good_requests) == (7, 6, 4)
    assert g.goodput_rps == pytest.approx(4 / 60) and g.throughput_rps == pytest.approx(7 / 60)
    # ttft met by all but 2; tpot met by all but 3
    assert [(s.slo, s.met) for s in g.slos] == [("ttft-500ms", 6), ("tpot-50ms", 6)]
    body = g.to_json()
    assert {k: body[k] for k in ("pool", "window", "requests", "good_requests")} == {
        "pool": "llama", "window": "1m", "requests": 7, "good_requests": 4}
    assert body["slos"][0] == {"name": "ttft-500ms", "metric": "ttft", "threshold_seconds": 0.5, "met": 6}
    assert body["exact"] is True and body["source"] == "traces"


def test_goodput_per_model_and_short_coverage():
    objectives = latency_objectives(SLOS, "llama")
    report = goodput_report(RECORDS, objectives, pool="llama", now=1000.0, window_s=60.0, first_at=990.0)
    assert report["covered_seconds"] == 10.0  # traces began 10 s ago: the rate is over 10 s, not 60
    assert report["goodput_rps"] == pytest.approx(0.4)
    by_model = {m["model_name"]: (m["requests"], m["good_requests"]) for m in report["models"]}
    assert by_model == {"a": (6, 3), "b": (1, 1)}
    assert covered_seconds(1000.0, 60.0, 999.9) == 1.0  # never under a second
    assert covered_seconds(1000.0, 60.0, None) == 60.0


def test_no_latency_slo_means_every_completed_request_is_good():
    g = compute_goodput(RECORDS, (), pool="llama", now=1000.0, window_s=60.0)
    assert (g.requests, g.good_requests) == (7, 6)


def test_other_pool_uses_its_own_slos():
    objectives = latency_objectives(SLOS, "other")
    g = compute_goodput(RECORDS + [rec(10, 999.0, 0.1, 12.0, 11, pool="other")], objectives, pool="other",
                        now=1000.0, window_s=60.0)
    assert (g.requests, g.good_requests) == (2, 1)  # record 10 breaks e2e-10s


def test_exact_latency_counts():
    ttft, tpot_o = latency_objectives(SLOS, "llama")
    in_window = [r for r in RECORDS if r.pool == "llama" and r.at > 940]
    assert latency_counts(in_window, ttft) == (6, 7)  # errors count too: latency is its own SLI
    assert latency_counts(in_window, tpot_o) == (6, 7)
    missing = RequestRecord(pool="llama", instance=None, model=None, at=1.0, e2e_s=1.0)  # no TTFT, no tokens
    assert latency_counts([missing], ttft) == (0, 0) and latency_counts([missing], tpot_o) == (0, 0)


def test_tpot_formula():
    assert tpot(2.2, 0.2, 41) == pytest.approx(0.05)
    assert tpot(1.0, 0.4, 2) == pytest.approx(0.6)
    assert tpot(1.0, 0.4, 1) is None and tpot(1.0, None, 10) is None and tpot(1.0, 0.4, None) is None


def kv(key: str, **value) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def test_span_to_record_and_clock_skew():
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", string_value="llama")])
    span = rs.scope_spans.add().spans.add()
    span.CopyFrom(Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="llm_request",
                       start_time_unix_nano=int(100e9), end_time_unix_nano=int(103e9),
                       attributes=[kv("gen_ai.latency.time_to_first_token", double_value=0.5),
                                   kv("gen_ai.usage.output_tokens", int_value=11),  # the other semconv name
                                   kv("gen_ai.request.id", string_value="r1")],
                       status=Status(code=Status.STATUS_CODE_ERROR)))
    out = extract_records(request, Routing({"llama": ["h:1"]}, model_of=lambda pool, inst: "served-model"),
                          received_at=104.0)
    (r,) = out.records
    assert r.e2e_s == pytest.approx(3.0)  # no e2e attribute: the span's duration
    assert r.tpot_s == pytest.approx(0.25) and r.status == "error" and r.model == "served-model"
    assert (r.pool, r.instance, r.at) == ("llama", None, 103.0)
    skewed = extract_records(request, Routing({"llama": ["h:1"]}), received_at=10_000.0)
    assert skewed.records[0].at == 10_000.0  # sender's clock hours off: our receipt time instead


def test_routing():
    routing = Routing({"llama": ["10.0.0.11:8000"], "mistral": ["node-b:8000"]})
    assert routing.place("10.0.0.11:8000", "vllm-server") == ("llama", "10.0.0.11:8000")
    assert routing.place("http://NODE-B:8000/", None) == ("mistral", "node-b:8000")
    assert routing.place("10.0.0.99:8000", "mistral") == ("mistral", None)
    assert routing.place(None, "unknown_service") == "service.name 'unknown_service' is not a pool"
    assert "no service.instance.id or service.name" in routing.place(None, None)


def test_store_dedups_prunes_and_caps():
    clock = [1000.0]
    store = TraceStore(retention_s=100.0, max_records_per_pool=3, clock=lambda: clock[0])
    assert store.add([rec(1, 990.0, 0.1, 1.0, 2), rec(2, 995.0, 0.1, 1.0, 2)]) == 2
    assert store.add([rec(2, 995.0, 0.1, 1.0, 2)]) == 0 and store.duplicates == 1
    assert store.first_at("llama") == 990.0 and store.pools() == ["llama"]
    store.add([rec(3, 996.0, 0.1, 1.0, 2), rec(4, 997.0, 0.1, 1.0, 2)])  # cap 3: record 1 pushed out
    assert [r.trace_id[-1] for r in store.records("llama")] == ["2", "3", "4"] and store.dropped == 1
    assert store.add([rec(1, 990.0, 0.1, 1.0, 2)]) == 1  # forgotten, so it is new again
    clock[0] = 1096.5  # retention 100 s: records at or before 996.5 go
    store.prune()
    assert [r.trace_id[-1] for r in store.records("llama")] == ["4"]
    assert [r.trace_id[-1] for r in store.records("llama", since=997.0)] == []


def test_goodput_on_metrics():
    import time

    from prometheus_client import CollectorRegistry, generate_latest

    from monitor.otlp.publish import TraceMetricsCollector
    from monitor.otlp.receiver import TraceReceiver

    now = time.time()
    store = TraceStore()
    shift = now - 1000.0  # RECORDS' times, moved to end now; first record 70 s ago
    store.add([RequestRecord(**{**{f: getattr(r, f) for f in RequestRecord.__slots__}, "at": r.at + shift})
               for r in RECORDS])
    registry = CollectorRegistry()
    registry.register(TraceMetricsCollector(store, SLOS, window_s=60.0, receiver=TraceReceiver(store.add, Routing({}))))
    text = generate_latest(registry).decode()
    line = next(x for x in text.splitlines()
                if x.startswith('slo_monitor_goodput_requests_per_second{model_name="",pool="llama"}'))
    assert float(line.split()[-1]) == pytest.approx(4 / 60, rel=0.05)
    assert 'slo_monitor_traced_requests{model_name="b",pool="llama"} 1.0' in text
    assert 'slo_monitor_otlp_spans_total{outcome="accepted"} 0.0' in text
