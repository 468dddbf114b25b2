"""`POST /v1/traces` on a live loopback server, fed by the real OpenTelemetry SDK and its OTLP/HTTP
exporter (protobuf, gzip) and by OTLP/JSON bodies; garbage, truncated, oversized and unsupported
bodies are refused with a message naming the problem, and valid spans sent afterwards still count."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
import zlib

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from monitor.otlp.receiver import TraceReceiver
from monitor.otlp.records import Routing
from monitor.otlp.store import TraceStore

from tests.helpers.otlp_spans import vllm_spans
from tests.helpers.ports import free_port

pytestmark = pytest.mark.e2e  # every test here starts a process or a server on a real port


MAX_BODY = 256 * 1024
POOLS = {"llama": ["10.0.0.11:8000", "10.0.0.12:8000"], "mistral": ["10.0.0.13:8000"]}


class Live:
    """The receiver's router in a FastAPI app under uvicorn on a loopback port."""

    def __init__(self, sink=None) -> None:
        self.store = TraceStore()
        self.receiver = TraceReceiver(sink or self.store.add, Routing(POOLS), max_body=MAX_BODY)
        app = FastAPI()
        app.include_router(self.receiver.router())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Live:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)

    def records(self, pool: str) -> list:
        return self.store.records(pool)


@pytest.fixture
def live():
    with Live() as server:
        yield server


def otlp_json(spans: list) -> dict:
    """The SDK's request in the OTLP/JSON mapping: camelCase, enums as integers, ids as hex."""
    doc = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return doc


def requests_at(now: float) -> list[dict]:
    return [
        {"id": "a", "arrival": now - 5, "ttft": 0.2, "e2e": 2.2, "out": 41, "queue": 0.05},
        {"id": "b", "arrival": now - 4, "ttft": 0.9, "e2e": 1.9, "out": 11},
        {"id": "c", "arrival": now - 3, "ttft": 0.1, "e2e": 0.1, "out": 1, "error": True},
    ]


NOW = time.time()
REQUESTS = requests_at(NOW)


@pytest.fixture(autouse=True)
def _spans_of_now(monkeypatch):
    """Spans end seconds before each test, not at import: the receiver takes a span further than its
    clock-skew bound from the time it arrives at the time it arrived, and a full suite runs minutes
    after this module is imported."""
    now = time.time()
    monkeypatch.setitem(globals(), "NOW", now)
    monkeypatch.setitem(globals(), "REQUESTS", requests_at(now))


def status_message(response: httpx.Response) -> str:
    if response.headers["content-type"].startswith("application/json"):
        return response.json()["message"]
    status = status_pb2.Status()
    status.ParseFromString(response.content)
    return status.message


def test_sdk_exporter_protobuf_gzip(live):
    spans = vllm_spans({"service.name": "vllm-server", "service.instance.id": "10.0.0.11:8000"}, REQUESTS)
    exporter = OTLPSpanExporter(endpoint=live.url, compression=Compression.Gzip, timeout=5)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    records = {r.request_id: r for r in live.records("llama")}
    assert set(records) == {"a", "b", "c"}
    a = records["a"]
    assert (a.pool, a.instance, a.model) == ("llama", "10.0.0.11:8000", None)  # V1: no model attribute
    assert (a.ttft_s, a.e2e_s, a.queue_s, a.prompt_tokens, a.output_tokens) == (0.2, 2.2, 0.05, 100, 41)
    assert a.tpot_s == pytest.approx((2.2 - 0.2) / 40)
    assert a.at == pytest.approx(NOW - 5 + 2.2, abs=1e-3) and a.status == "ok"
    assert len(a.trace_id) == 32 and len(a.span_id) == 16
    assert records["b"].tpot_s == pytest.approx(0.1)
    assert records["c"].tpot_s is None and records["c"].status == "error"
    assert live.receiver.stats.spans_accepted == 3


def test_sdk_exporter_deflate_and_pool_from_service_name(live):
    spans = vllm_spans({"service.name": "mistral"}, [dict(REQUESTS[0], model="mistral-7b")])
    exporter = OTLPSpanExporter(endpoint=live.url, compression=Compression.Deflate, timeout=5)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    (record,) = live.records("mistral")
    assert (record.pool, record.instance, record.model) == ("mistral", None, "mistral-7b")


@pytest.mark.parametrize("compress", [False, True])
def test_json_from_sdk_spans(live, compress):
    spans = vllm_spans({"service.instance.id": "http://10.0.0.12:8000"}, REQUESTS[:2])
    body = json.dumps(otlp_json(spans)).encode()
    headers = {"Content-Type": "application/json"}
    if compress:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    response = httpx.post(live.url, content=body, headers=headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    assert response.json() == {}  # full success: partial_success left unset
    records = live.records("llama")
    assert [(r.request_id, r.instance) for r in records] == [("a", "10.0.0.12:8000"), ("b", "10.0.0.12:8000")]
    assert records[0].trace_id == spans[0].context.trace_id.to_bytes(16, "big").hex()


def test_handwritten_otlp_json(live):
    """As the OTLP/JSON spec writes it: intValue as strings, hex ids, kind and status code integers."""
    doc = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.instance.id", "value": {"stringValue": "10.0.0.13:8000"}}]},
        "scopeSpans": [{"scope": {"name": "vllm"}, "spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "name": "llm_request", "kind": 2,
            "startTimeUnixNano": str(int((NOW - 2) * 1e9)), "endTimeUnixNano": str(int((NOW - 1) * 1e9)),
            "attributes": [
                {"key": "gen_ai.request.id", "value": {"stringValue": "cmpl-1"}},
                {"key": "gen_ai.usage.completion_tokens", "value": {"intValue": "5"}},
                {"key": "gen_ai.usage.prompt_tokens", "value": {"intValue": 12}},
                {"key": "gen_ai.latency.time_to_first_token", "value": {"doubleValue": 0.2}},
                {"key": "gen_ai.latency.e2e", "value": {"doubleValue": 1.0}},
                {"key": "gen_ai.latency.time_in_queue", "value": {"doubleValue": 0.0}},
                {"key": "gen_ai.response.finish_reasons",
                 "value": {"arrayValue": {"values": [{"stringValue": "abort"}]}}},
            ],
            "status": {"code": 0}, "someFutureField": {"ignored": True},
        }]}],
    }]}
    response = httpx.post(live.url, json=doc)
    assert response.status_code == 200, response.text
    (record,) = live.records("mistral")
    assert (record.trace_id, record.span_id) == ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
    assert (record.output_tokens, record.prompt_tokens, record.tpot_s) == (5, 12, pytest.approx(0.2))
    assert (record.status, record.finish_reason, record.request_id) == ("abort", "abort", "cmpl-1")


def test_partial_success_names_rejected_spans(live):
    placed = vllm_spans({"service.instance.id": "10.0.0.11:8000"}, [
        REQUESTS[0],
        dict(REQUESTS[1], id="neg", extra={"gen_ai.latency.time_to_first_token": -1.0}),
        dict(REQUESTS[1], id="str", extra={"gen_ai.usage.completion_tokens": "many"}),
        dict(REQUESTS[1], id="other", name="request"),  # another name, but vLLM's latency attributes
    ])
    nowhere = vllm_spans({"service.instance.id": "10.9.9.9:8000"}, [dict(REQUESTS[0], id="lost")])
    body = encode_spans(placed + nowhere)
    # a span that is not a request at all (vLLM 0.16's start-up spans) is ignored, not rejected
    provider = TracerProvider(resource=Resource.create({"service.instance.id": "10.0.0.11:8000"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.get_tracer("vllm").start_span("Load weights").end()
    body.MergeFrom(encode_spans(memory.get_finished_spans()))
    response = httpx.post(live.url, content=body.SerializeToString(),
                          headers={"Content-Type": "application/x-protobuf"})
    assert response.status_code == 200
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(response.content)
    assert answer.partial_success.rejected_spans == 3
    message = answer.partial_success.error_message
    assert "gen_ai.latency.time_to_first_token is -1.0" in message
    assert "gen_ai.usage.completion_tokens is 'many', not a number" in message
    assert "service.instance.id '10.9.9.9:8000' is not a target of any pool" in message
    assert sorted(r.request_id for r in live.records("llama")) == ["a", "other"]
    assert live.receiver.stats.spans_ignored == 1


def test_bad_bodies_are_refused_and_nothing_is_lost(live):
    spans = vllm_spans({"service.instance.id": "10.0.0.11:8000"}, REQUESTS)
    good = encode_spans(spans).SerializeToString()
    assert httpx.post(live.url, content=good, headers={"Content-Type": "application/x-protobuf"}).status_code == 200
    before = len(live.records("llama"))
    pb = {"Content-Type": "application/x-protobuf"}
    js = {"Content-Type": "application/json"}
    cases = [
        (b"\xff\xfe garbage \x00" * 10, pb, 400, "protobuf body does not decode"),
        (good[: len(good) // 2], pb, 400, "protobuf body does not decode"),
        (b'{"resourceSpans": [', js, 400, "body is not valid JSON"),
        (b"[1, 2]", js, 400, "must be an object"),
        (json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz" * 16}]}]}]}).encode(), js, 400,
         "resourceSpans[0].scopeSpans[0].spans[0].traceId: not hex"),
        (json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "AAECAwQFBgc="}]}]}]}).encode(), js,
         400, "spanId: expected 16 hex digits"),
        (json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5, "kind": "nope"}]}]}]}).encode(), js,
         400, "not an OTLP ExportTraceServiceRequest"),
        (json.dumps({"resourceSpans": {"x": 1}}).encode(), js, 400, "resourceSpans: expected a list"),
        (gzip.compress(good)[:-10], dict(pb, **{"Content-Encoding": "gzip"}), 400, "gzip body is truncated"),
        (b"not gzip at all", dict(pb, **{"Content-Encoding": "gzip"}), 400, "not valid gzip"),
        (good, dict(pb, **{"Content-Encoding": "br"}), 415, "unsupported Content-Encoding 'br'"),
        (good, {"Content-Type": "text/plain"}, 415, "unsupported Content-Type 'text/plain'"),
        (b"x" * (MAX_BODY + 1), pb, 413, "over the 262144-byte limit"),
        (gzip.compress(b"\x00" * (MAX_BODY * 4)), dict(pb, **{"Content-Encoding": "gzip"}), 413,
         "once decompressed"),
        (zlib.compress(b"\x0a" * (MAX_BODY * 4)), dict(pb, **{"Content-Encoding": "deflate"}), 413,
         "once decompressed"),
    ]
    for body, headers, status, needle in cases:
        response = httpx.post(live.url, content=body, headers=headers)
        assert response.status_code == status, (needle, response.status_code, response.content[:200])
        assert needle in status_message(response), (needle, status_message(response))
    # a chunked upload with no Content-Length is capped while reading
    chunks = (b"y" * 65536 for _ in range(MAX_BODY // 65536 + 2))
    response = httpx.post(live.url, content=chunks, headers=pb)
    assert response.status_code == 413 and "over the" in status_message(response)
    # nothing accepted before was lost, and valid spans sent afterwards still count
    assert len(live.records("llama")) == before
    later = vllm_spans({"service.instance.id": "10.0.0.11:8000"}, [dict(REQUESTS[0], id="later")])
    exporter = OTLPSpanExporter(endpoint=live.url, timeout=5)
    assert exporter.export(later) == SpanExportResult.SUCCESS
    assert len(live.records("llama")) == before + 1
    assert live.receiver.stats.requests[400] == 10 and live.receiver.stats.requests[413] == 4


def test_retried_export_is_counted_once(live):
    spans = vllm_spans({"service.instance.id": "10.0.0.11:8000"}, REQUESTS)
    body = encode_spans(spans).SerializeToString()
    for _ in range(3):
        assert httpx.post(live.url, content=body,
                          headers={"Content-Type": "application/x-protobuf"}).status_code == 200
    assert len(live.records("llama")) == 3 and live.store.duplicates == 6


def test_sink_failure_answers_503_so_the_sender_retries():
    def broken(records):
        raise RuntimeError("disk on fire")

    spans = vllm_spans({"service.instance.id": "10.0.0.11:8000"}, REQUESTS[:1])
    with Live(sink=broken) as live:
        response = httpx.post(live.url, content=encode_spans(spans).SerializeToString(),
                              headers={"Content-Type": "application/x-protobuf"})
    assert response.status_code == 503 and "disk on fire" in status_message(response)
