"""vLLM-shaped trace spans made by the real OpenTelemetry SDK, for the OTLP receiver and traces tests."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode


def vllm_spans(resource: dict, requests: list[dict]) -> list:
    """Finished spans shaped like vLLM V1's `llm_request` (OutputProcessor.do_tracing), made by the SDK."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("vllm.v1.engine.output_processor")
    for req in requests:
        attributes = {
            "gen_ai.request.id": req["id"],
            "gen_ai.usage.prompt_tokens": req.get("prompt", 100),
            "gen_ai.usage.completion_tokens": req["out"],
            "gen_ai.request.max_tokens": 256,
            "gen_ai.latency.time_in_queue": req.get("queue", 0.01),
            "gen_ai.latency.time_to_first_token": req["ttft"],
            "gen_ai.latency.e2e": req["e2e"],
            "gen_ai.latency.time_in_model_prefill": req["ttft"] - req.get("queue", 0.01),
        }
        if "model" in req:  # V0 spans name the model; V1 spans do not
            attributes["gen_ai.response.model"] = req["model"]
        attributes.update(req.get("extra", {}))
        start = int(req["arrival"] * 1e9)
        span = tracer.start_span(req.get("name", "llm_request"), kind=SpanKind.SERVER, start_time=start,
                                 attributes=attributes)
        if req.get("error"):
            span.set_status(Status(StatusCode.ERROR, "request failed"))
        span.end(end_time=start + int(req["e2e"] * 1e9))
    provider.shutdown()
    return list(memory.get_finished_spans())
