"""The engine model of one simulated vLLM instance: V1-style continuous batching on asyncio.

Each step, like vLLM V1's scheduler:
1. running requests, oldest first, get their next tokens (1 when decoding, a prefill chunk otherwise)
   within a token budget (`max_num_batched_tokens`, i.e. chunked prefill); a request whose KV blocks
   cannot grow preempts the newest running request (its KV is dropped and it goes back to the front
   of the queue to be recomputed), counted in `vllm:num_preemptions_total`;
2. if nothing was preempted, waiting requests are admitted while a slot (`max_num_seqs`), budget and
   KV blocks remain, the prefix cache serving leading prompt blocks it has seen before;
3. the step lasts base + per-sequence + per-prefill-token costs (times the latency fault, over the
   instance's speed), then every request whose tokens are all computed samples one new token.

Timestamps are wall-clock (`time.time()`) taken when a step really ended, so histograms, ground truth
and what a client measures describe the same events. If the event loop is late, the step is longer:
a starved simulator looks like a slow GPU, and `lag_s` in /sim/state says by how much.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from monitor.sim.groundtruth import GroundTruth
from monitor.sim.kv import KvCache
from monitor.sim.metrics import FinishedStats, StepStats, VllmMetrics
from monitor.sim.params import Faults, InstanceParams
from monitor.sim.tokens import block_hashes

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only when spans are sent
    from monitor.sim.tracing import InstanceTracer


class EngineDeadError(Exception):
    """The `dead` fault: vLLM's EngineDeadError; the server answers 500 and counts nothing."""


class InjectedError(Exception):
    """The `error_rate` fault failed this request (HTTP 500, finished_reason="error")."""


class RequestRejected(ValueError):
    """A request vLLM would refuse with HTTP 400 before it reaches the engine."""


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
    finish_reason: str | None = None
    event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.generated

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class Engine:
    CARRY_S = 0.05  # how much loop lateness a busy engine makes up on its next steps

    def __init__(self, params: InstanceParams, metrics: VllmMetrics, *, name: str = "",
                 ground_truth: GroundTruth | None = None, clock: Callable[[], float] = time.time) -> None:
        self.params = params
        self.metrics = metrics
        self.name = name  # host:port, set once the server is bound
        self.ground_truth = ground_truth
        self.tracing: InstanceTracer | None = None  # `--otlp-endpoint`: set once the instance has its name
        self.clock = clock
        self.faults = Faults()
        self.kv = KvCache(params.num_gpu_blocks, params.block_size, params.prefix_caching)
        # vLLM refuses to start when one max-length sequence cannot fit the KV cache
        self.max_model_len = min(params.max_model_len, params.num_gpu_blocks * params.block_size)
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.rng = random.Random(params.seed)
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._unhung = asyncio.Event()
        self._unhung.set()
        self._task: asyncio.Task[None] | None = None
        self.started_at = self.clock()
        self.steps = 0
        self.busy_s = 0.0
        self.lag_s = 0.0
        self.preemptions = 0
        self.closed = False
        metrics.bind_scheduler(lambda: len(self.running), lambda: len(self.waiting), lambda: self.kv.usage)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"sim-engine-{self.name}")

    async def stop(self) -> None:
        """Stop stepping and release everything waiting on this engine (requests end as `abort`)."""
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        now = self.clock()
        for req in [*self.running, *self.waiting]:
            self._finish(req, "abort", now)
        self._unhung.set()

    # --- requests -----------------------------------------------------------------------------

    def submit(self, tokens: Sequence[Any], max_tokens: int | None, *, ignore_eos: bool = False,
               min_tokens: int = 0, arrival: float | None = None) -> SimRequest:
        """Queue a request; raises RequestRejected (400), EngineDeadError or InjectedError (500)."""
        if self.faults.dead or self.closed:
            raise EngineDeadError("EngineCore encountered an issue. See stack trace (above) for the root cause.")
        prompt_len = len(tokens)
        if prompt_len == 0:
            raise RequestRejected("The prompt is empty.")
        limit = self.max_model_len
        if max_tokens is not None and max_tokens < 1:
            raise RequestRejected(f"max_tokens must be at least 1, got {max_tokens}.")
        budget = max_tokens if max_tokens is not None else limit - prompt_len
        if prompt_len + max(budget, 1) > limit:
            raise RequestRejected(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_len + max(budget, 1)} tokens ({prompt_len} in the messages, {max(budget, 1)} in the "
                "completion). Please reduce the length of the messages or completion.")
        if ignore_eos:
            target = budget
        else:
            natural = 1 + int(self.rng.expovariate(1.0 / self.params.mean_output_tokens))
            target = min(budget, max(natural, min_tokens))
        now = self.clock() if arrival is None else arrival
        number = next(self._ids)
        req = SimRequest(
            id=f"{number}", prompt_len=prompt_len, hashes=block_hashes(tokens, self.params.block_size),
            max_tokens=budget, max_tokens_param=max_tokens, target=max(1, target),
            stop_reason="length" if target >= budget else "stop", arrival=now, seed=self.params.seed * 7919 + number,
        )
        if self.faults.error_rate > 0 and self.rng.random() < self.faults.error_rate:
            self._finish(req, "error", now)
            raise InjectedError("Simulated engine error (error_rate fault).")
        self.waiting.append(req)
        self._wake.set()
        return req

    def abort(self, req: SimRequest) -> None:
        """The client went away: finish as `abort` and free the request's KV blocks."""
        if not req.finished:
            self._finish(req, "abort", self.clock())
            self._wake.set()

    def set_faults(self, faults: Faults) -> None:
        previous, self.faults = self.faults, faults
        if faults.dead and not previous.dead:
            now = self.clock()
            for req in [*self.running, *self.waiting]:
                self._finish(req, "engine_dead", now, counted=False)
        if previous.kv_cache_leak and not faults.kv_cache_leak:
            self.kv.clear_leak()
        if faults.hang:
            self._unhung.clear()
        else:
            self._unhung.set()
        self._wake.set()

    async def wait_unhung(self) -> None:
        await self._unhung.wait()

    # --- the step loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_start: float | None = None
        while True:
            if self.faults.hang or self.faults.dead or not (self.running or self.waiting):
                next_start = None
                self._wake.clear()
                await self._wake.wait()
                continue
            plan, preempted, queries, hits = self._schedule()
            if not plan:  # nothing fits (e.g. leaked KV): wait for an abort or a fault change
                next_start = None
                self._wake.clear()
                await self._wake.wait()
                continue
            duration = self._step_duration(plan)
            now = loop.time()
            # Back-to-back steps follow a schedule, so the event loop's timer rounding (up to 1 ms late
            # per sleep) is paid back by the next step instead of stretching every step; lateness beyond
            # CARRY_S is a real stall (CPU starved) and is not made up.
            start = next_start if next_start is not None and 0 <= now - next_start < self.CARRY_S else now
            end = start + duration
            await asyncio.sleep(max(0.0, end - loop.time()))
            woke = loop.time()
            next_start = end
            self.steps += 1
            self.busy_s += woke - now
            self.lag_s += max(0.0, woke - end)
            self._complete_step(plan, preempted, queries, hits)

    def _schedule(self) -> tuple[list[tuple[SimRequest, int]], int, int, int]:
        p, kv, running = self.params, self.kv, self.running
        budget = p.max_num_batched_tokens
        plan: list[tuple[SimRequest, int]] = []
        preempted = queries = hits = 0
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            chunk = min(req.num_tokens - req.computed, budget)
            blocks = kv.grow(req.blocks, req.computed + chunk)
            while blocks is None:
                victim = running.pop()  # the newest running request gives up its KV
                self._preempt(victim)
                preempted += 1
                if victim is req:
                    break
                blocks = kv.grow(req.blocks, req.computed + chunk)
            if blocks is None:
                break  # it was the newest itself, so everything after it is gone too
            req.blocks = blocks
            plan.append((req, chunk))
            budget -= chunk
            i += 1
        if preempted:
            return plan, preempted, queries, hits
        now = None
        while self.waiting and len(running) < p.max_num_seqs and budget > 0:
            req = self.waiting[0]
            cached = 0
            if req.prompt_len > 1:
                cached = kv.cached_blocks(req.hashes) * p.block_size
                # the last prompt token is always computed, to produce the next token
                cached = min(cached, ((req.num_tokens - 1) // p.block_size) * p.block_size)
            chunk = min(req.num_tokens - cached, budget)
            blocks = kv.grow(0, cached + chunk)
            if blocks is None:
                break
            self.waiting.popleft()
            running.append(req)
            req.blocks, req.computed = blocks, cached
            queries += req.prompt_len
            hits += cached
            if req.scheduled_at is None:
                now = now or self.clock()
                req.scheduled_at = now
                req.cached_tokens = cached
            plan.append((req, chunk))
            budget -= chunk
        return plan, preempted, queries, hits

    def _preempt(self, req: SimRequest) -> None:
        self.kv.release(req.blocks)
        req.blocks = 0
        req.computed = 0
        req.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(req)

    def _step_duration(self, plan: list[tuple[SimRequest, int]]) -> float:
        p = self.params
        seqs = len(plan)
        tokens = sum(chunk for _, chunk in plan)
        cost = p.step_base_s + p.step_s_per_seq * seqs + p.prefill_s_per_token * max(0, tokens - seqs)
        return cost * self.faults.latency_multiplier * p.time_scale / p.speed

    def _complete_step(self, plan: list[tuple[SimRequest, int]], preempted: int, queries: int, hits: int) -> None:
        now = self.clock()
        prompt_tokens = cached_prompt = generated = 0
        ttfts: list[float] = []
        itls: list[float] = []
        for req, chunk in plan:
            if req.finished:  # aborted (or failed by the dead fault) during the step
                continue
            req.computed += chunk
            if req.computed < req.num_tokens:
                continue  # a prefill chunk; the prompt is not complete yet
            req.generated += 1
            generated += 1
            if req.first_token_at is None:
                req.first_token_at = now
                ttfts.append(now - req.arrival)
                prompt_tokens += req.prompt_len
                cached_prompt += req.cached_tokens
                self.kv.remember(req.hashes)
            else:
                itls.append(now - req.last_token_at)  # type: ignore[operator]
            req.last_token_at = now
            if req.generated >= req.target:
                self._finish(req, req.stop_reason, now)
            else:
                req.event.set()
        self.metrics.step(StepStats(
            prompt_tokens=prompt_tokens, cached_prompt_tokens=cached_prompt, generation_tokens=generated,
            preemptions=preempted, ttfts=tuple(ttfts), itls=tuple(itls), prefix_queries=queries, prefix_hits=hits,
        ))

    def _finish(self, req: SimRequest, reason: str, now: float, *, counted: bool = True) -> None:
        if req.finished:
            return
        req.finish_reason = reason
        req.finished_at = now
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        if req.blocks:
            self.kv.release(req.blocks, leak=self.faults.kv_cache_leak and reason in ("stop", "length"))
            req.blocks = 0
        if counted:
            self.metrics.finished(self._finished_stats(req, now))
        if self.ground_truth is not None:
            self.ground_truth.write(self._truth_row(req))
        if self.tracing is not None and counted:
            self.tracing.finished(req)
        req.event.set()

    def _finished_stats(self, req: SimRequest, now: float) -> FinishedStats:
        scheduled = req.scheduled_at if req.scheduled_at is not None else now
        first = req.first_token_at
        last = req.last_token_at if req.last_token_at is not None else now
        decode = (last - first) if first is not None else 0.0
        return FinishedStats(
            finish_reason=req.finish_reason or "abort",
            e2e_latency=now - req.arrival,
            queued_time=scheduled - req.arrival,
            prefill_time=(first - scheduled) if first is not None else 0.0,
            inference_time=max(0.0, last - scheduled),
            decode_time=decode,
            prompt_tokens=req.prompt_len,
            generation_tokens=req.generated,
            max_tokens_param=req.max_tokens_param,
            computed_prompt_tokens=req.prompt_len - req.cached_tokens,
            mean_time_per_output_token=decode / (req.generated - 1) if req.generated > 1 else None,
        )

    def _truth_row(self, req: SimRequest) -> dict[str, Any]:
        return {
            "instance": self.name, "model": self.params.model, "request_id": req.id,
            "arrival": req.arrival, "scheduled": req.scheduled_at, "first_token": req.first_token_at,
            "finish": req.finished_at, "prompt_tokens": req.prompt_len, "cached_prompt_tokens": req.cached_tokens,
            "generation_tokens": req.generated, "max_tokens": req.max_tokens, "preemptions": req.preemptions,
            "status": req.finish_reason,
        }

    def snapshot(self) -> dict[str, Any]:
        """What /sim/state shows: the engine's own view, for operators and tests."""
        return {
            "instance": self.name,
            "model": self.params.model,
            "params": self.params.as_dict(),
            "faults": self.faults.active,
            "running": len(self.running),
            "waiting": len(self.waiting),
            "kv_cache_usage": self.kv.usage,
            "kv_blocks_used": self.kv.used,
            "kv_blocks_leaked": self.kv.leaked,
            "preemptions": self.preemptions,
            "steps": self.steps,
            "busy_s": self.busy_s,
            "lag_s": self.lag_s,
            "uptime_s": self.clock() - self.started_at,
        }
