"""OTLP/HTTP request bodies → `ExportTraceServiceRequest`, and the bodies we answer with.

Following the OTLP specification (protocol/otlp.md, "OTLP/HTTP"):
- `Content-Type: application/x-protobuf` is the binary protobuf encoding, `application/json` the
  OTLP/JSON mapping: proto3 JSON except that trace and span ids are **hex** strings (not base64),
  keys lowerCamelCase (original names accepted too), enums as integers, 64-bit integers as strings
  or numbers, and unknown fields ignored;
- `Content-Encoding: gzip` must be accepted; `deflate` is accepted too (the Python exporter offers it);
- the answer uses the request's encoding: `ExportTraceServiceResponse`, whose `partial_success` is
  left unset when everything was accepted; a failure answers a `google.rpc.Status` with a message.

Every error here names the problem so the sender's log says what to fix, and nothing is handed on
until the whole body decoded: a malformed request adds nothing and takes nothing away.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DEFAULT_MAX_BODY = 4 * 2**20

# google.rpc.Code values the Status carries (informative only: OTLP clients act on the HTTP status)
_RPC_CODE = {400: 3, 413: 8, 415: 3, 503: 14}


class OtlpError(Exception):
    """A request we refuse, with the HTTP status to answer and a message naming the problem."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedPayload(OtlpError):
    status = 400


class PayloadTooLarge(OtlpError):
    status = 413


class UnsupportedMedia(OtlpError):
    status = 415


def body_format(content_type: str | None) -> str:
    """PROTOBUF or JSON from the Content-Type header (parameters such as charset ignored)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in ("application/x-protobuf", "application/protobuf"):
        return PROTOBUF
    if media == "application/json":
        return JSON
    shown = f"'{media}'" if media else "none"
    raise UnsupportedMedia(f"unsupported Content-Type {shown}: OTLP/HTTP takes application/x-protobuf "
                           "or application/json")


def decompress(body: bytes, content_encoding: str | None, max_size: int) -> bytes:
    """The body without its Content-Encoding, refusing to inflate past `max_size` (gzip bombs)."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return _inflate(body, 16 + zlib.MAX_WBITS, "gzip", max_size)
    if encoding == "deflate":
        try:
            return _inflate(body, zlib.MAX_WBITS, "deflate", max_size)
        except MalformedPayload:  # some clients send raw deflate without the zlib header
            return _inflate(body, -zlib.MAX_WBITS, "deflate", max_size)
    raise UnsupportedMedia(f"unsupported Content-Encoding '{encoding}': use gzip, deflate or none")


def _inflate(data: bytes, wbits: int, name: str, max_size: int) -> bytes:
    out = bytearray()
    rest = data
    try:
        while rest:  # a gzip body may hold several members
            d = zlib.decompressobj(wbits)
            out += d.decompress(rest, max_size + 1 - len(out))
            if len(out) > max_size:
                raise PayloadTooLarge(f"body larger than {max_size} bytes once decompressed")
            if d.unconsumed_tail:
                raise PayloadTooLarge(f"body larger than {max_size} bytes once decompressed")
            if not d.eof:
                raise MalformedPayload(f"{name} body is truncated (the compressed stream ends early)")
            rest = d.unused_data
            if wbits < 16:  # zlib / raw deflate: one stream only
                if rest:
                    raise MalformedPayload(f"{name} body has {len(rest)} bytes after the end of the stream")
                break
    except zlib.error as exc:
        raise MalformedPayload(f"body is not valid {name}: {exc}") from None
    return bytes(out)


def parse_request(body: bytes, fmt: str) -> ExportTraceServiceRequest:
    """An `ExportTraceServiceRequest` from a decompressed body, or MalformedPayload saying why."""
    if fmt == PROTOBUF:
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise MalformedPayload(f"protobuf body does not decode as ExportTraceServiceRequest: "
                                   f"{exc or 'invalid wire format'}") from None
        return request
    try:
        document = json.loads(body)
    except UnicodeDecodeError:
        raise MalformedPayload("JSON body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise MalformedPayload(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # `[[[[...` a few thousand deep: Python's decoder recurses per level
        raise MalformedPayload("JSON body is nested too deeply") from None
    if not isinstance(document, dict):
        raise MalformedPayload(f"JSON body must be an object with resourceSpans, not {type(document).__name__}")
    _ids_hex_to_base64(document)
    try:
        return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError) as exc:
        raise MalformedPayload(f"JSON body is not an OTLP ExportTraceServiceRequest: {exc}") from None
    except RecursionError:  # AnyValue arrays/kvlists nested hundreds deep
        raise MalformedPayload("JSON body is nested too deeply") from None


_ID_BYTES = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8, "parentSpanId": 8, "parent_span_id": 8}


def _ids_hex_to_base64(document: dict[str, Any]) -> None:
    """OTLP/JSON ids are hex; protobuf's JSON parser reads bytes as base64. Convert in place, and
    rename the pre-1.0 `instrumentationLibrarySpans` to `scopeSpans` (same wire shape)."""
    resource_spans = _child(document, "resourceSpans", "resource_spans")
    for i, rs in enumerate(_list(resource_spans, "resourceSpans")):
        where = f"resourceSpans[{i}]"
        _object(rs, where)
        for legacy in ("instrumentationLibrarySpans", "instrumentation_library_spans"):
            if legacy in rs and "scopeSpans" not in rs and "scope_spans" not in rs:
                rs["scopeSpans"] = rs.pop(legacy)
                for ss in rs["scopeSpans"] if isinstance(rs["scopeSpans"], list) else ():
                    if isinstance(ss, dict) and "instrumentationLibrary" in ss:
                        ss["scope"] = ss.pop("instrumentationLibrary")
        for j, ss in enumerate(_list(_child(rs, "scopeSpans", "scope_spans"), f"{where}.scopeSpans")):
            _object(ss, f"{where}.scopeSpans[{j}]")
            for k, span in enumerate(_list(ss.get("spans"), f"{where}.scopeSpans[{j}].spans")):
                span_where = f"{where}.scopeSpans[{j}].spans[{k}]"
                _object(span, span_where)
                _convert_ids(span, span_where)
                for n, link in enumerate(_list(span.get("links"), f"{span_where}.links")):
                    _object(link, f"{span_where}.links[{n}]")
                    _convert_ids(link, f"{span_where}.links[{n}]")


def _child(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj.get(camel, obj.get(snake))


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedPayload(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _object(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise MalformedPayload(f"{where}: expected an object, got {type(value).__name__}")


def _convert_ids(obj: dict[str, Any], where: str) -> None:
    for key, size in _ID_BYTES.items():
        if key not in obj or obj[key] in (None, ""):
            continue
        text = obj[key]
        if not isinstance(text, str) or len(text) != 2 * size:
            raise MalformedPayload(f"{where}.{key}: expected {2 * size} hex digits (OTLP/JSON ids are hex, "
                                   f"not base64), got {text!r:.60}")
        try:
            raw = binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            raise MalformedPayload(f"{where}.{key}: not hex: {text!r:.60}") from None
        obj[key] = base64.b64encode(raw).decode("ascii")


# -- answers ---------------------------------------------------------------------------------------


def encode_response(fmt: str, rejected_spans: int = 0, error_message: str = "") -> bytes:
    """ExportTraceServiceResponse; `partial_success` only when something was rejected or needs saying."""
    response = ExportTraceServiceResponse()
    if rejected_spans or error_message:
        response.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=rejected_spans,
                                                                    error_message=error_message))
    if fmt == JSON:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


def encode_status(fmt: str, http_status: int, message: str) -> bytes:
    """A google.rpc.Status body: `{code, message}`. Protobuf written by hand (two fields) rather
    than depending on googleapis-common-protos for one message."""
    code = _RPC_CODE.get(http_status, 2)
    if fmt == JSON:
        return json.dumps({"code": code, "message": message}).encode()
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
