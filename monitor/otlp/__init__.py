"""OTLP/HTTP trace receiver: vLLM's per-request spans → request records → goodput and exact SLIs.

- `decode`: body → `ExportTraceServiceRequest` (protobuf or OTLP/JSON, gzip/deflate, size caps), and the
  response / error bodies the OTLP specification asks for;
- `records`: spans → `RequestRecord`s (TTFT, TPOT, e2e, queue, tokens, model, status), placed in a pool
  and instance by `Routing`;
- `store`: `TraceStore`, the rolling, de-duplicated window of records the service keeps;
- `goodput`: pure goodput and latency-SLI arithmetic over records;
- `receiver`: `TraceReceiver` / `make_router`, the FastAPI route `POST /v1/traces`.
"""
