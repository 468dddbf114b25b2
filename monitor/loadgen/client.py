"""One streamed request, timed from the client's side.

TTFT is measured to the first chunk that carries text (a chat stream's opening role-only chunk does
not count), ITL between successive text chunks, as vLLM's benchmark client does. What the client
measures includes the network and HTTP stack, which is why it can differ from the server's histograms.
"""

from __future__ import annotations

import asyncio
import json
import time
from array import array
from dataclasses import dataclass, field

import httpx

from monitor.http1 import ConnectionPool, Exchange, RawHttpError
from monitor.loadgen.workload import RequestSpec


@dataclass(slots=True)
class Outcome:
    target: str
    started: float  # perf_counter seconds
    prompt_tokens: int
    ok: bool = False
    status: int | None = None
    error: str | None = None
    ttft: float | None = None
    e2e: float | None = None
    output_tokens: int = 0
    itls: array = field(default_factory=lambda: array("d"))

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first, per request (vLLM's TPOT)."""
        if not self.ok or self.ttft is None or self.e2e is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


STREAM_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"}


def request_body(spec: RequestSpec, model: str, chat: bool) -> dict:
    body: dict = {"model": model, "max_tokens": spec.max_tokens, "ignore_eos": True, "stream": True,
                  "stream_options": {"include_usage": True}, "temperature": 0.0}
    if chat:
        body["messages"] = [{"role": "user", "content": spec.prompt}]
    else:
        body["prompt"] = spec.prompt
    return body


def _text_of(chunk: dict, chat: bool) -> str:
    choices = chunk.get("choices") or ()
    if not choices:
        return ""
    choice = choices[0]
    if chat:
        return (choice.get("delta") or {}).get("content") or ""
    return choice.get("text") or ""


class _StreamTimer:
    """Reads the server-sent events of one answer and times the text chunks."""

    def __init__(self, outcome: Outcome, chat: bool) -> None:
        self.outcome = outcome
        self.chat = chat
        self.last: float | None = None
        self.usage_tokens: int | None = None

    def feed(self, line: str) -> bool:
        """Take one line; True when the stream is over ([DONE] or an error event)."""
        if not line.startswith("data:"):
            return False
        payload = line[5:].strip()
        if payload == "[DONE]":
            return True
        chunk = json.loads(payload)
        if "error" in chunk:
            self.outcome.error = f"stream error: {chunk['error']}"
            return True
        if chunk.get("usage"):
            self.usage_tokens = chunk["usage"].get("completion_tokens")
        if _text_of(chunk, self.chat):
            now = time.perf_counter()
            if self.last is None:
                self.outcome.ttft = now - self.outcome.started
            else:
                self.outcome.itls.append(now - self.last)
            self.last = now
            self.outcome.output_tokens += 1
        return False

    def finish(self) -> Outcome:
        o = self.outcome
        if o.error is not None:
            return o
        o.e2e = time.perf_counter() - o.started
        if self.usage_tokens is not None:
            o.output_tokens = self.usage_tokens
        o.ok = o.ttft is not None
        if not o.ok:
            o.error = "no tokens in the response"
        return o


async def send(client: httpx.AsyncClient, target: str, spec: RequestSpec, model: str, *, chat: bool = False,
               pool: ConnectionPool | None = None) -> Outcome:
    """Send one request and time it; never raises for server or network failures. Plain-http targets
    go through `pool` (the lean client) when one is given, others through httpx."""
    path = "/v1/chat/completions" if chat else "/v1/completions"
    outcome = Outcome(target=target, started=time.perf_counter(), prompt_tokens=spec.prompt_tokens)
    timer = _StreamTimer(outcome, chat)
    body = request_body(spec, model, chat)
    try:
        if pool is not None and target.startswith("http://"):
            async with Exchange(pool, target + path, json.dumps(body).encode(), headers=STREAM_HEADERS) as response:
                outcome.status = response.status
                if response.status != 200:
                    text = (await response.read())[:300].decode("utf-8", "replace")
                    outcome.error = f"HTTP {response.status}: {text}"
                    return outcome
                async for line in response.lines():
                    if timer.feed(line):
                        break
                if not response.complete:  # the stream ended early: read it out, or drop the connection
                    async for _ in response.lines():
                        pass
        else:
            async with client.stream("POST", target + path, json=body) as response:
                outcome.status = response.status_code
                if response.status_code != 200:
                    text = (await response.aread())[:300].decode("utf-8", "replace")
                    outcome.error = f"HTTP {response.status_code}: {text}"
                    return outcome
                async for line in response.aiter_lines():
                    if timer.feed(line):
                        break
    except (httpx.HTTPError, OSError, ValueError, RawHttpError, asyncio.IncompleteReadError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        return outcome
    return timer.finish()
