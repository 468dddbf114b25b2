"""`POST /v1/traces`: the OTLP/HTTP trace endpoint vLLM's `--otlp-traces-endpoint` exports to.

Answers as the OTLP specification says: 200 with an `ExportTraceServiceResponse` in the request's
encoding (a `partial_success` naming rejected spans), 400 for a body that does not decode, 413 for
one over the cap (before or after decompression), 415 for another Content-Type or Content-Encoding,
503 if the records cannot be kept (retryable: the sender tries again, and de-duplication makes that
safe). Error bodies are `google.rpc.Status` messages whose `message` names the problem.

The body is decoded and checked whole before the sink sees any record, so a malformed request adds
nothing, and what earlier requests delivered is untouched. Decoding a large body is CPU work; it runs
in a worker thread so the scrape loop sharing the event loop keeps its deadlines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from fastapi import APIRouter, Request
from fastapi.params import Depends
from fastapi.responses import Response

from monitor.otlp.decode import (
    DEFAULT_MAX_BODY,
    JSON,
    PROTOBUF,
    OtlpError,
    PayloadTooLarge,
    body_format,
    decompress,
    encode_response,
    encode_status,
    parse_request,
)
from monitor.otlp.records import RequestRecord, Routing, extract_records

log = logging.getLogger("monitor.otlp")

RecordSink = Callable[[Sequence[RequestRecord]], Any]
OFFLOAD_ABOVE = 64 * 1024  # bytes of body above which decoding moves to a worker thread


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one export request comes to: the HTTP answer, and the records to hand to the sink."""

    status: int
    body: bytes
    media_type: str
    records: tuple[RequestRecord, ...] = ()
    rejected: int = 0
    ignored: int = 0
    error: str | None = None


@dataclass(slots=True)
class ReceiverStats:
    """Counters for /metrics: requests by HTTP status, spans by fate."""

    requests: dict[int, int] = field(default_factory=dict)
    spans_accepted: int = 0
    spans_rejected: int = 0
    spans_ignored: int = 0
    last_error: str | None = None
    last_request_at: float | None = None


class TraceReceiver:
    """Decode → extract → sink. `process` is the pure part; `router()` the FastAPI route around it."""

    def __init__(self, sink: RecordSink, routing: Routing, *, max_body: int = DEFAULT_MAX_BODY,
                 clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.routing = routing
        self.max_body = max_body
        self.clock = clock
        self.stats = ReceiverStats()

    def process(self, body: bytes, content_type: str | None, content_encoding: str | None,
                received_at: float | None = None) -> Outcome:
        """The answer to one export, without side effects on the sink (the caller hands on records)."""
        fmt = JSON
        try:
            fmt = body_format(content_type)
            raw = decompress(body, content_encoding, self.max_body)
            request = parse_request(raw, fmt)
        except OtlpError as exc:
            return Outcome(exc.status, encode_status(fmt, exc.status, exc.message), fmt, error=exc.message)
        found = extract_records(request, self.routing, received_at=self.clock() if received_at is None else received_at)
        return Outcome(200, encode_response(fmt, found.rejected, found.message), fmt, tuple(found.records),
                       found.rejected, found.ignored, found.message or None)

    async def handle(self, request: Request) -> Response:
        """Read the body under the cap, process, hand records to the sink, answer."""
        received_at = self.clock()
        try:
            body = await self.read_capped(request)
        except PayloadTooLarge as exc:
            fmt = _format_or_json(request.headers.get("content-type"))
            return self._answer(Outcome(413, encode_status(fmt, 413, exc.message), fmt, error=exc.message),
                                received_at, request)
        args = (body, request.headers.get("content-type"), request.headers.get("content-encoding"), received_at)
        outcome = await asyncio.to_thread(self.process, *args) if len(body) > OFFLOAD_ABOVE else self.process(*args)
        if outcome.records:
            try:
                self.sink(outcome.records)
            except Exception as exc:  # the sender must retry, not lose the batch
                log.exception("trace records could not be stored")
                message = f"spans could not be stored: {type(exc).__name__}: {exc}"
                fmt = outcome.media_type
                outcome = Outcome(503, encode_status(fmt, 503, message), fmt, error=message)
        return self._answer(outcome, received_at, request)

    def _answer(self, outcome: Outcome, received_at: float, request: Request) -> Response:
        s = self.stats
        s.requests[outcome.status] = s.requests.get(outcome.status, 0) + 1
        s.last_request_at = received_at
        if outcome.status == 200:
            s.spans_accepted += len(outcome.records)
            s.spans_rejected += outcome.rejected
            s.spans_ignored += outcome.ignored
        if outcome.error:
            s.last_error = outcome.error
            client = request.client.host if request.client else "?"
            log.log(logging.WARNING if outcome.status != 200 else logging.INFO,
                    "OTLP export from %s: HTTP %d: %s", client, outcome.status, outcome.error)
        media = PROTOBUF if outcome.media_type == PROTOBUF else JSON
        return Response(outcome.body, status_code=outcome.status, media_type=media)

    async def read_capped(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise PayloadTooLarge(f"body of {declared} bytes is over the {self.max_body}-byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLarge(f"body is over the {self.max_body}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def router(self, *, path: str = "/v1/traces", dependencies: Sequence[Depends] = ()) -> APIRouter:
        """An APIRouter with `POST {path}`; `dependencies` e.g. the API's bearer-token check."""
        router = APIRouter(dependencies=list(dependencies))

        async def export_traces(request: Request) -> Response:
            return await self.handle(request)

        router.add_api_route(path, export_traces, methods=["POST"], response_class=Response,
                             summary="OTLP/HTTP trace export (protobuf or JSON)", include_in_schema=True)
        return router


def _format_or_json(content_type: str | None) -> str:
    try:
        return body_format(content_type)
    except OtlpError:
        return JSON


def make_router(sink: RecordSink, routing: Routing, *, max_body: int = DEFAULT_MAX_BODY,
                dependencies: Sequence[Depends] = ()) -> APIRouter:
    """Shortcut for `TraceReceiver(sink, routing, max_body=...).router(...)` when no stats are needed."""
    return TraceReceiver(sink, routing, max_body=max_body).router(dependencies=dependencies)
