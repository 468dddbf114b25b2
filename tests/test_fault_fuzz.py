"""The parsers that read what other machines send, fuzzed with hypothesis.

A target's /metrics page and an OTLP export are input from the network: whatever they hold, the
readers may only refuse them with their declared error (ExpositionError, PageError, OtlpError), which
the service turns into a per-target reason or a 4xx answer. Any other exception would be a bug that
costs a whole scrape cycle or a 500. For pages written as the text format allows, our `vllm:` reader
must give exactly what prometheus_client's parser gives.

Runs are bounded (a few hundred examples each, no deadline: the CI machine may be busy).
"""

from __future__ import annotations

import gzip
import json
import math
import zlib

from google.protobuf import json_format
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from monitor.collect.exposition import ExpositionError, samples
from monitor.collect.scraper import BodyTooLarge, BodyUndecodable, BoundedDecoder
from monitor.collect.vllm import PageError, parse_page
from monitor.otlp.decode import JSON, PROTOBUF, OtlpError, decompress, parse_request
from monitor.otlp.receiver import TraceReceiver
from monitor.otlp.records import Routing

from tests.helpers.vllm_pages import FakeVllmV1


# database=None: no .hypothesis/ directory in the working tree; failures print their example
FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# -- the text format ------------------------------------------------------------------------------

metric_tail = st.from_regex(r"[a-zA-Z0-9_:]{0,12}", fullmatch=True)
vllm_name = st.builds(lambda first, tail: "vllm:" + first + tail, st.sampled_from("abkz_:"), metric_tail)
label_name = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}", fullmatch=True).filter(
    lambda n: not n.startswith("__"))  # reserved for internal use
# any text a label may hold: quotes, backslashes, newlines, braces, commas, unicode separators
label_value = st.text(st.characters(exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ['', '"', '\\', '\n', '}', '{', ',', '=', 'a"b,c}d', 'x\\y\nz', '\u2028', '\x85', '\r', ' # x'])
finite = st.floats(allow_nan=False, allow_infinity=False)


def _escape(value: str) -> str:
    """As the format says (and prometheus_client writes): backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@st.composite
def number_text(draw) -> str:
    """A sample value written any way the format allows: Go/Python float spellings, ±Inf, NaN."""
    kind = draw(st.sampled_from(["repr", "int", "exp", "special", "go"]))
    if kind == "special":
        return draw(st.sampled_from(["+Inf", "-Inf", "NaN", "Inf", "nan", "+inf"]))
    if kind == "int":
        return str(draw(st.integers(-10**18, 10**18)))
    value = draw(finite)
    if kind == "exp":
        return f"{value:e}"
    if kind == "go":
        return f"{value:.17g}".replace("e+0", "e+").replace("e-0", "e-")
    return repr(value)


@st.composite
def sample_line(draw, name: str, labels: dict[str, str]) -> str:
    """One sample line with the blanks the format (Go's reference parser) allows around tokens."""
    blank = st.sampled_from([" ", "\t", "  ", " \t"])
    lead = draw(st.sampled_from(["", "", "", " ", "\t"]))
    text = lead + name
    if labels or draw(st.booleans()):
        inner_gap = draw(st.sampled_from(["", "", " "]))
        parts = [f'{inner_gap}{k}{inner_gap}={inner_gap}"{_escape(v)}"{inner_gap}' for k, v in labels.items()]
        trailing = "," if labels and draw(st.booleans()) else ""
        text += draw(st.sampled_from(["", "", " "])) + "{" + ",".join(parts) + trailing + "}"
    text += draw(blank) + draw(number_text())
    if draw(st.integers(0, 4)) == 0:
        text += draw(blank) + str(draw(st.integers(-2**62, 2**62)))
    text += draw(st.sampled_from(["", "", " ", "\t", "\r"]))
    return text


@st.composite
def family(draw, name: str) -> list[str]:
    """HELP/TYPE (sometimes missing) and samples of one family, labels unique per sample."""
    kind = draw(st.sampled_from(["gauge", "counter", "untyped", "histogram", "summary", None]))
    if kind == "counter" and not name.endswith("_total"):
        name += "_total"  # prometheus_client's parser renames counter samples without it
    lines = []
    if draw(st.booleans()):
        lines.append(f"# HELP {name} {_escape(draw(st.text(max_size=20))).replace(chr(13), '')}")
    if kind is not None:
        lines.append(f"# TYPE {name} {kind}")
    label_sets = draw(st.lists(st.dictionaries(label_name.filter(lambda n: n != "le"), label_value, max_size=3),
                               min_size=1, max_size=3, unique_by=lambda d: tuple(sorted(d.items()))))
    for labels in label_sets:
        if kind == "histogram":
            bounds = sorted(set(draw(st.lists(finite, max_size=4))))
            for le in [*(repr(b) for b in bounds), "+Inf"]:
                lines.append(draw(sample_line(f"{name}_bucket", {**labels, "le": le})))
            lines.append(draw(sample_line(f"{name}_sum", labels)))
            lines.append(draw(sample_line(f"{name}_count", labels)))
        elif kind == "summary":
            lines.append(draw(sample_line(name, {**labels, "quantile": "0.99"})))
            lines.append(draw(sample_line(f"{name}_sum", labels)))
            lines.append(draw(sample_line(f"{name}_count", labels)))
        else:
            lines.append(draw(sample_line(name, labels)))
    return lines


OTHER_FAMILIES = [
    "# HELP python_gc_objects_collected_total Objects collected during gc",
    "# TYPE python_gc_objects_collected_total counter",
    'python_gc_objects_collected_total{generation="0"} 12345.0',
    'http_requests_total{handler="/v1/completions",method="POST",status="2xx"} 12.0',
    'vllmx_not_ours 3',
    "process_resident_memory_bytes 1.2e+09",
    "# a free comment mentioning vllm:num_requests_running 5",
    "",
]


@st.composite
def valid_page(draw) -> str:
    names = draw(st.lists(vllm_name, min_size=1, max_size=5, unique=True))
    # no family may be the histogram/summary/counter series of another one (an ambiguous page)
    names = [n for n in names if not any(n != o and n.startswith(o) for o in names)]
    blocks = [draw(family(n)) for n in names]
    blocks += [[line] for line in draw(st.lists(st.sampled_from(OTHER_FAMILIES), max_size=4))]
    ordered = draw(st.permutations(blocks))
    newline = draw(st.sampled_from(["\n", "\n", "\r\n"]))
    return newline.join(line for block in ordered for line in block) + newline


def reference(text: str) -> list[tuple]:
    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("vllm:"):
                out.append((s.name, tuple(sorted(s.labels.items())), _key(s.value)))
    return sorted(out, key=repr)


def ours(text: str) -> list[tuple]:
    return sorted(((n, tuple(sorted(labels.items())), _key(v)) for n, labels, v in samples(text)), key=repr)


def _key(value: float) -> object:
    return "nan" if math.isnan(value) else float(value)


@settings(FUZZ, max_examples=300)
@given(valid_page())
@example('vllm:a{model_name="m",} 3 1700000000000\n')
@example('  vllm:num_requests_running{model_name="m"} 3\n')  # blanks before a sample
@example('vllm:num_requests_running {model_name="m"} 3\n')  # a blank before the label set
@example('vllm:x{ a = "1" , b="2" } 4\r\n')
def test_valid_pages_read_exactly_as_prometheus_client(page: str) -> None:
    assert ours(page) == reference(page)


# -- anything at all: only the declared errors ------------------------------------------------------

TOKENS = ["vllm:", "vllm:x", "vllm:time_to_first_token_seconds_bucket", "{", "}", '"', "\\", "=", ",", " ",
          "\t", "\n", "\r", "le", "model_name", "engine", "+Inf", "NaN", "-1", "1e308", "1e999", "0x1p3", "_",
          ".", "#", "# TYPE", "\x00", "\ufeff", "é", "\u2028", "1" * 5000, "le=\"nan\"", 'le="+Inf"',
          "finished_reason", "vllm:request_success_total", "vllm:gpu_prefix_cache_hit_rate"]
noise = st.lists(st.sampled_from(TOKENS) | st.text(max_size=6), max_size=60).map("".join)


def _base_pages() -> list[str]:
    """Rendered once: a page's `_created` stamps change between renders, and hypothesis needs the
    same draws to give the same text."""
    out = []
    for models, finished in ((("m",), 0), (("m",), 5), (("a", "b"), 3)):
        fake = FakeVllmV1(models=models, seed=finished, extra_families=False)
        fake.finish(finished)
        out.append(fake.render())
    return out


BASE_PAGES = _base_pages()


@st.composite
def mutated_page(draw) -> str:
    """A real vLLM page with a few characters deleted, replaced or inserted, or cut short."""
    text = draw(st.sampled_from(BASE_PAGES))
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


any_page = noise | st.text() | mutated_page() | st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace"))


@FUZZ
@given(any_page)
@example("vllm:x{" + 'a="b",' * 2000 + "} 1\n")
@example('vllm:x{le="1"} 1 ' + "9" * 5000 + "\n")
def test_the_sample_reader_raises_only_exposition_errors(text: str) -> None:
    try:
        for name, labels, value in samples(text):
            assert name.startswith("vllm:") and isinstance(labels, dict) and isinstance(value, float)
    except ExpositionError:
        pass


@FUZZ
@given(any_page)
@example('vllm:time_to_first_token_seconds_bucket{le="nan"} 1\n'
         'vllm:time_to_first_token_seconds_bucket{le="+Inf"} 1\n')
@example('vllm:time_to_first_token_seconds_bucket{le="-Inf"} 1\n'
         'vllm:time_to_first_token_seconds_bucket{le="+Inf"} NaN\n')
@example("vllm:gpu_prefix_cache_hit_rate -1\n")
def test_parse_page_raises_only_page_errors(text: str) -> None:
    try:
        result = parse_page(text)
    except PageError as exc:
        assert str(exc)  # the message is the reason users see
    else:
        assert result


# -- OTLP -----------------------------------------------------------------------------------------

ROUTING = Routing({"llama": ["10.0.0.11:8000", "10.0.0.12:8000"]})
ENCODINGS = [None, "", "identity", "gzip", "deflate", "GZIP", " gzip ", "br", "gzip, gzip", "x-gzip"]
MAX = 4096


@st.composite
def compressed(draw) -> tuple[bytes, str | None]:
    """A body with a Content-Encoding: valid, truncated, concatenated, bit-flipped or mislabelled."""
    data = draw(st.binary(max_size=2000) | st.just(b"\x00" * 100_000))  # the last one a small bomb
    how = draw(st.sampled_from(["gzip", "zlib", "raw", "none"]))
    body = {"gzip": lambda: gzip.compress(data), "zlib": lambda: zlib.compress(data),
            "raw": lambda: zlib.compress(data)[2:-4], "none": lambda: data}[how]()
    damage = draw(st.sampled_from(["none", "truncate", "flip", "append", "double"]))
    if damage == "truncate" and body:
        body = body[:draw(st.integers(0, len(body) - 1))]
    elif damage == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ (1 << draw(st.integers(0, 7)))]) + body[at + 1:]
    elif damage == "append":
        body += draw(st.binary(min_size=1, max_size=20))
    elif damage == "double":
        body += body
    encoding = draw(st.sampled_from(ENCODINGS))
    return body, encoding


@FUZZ
@given(compressed(), st.integers(0, MAX))
def test_decompress_raises_only_otlp_errors_and_never_exceeds_the_cap(body_encoding, cap) -> None:
    body, encoding = body_encoding
    try:
        out = decompress(body, encoding, cap)
    except OtlpError as exc:
        assert exc.status in (400, 413, 415) and exc.message
        return
    if (encoding or "").strip().lower() not in ("", "identity"):
        assert len(out) <= cap


@FUZZ
@given(compressed(), st.integers(0, MAX), st.lists(st.integers(1, 3000), max_size=8))
def test_the_scrapers_bounded_decoder_raises_only_its_errors_and_never_exceeds_the_cap(body_encoding, cap, cuts):
    """The scraper's own Content-Encoding decoder, fed the body in network-sized pieces."""
    body, encoding = body_encoding
    pieces, rest = [], body
    for cut in cuts:
        pieces.append(rest[:cut])
        rest = rest[cut:]
    pieces.append(rest)
    try:
        decoder = BoundedDecoder(encoding, cap)
        out = b"".join(decoder.feed(p) for p in pieces)
        decoder.finish()
    except (BodyTooLarge, BodyUndecodable):
        return
    assert len(out) <= cap


@FEW
@given(st.binary(max_size=3000), st.sampled_from(["gzip", "deflate", "raw", "identity"]), st.integers(1, 500))
def test_the_scrapers_bounded_decoder_round_trips_under_the_cap(data, how, piece):
    body = {"gzip": lambda: gzip.compress(data), "deflate": lambda: zlib.compress(data),
            "raw": lambda: zlib.compress(data)[2:-4], "identity": lambda: data}[how]()
    decoder = BoundedDecoder({"raw": "deflate"}.get(how, how), len(data))
    out = b"".join(decoder.feed(body[i:i + piece]) for i in range(0, len(body), piece))
    decoder.finish()
    assert out == data


json_leaf = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20)
any_json = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=4)
                        | st.dictionaries(st.text(max_size=12), kids, max_size=4), max_leaves=25)
hexid = st.sampled_from(["", "00" * 8, "ab" * 16, "zz" * 8, "0" * 31, "AB" * 8]) | st.text(max_size=33)
attr_key = st.sampled_from(["gen_ai.latency.e2e", "gen_ai.latency.time_to_first_token",
                            "gen_ai.latency.time_in_queue", "gen_ai.usage.completion_tokens",
                            "gen_ai.usage.prompt_tokens", "gen_ai.response.model", "gen_ai.request.id",
                            "gen_ai.response.finish_reasons", "service.instance.id", "service.name"]) | st.text(max_size=8)
any_value = st.recursive(
    st.one_of(
        st.builds(lambda v: {"stringValue": v}, st.text(max_size=20) | st.sampled_from(
            ["http://10.0.0.11:8000", "http://10.0.0.11:99999", "http://[::1", "llama", "10.0.0.12:8000",
             "1e400", "-1", "nan", "3"])),
        st.builds(lambda v: {"intValue": v}, st.integers(-2**63, 2**63 - 1) | st.text(max_size=21)),
        st.builds(lambda v: {"doubleValue": v}, st.floats() | st.sampled_from(["NaN", "Infinity", "x"])),
        st.builds(lambda v: {"boolValue": v}, st.booleans()),
        st.builds(lambda v: {"bytesValue": v}, st.sampled_from(["", "AAEC", "!!"])),
        any_json,
    ),
    lambda kids: st.builds(lambda vs: {"arrayValue": {"values": vs}}, st.lists(kids, max_size=3))
    | st.builds(lambda kvs: {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in kvs]}},
                st.lists(st.tuples(st.text(max_size=5), kids), max_size=3)),
    max_leaves=8,
)
attrs = st.lists(st.builds(lambda k, v: {"key": k, "value": v}, attr_key, any_value), max_size=5)
nanos = st.integers(-2**63, 2**64) | st.sampled_from(["1700000000000000000", "x", "1e30", 1.5]) | st.none()


@st.composite
def otlp_shaped(draw) -> dict:
    """OTLP/JSON as an exporter (or an attacker) might send it: right shape, any values."""
    def span():
        doc = {"traceId": draw(hexid), "spanId": draw(hexid), "name": draw(st.sampled_from(["llm_request", "x"])),
               "startTimeUnixNano": draw(nanos), "endTimeUnixNano": draw(nanos), "attributes": draw(attrs),
               "status": draw(st.sampled_from([{}, {"code": 2}, {"code": "STATUS_CODE_ERROR"}, {"code": 99}, []]))}
        if draw(st.booleans()):
            doc["links"] = draw(st.lists(st.builds(lambda t, s: {"traceId": t, "spanId": s}, hexid, hexid),
                                         max_size=2) | any_json)
        return {k: v for k, v in doc.items() if v is not None}

    spans_key = draw(st.sampled_from(["scopeSpans", "scope_spans", "instrumentationLibrarySpans"]))
    doc = {"resourceSpans": [
        {"resource": {"attributes": draw(attrs)},
         spans_key: [{"spans": [span() for _ in range(draw(st.integers(0, 3)))]}]}
        for _ in range(draw(st.integers(0, 2)))
    ]}
    return doc


otlp_document = st.one_of(otlp_shaped(), any_json, st.builds(lambda v: {"resourceSpans": v}, any_json))


def _deep(n: int) -> bytes:
    return (b'{"resourceSpans": ' + b"[" * n + b"]" * n + b"}")


@FUZZ
@given(otlp_document)
@example({"resourceSpans": [{"resource": {"attributes": [
    {"key": "service.instance.id", "value": {"stringValue": "http://10.0.0.11:99999"}}]},
    "scopeSpans": [{"spans": [{"name": "llm_request"}]}]}]})
@example({"resourceSpans": [{"resource": {"attributes": [
    {"key": "service.instance.id", "value": {"stringValue": "http://[::1"}}]},
    "scopeSpans": [{"spans": [{"name": "llm_request"}]}]}]})
def test_the_receiver_answers_any_json_document(document) -> None:
    receiver = TraceReceiver(lambda records: None, ROUTING, max_body=1 << 20)
    body = json.dumps(document).encode()
    outcome = receiver.process(body, "application/json", None, received_at=1.7e9)
    assert outcome.status in (200, 400), outcome
    protobuf = _as_protobuf(document)
    if protobuf is not None:  # the same content through the protobuf path
        outcome = receiver.process(protobuf, "application/x-protobuf", None, received_at=1.7e9)
        assert outcome.status == 200, outcome


def _as_protobuf(document: object) -> bytes | None:
    try:
        return parse_request(json.dumps(document).encode(), JSON).SerializeToString()
    except OtlpError:
        return None


@FEW
@given(st.binary(max_size=400) | st.builds(lambda n: _deep(n), st.integers(50, 50_000)),
       st.sampled_from([JSON, PROTOBUF]))
@example(_deep(100_000), JSON)
@example(b"\n\x02\n\x00" * 2 + b"\x0a\xff\xff\xff\xff\x0f", PROTOBUF)
def test_parse_request_raises_only_malformed_payload(body: bytes, fmt: str) -> None:
    try:
        request = parse_request(body, fmt)
    except OtlpError as exc:
        assert exc.status == 400 and exc.message
    else:
        assert isinstance(request, ExportTraceServiceRequest)


FALLBACK = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "llama"}}]},
                                "scopeSpans": [{"spans": [{"name": "llm_request", "traceId": "ab" * 16,
                                                           "spanId": "cd" * 8, "endTimeUnixNano": "1700000000000000000",
                                                           "attributes": [{"key": "gen_ai.latency.e2e",
                                                                           "value": {"doubleValue": 1.5}}]}]}]}]}


@FEW
@given(otlp_shaped(), st.data())
def test_the_receiver_answers_any_mutated_protobuf(document, data) -> None:
    """Valid protobuf exports with bytes flipped, cut or inserted: an answer, never an exception."""
    body = _as_protobuf(document) or _as_protobuf(FALLBACK)
    assert body
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body)))
        body = body[:at] + data.draw(st.binary(max_size=3)) + body[at + data.draw(st.integers(0, 3)):]
    receiver = TraceReceiver(lambda records: None, ROUTING, max_body=1 << 20)
    encoding = data.draw(st.sampled_from([None, "gzip"]))
    sent = gzip.compress(body) if encoding else body
    outcome = receiver.process(sent, data.draw(st.sampled_from(["application/x-protobuf", "application/protobuf"])),
                               encoding, received_at=1.7e9)
    assert outcome.status in (200, 400), outcome


def test_json_format_round_trip_of_a_generated_document_is_stable() -> None:
    """Guard for the generator above: a plain document decodes to what the protobuf path decodes."""
    doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "llama"}}]},
                              "scopeSpans": [{"spans": [{"name": "llm_request", "traceId": "ab" * 16,
                                                         "spanId": "cd" * 8, "attributes": [
                                  {"key": "gen_ai.latency.e2e", "value": {"doubleValue": 1.5}}]}]}]}]}
    request = parse_request(json.dumps(doc).encode(), JSON)
    again = ExportTraceServiceRequest()
    again.ParseFromString(request.SerializeToString())
    assert json_format.MessageToDict(again) == json_format.MessageToDict(request)
    outcome = TraceReceiver(lambda records: None, ROUTING).process(request.SerializeToString(), PROTOBUF, None,
                                                                   received_at=1.7e9)
    assert outcome.status == 200 and len(outcome.records) == 1
