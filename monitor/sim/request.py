"""One request inside a simulated engine, and what may watch requests finish.

Its own module so that the engine and its observers (the span sender in `tracing`) both depend on it
and not on each other.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(eq=False, slots=True)
class SimRequest:
    id: str
    prompt_len: int
    hashes: tuple[int, ...]
    max_tokens: int
    max_tokens_param: int | None
    target: int  # tokens to generate before finishing
    stop_reason: str  # finish reason once `target` is reached: "length" at max_tokens, else "stop"
    arrival: float
    seed: int
    generated: int = 0
    computed: int = 0  # tokens whose KV is computed
    blocks: int = 0
    cached_tokens: int = 0
    scheduled_at: float | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    finished_at: float | None = None
    preemptions: int = 0
    ready_at: float = 0.0  # not schedulable before this (a KV transfer): `deferred` until then
    finish_reason: str | None = None
    event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.generated

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class FinishedObserver(Protocol):
    """Told of every request the engine finished and counted (the `--otlp-endpoint` span sender)."""

    def finished(self, req: SimRequest) -> None: ...
