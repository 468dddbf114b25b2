"""`--otlp-endpoint URL`: simulated instances send one `llm_request` span per finished request, as vLLM V1 does.

Shaped like vLLM V1's `OutputProcessor.do_tracing` (0.10.2+; docs/gpus-and-traces.md): a SERVER
span named `llm_request` starting at the request's arrival and ending when its last token was
produced, with `gen_ai.latency.*` (seconds) and `gen_ai.usage.*` attributes, and no model attribute
(V1 sends none; the receiver takes the model its scrapes saw). As in V1, only requests the engine
finished (`stop`, `length`) get a span: a request the client aborted or the engine failed does not.
The resource names `service.name` (vLLM takes it from OTEL_SERVICE_NAME) and `service.instance.id`,
the instance's `host:port` as the monitor's pool targets name it.

Sent with the real opentelemetry-sdk: one `TracerProvider` per instance (the resource is per provider)
sharing one `BatchSpanProcessor` and one OTLP/HTTP `OTLPSpanExporter`, so a fleet of N instances costs
one exporter thread, not N. Ending a span only appends it to the processor's bounded queue (spans are
dropped, with the SDK's warning, when it is full): the engine's step loop never waits on the network.
The processor's schedule is the SDK's (5 s, `OTEL_BSP_SCHEDULE_DELAY` overrides), as for vLLM.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Tracer

from monitor.sim.request import SimRequest

log = logging.getLogger("monitor.sim")

SPAN_NAME = "llm_request"
SCOPE = "vllm.v1.engine.output_processor"  # where vLLM V1 creates the span
TRACED_REASONS = ("stop", "length")
DEFAULT_SERVICE_NAME = "vllm"
EXPORT_TIMEOUT_S = 5.0
SHUTDOWN_TIMEOUT_S = 10.0


def span_attributes(req: SimRequest) -> dict[str, Any]:
    """vLLM V1's `llm_request` attributes for a finished request (do_tracing's arithmetic)."""
    assert req.first_token_at is not None and req.last_token_at is not None and req.finished_at is not None
    scheduled = req.scheduled_at if req.scheduled_at is not None else req.arrival
    attributes: dict[str, Any] = {
        "gen_ai.latency.time_to_first_token": req.first_token_at - req.arrival,
        "gen_ai.latency.e2e": req.finished_at - req.arrival,
        "gen_ai.latency.time_in_queue": scheduled - req.arrival,
        "gen_ai.usage.prompt_tokens": req.prompt_len,
        "gen_ai.usage.completion_tokens": req.generated,
        "gen_ai.latency.time_in_model_prefill": req.first_token_at - scheduled,
        "gen_ai.latency.time_in_model_decode": req.last_token_at - req.first_token_at,
        "gen_ai.latency.time_in_model_inference": req.last_token_at - scheduled,
        "gen_ai.request.id": req.id,
        "gen_ai.request.n": 1,
    }
    if req.max_tokens_param:  # V1 sets it only when the request did
        attributes["gen_ai.request.max_tokens"] = req.max_tokens_param
    return attributes


class InstanceTracer:
    """One instance's tracer: what the engine calls when a request finishes."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self.sent = 0

    def finished(self, req: SimRequest) -> None:
        """Emit the request's span if vLLM V1 would; never blocks (the processor only queues it)."""
        if req.finish_reason not in TRACED_REASONS or req.first_token_at is None or req.finished_at is None:
            return
        start = int(req.arrival * 1e9)
        span = self._tracer.start_span(SPAN_NAME, kind=SpanKind.SERVER, start_time=start,
                                       attributes=span_attributes(req))
        span.end(end_time=int(req.finished_at * 1e9))
        self.sent += 1


class SpanSender:
    """The fleet's OTLP/HTTP span pipeline: `tracer(instance)` per instance, `shutdown()` once at the end."""

    def __init__(self, endpoint: str, *, service_name: str = DEFAULT_SERVICE_NAME,
                 headers: dict[str, str] | None = None, schedule_delay_ms: float | None = None) -> None:
        self.endpoint = endpoint
        self.service_name = service_name
        self.exporter = OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=EXPORT_TIMEOUT_S)
        self.processor = BatchSpanProcessor(self.exporter, schedule_delay_millis=schedule_delay_ms)
        self._providers: list[TracerProvider] = []
        self._closed = False

    def tracer(self, instance: str) -> InstanceTracer:
        """A tracer whose spans carry `service.instance.id` = `instance` (host:port)."""
        resource = Resource.create({"service.name": self.service_name, "service.instance.id": instance})
        # shutdown_on_exit False: the shared processor is shut down once, by `shutdown`
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        provider.add_span_processor(self.processor)
        self._providers.append(provider)
        return InstanceTracer(provider.get_tracer(SCOPE))

    def force_flush(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Export everything queued now (blocking: call from a thread, not the event loop)."""
        return self.processor.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Flush what is queued and stop the exporter thread (blocking, bounded by the SDK's timeouts)."""
        if self._closed:
            return
        self._closed = True
        self.force_flush()
        self.processor.shutdown()
