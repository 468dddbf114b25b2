"""vLLM `llm_request` spans → one `RequestRecord` per request, placed in a pool (and instance).

Attributes read (docs/gpus-and-traces.md; all latencies in seconds):
- `gen_ai.latency.time_to_first_token` (TTFT), `gen_ai.latency.e2e`, `gen_ai.latency.time_in_queue`:
  every vLLM version with tracing (0.5.1+, V0 and V1);
- `gen_ai.usage.prompt_tokens` / `completion_tokens` (`input_tokens` / `output_tokens` where an old
  semconv package named them so);
- `gen_ai.response.model`: V0 only; V1 spans carry no model, so `Routing.model_of` may supply the
  pool's served model (from the scrapes), else the record's model is None;
- `gen_ai.request.id`; the finish status from `gen_ai.response.finish_reasons` where a sender sets it,
  else the span status (ERROR → error).
TPOT is derived, as the issue and vLLM's benchmark define it: (e2e − TTFT) / (output tokens − 1),
None with fewer than two output tokens (there is no inter-token gap to measure).

Placement follows docs/api.md (`POST /v1/traces`): the resource attribute `service.instance.id` names the instance
(`host:port` as in the pool's targets; a URL is reduced to that), else `service.name` names the pool.
A request span that neither places is rejected (counted in the partial-success answer, with the
reason), since counting it in no pool or a guessed one would both be wrong. Other spans in the same
export (vLLM 0.16's start-up spans, a client's own spans) are not requests: ignored, not rejected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from monitor.units import instance_address

REQUEST_SPAN = "llm_request"
A_TTFT = "gen_ai.latency.time_to_first_token"
A_E2E = "gen_ai.latency.e2e"
A_QUEUE = "gen_ai.latency.time_in_queue"
A_PROMPT = ("gen_ai.usage.prompt_tokens", "gen_ai.usage.input_tokens")
A_OUTPUT = ("gen_ai.usage.completion_tokens", "gen_ai.usage.output_tokens")
A_MODEL = ("gen_ai.response.model", "gen_ai.request.model")
A_REQUEST_ID = "gen_ai.request.id"
A_FINISH = "gen_ai.response.finish_reasons"
R_INSTANCE = "service.instance.id"
R_SERVICE = "service.name"

MAX_CLOCK_SKEW_S = 300.0
MAX_PROBLEMS_SHOWN = 5

RequestStatus = Literal["ok", "error", "abort"]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as its span reported it. `at` is when it finished (unix seconds)."""

    pool: str
    instance: str | None
    model: str | None
    at: float
    e2e_s: float
    ttft_s: float | None = None
    tpot_s: float | None = None
    queue_s: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    status: RequestStatus = "ok"
    finish_reason: str | None = None
    request_id: str | None = None
    trace_id: str = ""
    span_id: str = ""

    @property
    def completed(self) -> bool:
        """Finished normally: neither an error nor a client abort."""
        return self.status == "ok"

    @property
    def key(self) -> tuple[str, str] | None:
        """Identity for de-duplication (an exporter retrying an export it thinks failed)."""
        return (self.trace_id, self.span_id) if self.trace_id and self.span_id else None


def tpot(e2e_s: float | None, ttft_s: float | None, output_tokens: int | None) -> float | None:
    """(e2e − TTFT) / (output tokens − 1); None below two output tokens or without the inputs."""
    if e2e_s is None or ttft_s is None or output_tokens is None or output_tokens < 2:
        return None
    return max(e2e_s - ttft_s, 0.0) / (output_tokens - 1)


class Routing:
    """Resource attributes → (pool, instance). Built from the config's pools; pure afterwards.

    `model_of(pool, instance)` supplies a model for spans that carry none (vLLM V1): the service can
    pass the model_name its scrapes saw for that instance or pool.
    """

    def __init__(self, pools: Mapping[str, Sequence[str]],
                 model_of: Callable[[str, str | None], str | None] | None = None) -> None:
        self._pool_of = {inst.lower(): pool for pool, insts in pools.items() for inst in insts}
        self._pools = set(pools)
        self.model_of = model_of

    def place(self, instance_id: str | None, service_name: str | None) -> tuple[str, str | None] | str:
        """(pool, instance or None), or a message saying why the span belongs nowhere."""
        if instance_id:
            text = instance_id.strip()
            try:
                address = instance_address(text) if "://" in text else text.lower()
            except ValueError:  # a URL that does not parse (port 99999, `http://[::1`): no target's
                address = text.lower()
            pool = self._pool_of.get(address)
            if pool is not None:
                return pool, address
        if service_name and service_name in self._pools:
            return service_name, None
        shown = []
        if instance_id:
            shown.append(f"{R_INSTANCE} {instance_id!r} is not a target of any pool")
        if service_name:
            shown.append(f"{R_SERVICE} {service_name!r} is not a pool")
        if not shown:
            return f"no {R_INSTANCE} or {R_SERVICE} resource attribute names the pool"
        return " and ".join(shown)


@dataclass(slots=True)
class Extraction:
    """What one export request gave: records, and the spans refused with the first reasons."""

    records: list[RequestRecord] = field(default_factory=list)
    spans: int = 0
    ignored: int = 0  # not request spans
    rejected: int = 0
    problems: list[str] = field(default_factory=list)
    _problem_count: int = 0

    def reject(self, problem: str) -> None:
        self.rejected += 1
        self._problem_count += 1
        if len(self.problems) < MAX_PROBLEMS_SHOWN and problem not in self.problems:
            self.problems.append(problem)

    @property
    def message(self) -> str:
        """The partial-success error_message: the first distinct problems, and how many more."""
        if not self.rejected:
            return ""
        more = self._problem_count - len(self.problems)
        text = "; ".join(self.problems)
        return f"{self.rejected} span(s) rejected: {text}" + (f" (and {more} more)" if more > 0 else "")


def _any(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _any(kv.value) for kv in kvs}


class _Bad(Exception):
    pass


def _number(attrs: Mapping[str, Any], key: str) -> float | None:
    value = attrs.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Bad(f"{key} is {type(value).__name__}, not a number")
    try:
        number = float(value)
    except ValueError:
        raise _Bad(f"{key} is {value!r:.40}, not a number") from None
    if not math.isfinite(number) or number < 0:
        raise _Bad(f"{key} is {number}, not a finite number of seconds >= 0")
    return number


def _count(attrs: Mapping[str, Any], keys: Sequence[str]) -> int | None:
    for key in keys:
        value = _number(attrs, key)
        if value is not None:
            if not value.is_integer():
                raise _Bad(f"{key} is {value}, not a whole number of tokens")
            return int(value)
    return None


def _text(attrs: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def is_request_span(name: str, attrs: Mapping[str, Any]) -> bool:
    return name == REQUEST_SPAN or A_E2E in attrs or A_TTFT in attrs


def extract_records(request: ExportTraceServiceRequest, routing: Routing, *, received_at: float,
                    max_clock_skew_s: float = MAX_CLOCK_SKEW_S) -> Extraction:
    """Every request span of `request` as a record, or a rejection with its reason."""
    out = Extraction()
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        instance_id, service = resource.get(R_INSTANCE), resource.get(R_SERVICE)
        placed = routing.place(instance_id if isinstance(instance_id, str) else None,
                               service if isinstance(service, str) else None)
        for ss in rs.scope_spans:
            for span in ss.spans:
                out.spans += 1
                attrs = attributes(span.attributes)
                if not is_request_span(span.name, attrs):
                    out.ignored += 1
                    continue
                if isinstance(placed, str):
                    out.reject(placed)
                    continue
                try:
                    out.records.append(_record(span, attrs, placed, routing, received_at, max_clock_skew_s))
                except _Bad as exc:
                    out.reject(f"span {span.span_id.hex() or '?'}: {exc}")
    return out


def _record(span: Any, attrs: Mapping[str, Any], placed: tuple[str, str | None], routing: Routing,
            received_at: float, max_skew: float) -> RequestRecord:
    pool, instance = placed
    ttft = _number(attrs, A_TTFT)
    e2e = _number(attrs, A_E2E)
    start, end = span.start_time_unix_nano / 1e9, span.end_time_unix_nano / 1e9
    if e2e is None:  # the span covers arrival → finish, so its duration is the e2e latency
        if not start or end < start:
            raise _Bad(f"no {A_E2E} attribute and no valid span start/end times")
        e2e = end - start
    output = _count(attrs, A_OUTPUT)
    at = end if end else received_at
    if abs(at - received_at) > max_skew:  # a sender's clock far off: when we heard of it is closer
        at = received_at
    model = _text(attrs, A_MODEL)
    if model is None and routing.model_of is not None:
        model = routing.model_of(pool, instance)
    finish = attrs.get(A_FINISH)
    if isinstance(finish, list):
        finish = finish[0] if finish else None
    finish = str(finish) if finish is not None else None
    if span.status.code == Status.STATUS_CODE_ERROR or finish == "error":
        status: RequestStatus = "error"
    elif finish == "abort":
        status = "abort"
    else:
        status = "ok"
    request_id = attrs.get(A_REQUEST_ID)
    return RequestRecord(
        pool=pool, instance=instance, model=model, at=at, e2e_s=e2e, ttft_s=ttft, tpot_s=tpot(e2e, ttft, output),
        queue_s=_number(attrs, A_QUEUE), prompt_tokens=_count(attrs, A_PROMPT), output_tokens=output,
        status=status, finish_reason=finish, request_id=str(request_id) if request_id is not None else None,
        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
    )
