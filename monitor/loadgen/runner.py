"""The open-loop run: Poisson arrivals spread round-robin over the targets, for a fixed time.

Arrival times are drawn up front from a seeded generator and kept on schedule against the clock
(a late loop sends the backlog at once rather than stretching the run), so two runs with the same
seed offer the same load. When the sending time is over, requests in flight get `drain_s` to finish;
what is still running then is cancelled and reported as unfinished, not as failed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import httpx

from monitor.http1 import ConnectionPool
from monitor.loadgen.client import Outcome, send
from monitor.loadgen.report import Summary, percentile, summarize
from monitor.loadgen.workload import Workload


@dataclass(frozen=True, slots=True)
class Progress:
    elapsed_s: float
    duration_s: float
    sent: int
    completed: int
    failed: int
    in_flight: int
    recent_ttft_p50_s: float | None
    output_tokens_per_s: float

    def line(self) -> str:
        ttft = f"{self.recent_ttft_p50_s * 1000:.0f} ms" if self.recent_ttft_p50_s is not None else "-"
        return (f"[{self.elapsed_s:6.1f}s/{self.duration_s:g}s] sent {self.sent}  ok {self.completed}  "
                f"failed {self.failed}  in flight {self.in_flight}  TTFT p50 {ttft}  "
                f"out {self.output_tokens_per_s:.0f} tok/s")


async def discover_model(client: httpx.AsyncClient, target: str) -> str:
    """The served model name, from the first target's /v1/models (what vLLM's benchmark does too)."""
    response = await client.get(target + "/v1/models")
    response.raise_for_status()
    return response.json()["data"][0]["id"]


class LoadRun:
    def __init__(self, targets: Sequence[str], rate: float, duration_s: float, workload: Workload | None = None, *,
                 model: str | None = None, chat: bool = False, drain_s: float = 30.0, request_timeout_s: float = 600.0,
                 goodput: dict[str, float] | None = None, choose: Callable[[int], str] | None = None) -> None:
        if not targets:
            raise ValueError("at least one target")
        if not rate > 0 or not duration_s > 0:
            raise ValueError("rate and duration must be positive")
        self.targets = [t.rstrip("/") for t in targets]
        self.rate = rate
        self.duration_s = duration_s
        self.workload = workload or Workload()
        self.model = model
        self.chat = chat
        self.drain_s = drain_s
        self.request_timeout_s = request_timeout_s
        self.goodput = goodput
        self.choose = choose  # (requests sent so far) -> target; default round-robin over `targets`
        self.outcomes: list[Outcome] = []
        self.sent = 0
        self.in_flight = 0
        self._recent_ttfts: deque[float] = deque(maxlen=200)
        self._tokens_done = 0
        self._started = 0.0
        self.stop_sending = asyncio.Event()
        self._pool = ConnectionPool()

    def progress(self) -> Progress:
        elapsed = time.perf_counter() - self._started if self._started else 0.0
        completed = sum(1 for o in self.outcomes if o.ok)
        return Progress(
            elapsed_s=elapsed, duration_s=self.duration_s, sent=self.sent, completed=completed,
            failed=len(self.outcomes) - completed, in_flight=self.in_flight,
            recent_ttft_p50_s=percentile(list(self._recent_ttfts), 50),
            output_tokens_per_s=self._tokens_done / elapsed if elapsed > 0 else 0.0,
        )

    async def run(self, on_progress: Callable[[Progress], None] | None = None,
                  progress_every_s: float = 1.0) -> Summary:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=1024)
        timeout = httpx.Timeout(self.request_timeout_s, connect=10.0)
        async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
            if self.model is None:
                self.model = await discover_model(client, self.targets[0])
            reporter = None
            if on_progress is not None:
                reporter = asyncio.create_task(self._report(on_progress, progress_every_s))
            try:
                return await self._run(client)
            finally:
                await self._pool.aclose()
                if reporter is not None:
                    reporter.cancel()
                    if on_progress is not None:
                        on_progress(self.progress())

    async def _run(self, client: httpx.AsyncClient) -> Summary:
        rng = random.Random(self.workload.seed ^ 0xA11)
        requests = self.workload.generator()
        tasks: set[asyncio.Task[None]] = set()
        self._started = start = time.perf_counter()
        due = 0.0
        while not self.stop_sending.is_set():
            due += rng.expovariate(self.rate)
            if due >= self.duration_s:
                break
            delay = start + due - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(self.stop_sending.wait(), delay)
                    break
                except TimeoutError:
                    pass
            target = self.choose(self.sent) if self.choose else self.targets[self.sent % len(self.targets)]
            task = asyncio.create_task(self._one(client, target, requests.next()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            self.sent += 1
        incomplete = 0
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=self.drain_s)
            incomplete = len(pending)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        ends = [o.started + o.e2e for o in self.outcomes if o.ok and o.e2e is not None]
        duration = (max(ends) if ends else time.perf_counter()) - start
        return summarize(self.outcomes, self.rate, max(duration, 1e-9), incomplete, self.goodput)

    async def _one(self, client: httpx.AsyncClient, target: str, spec) -> None:
        self.in_flight += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.request_timeout_s):
                outcome = await send(client, target, spec, self.model or "", chat=self.chat, pool=self._pool)
        except TimeoutError:
            outcome = Outcome(target=target, started=started, prompt_tokens=spec.prompt_tokens,
                              error=f"timed out after {self.request_timeout_s:g}s")
        finally:
            self.in_flight -= 1
        self.outcomes.append(outcome)
        if outcome.ok and outcome.ttft is not None:
            self._recent_ttfts.append(outcome.ttft)
            self._tokens_done += outcome.output_tokens

    async def _report(self, on_progress: Callable[[Progress], None], every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            on_progress(self.progress())
