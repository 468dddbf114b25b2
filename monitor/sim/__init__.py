"""A simulated vLLM fleet: many engine models on one asyncio loop, each behind vLLM's HTTP surface.

No GPU or vLLM exists where the monitor is built and tested, yet every test, benchmark and the demo
needs servers that queue, batch, run out of KV cache and fail the way vLLM does, and that print the
same /metrics pages. `engine` models the scheduler, `metrics` prints the pages (V1 or V0 names),
`server` adds the OpenAI-compatible endpoints and fault injection, `fleet` runs N of them.
"""
