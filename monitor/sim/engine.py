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
from typing import Any, Callable, Sequence

from monitor.sim.groundtruth import GroundTruth
from monitor.sim.kv import KvCache
from monitor.sim.metrics import VllmMetrics
from monitor.sim.params import Faults, InstanceParams
from monitor.sim.request import FinishedObserver, SimRequest
from monitor.sim.stats import FinishedStats, StepStats
from monitor.sim.tokens import block_hashes


class EngineDeadError(Exception):
    """The `dead` fault: vLLM's EngineDeadError; the server answers 500 and counts nothing."""


class InjectedError(Exception):
    """The `error_rate` fault failed this request (HTTP 500, finished_reason="error")."""


class RequestRejected(ValueError):
    """A request vLLM would refuse with HTTP 400 before it reaches the engine."""


class AdmissionRejected(Exception):
    """The waiting queue is at `--max-num-queued-reqs`: vLLM answers 503 and counts
    `vllm:admission_rejections_total{reason="max_num_queued_reqs"}`."""


def acceptance_per_position(rate: float, k: int) -> float:
    """The chance q that a draft token is accepted given every earlier one was, such that the share of
    draft tokens accepted, (q + q² + … + q^k) / k, is `rate` (vLLM accepts a prefix of the draft)."""
    if rate <= 0.0:
        return 0.0
    if rate >= 1.0:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(40):
        q = (low + high) / 2
        if sum(q ** i for i in range(1, k + 1)) / k < rate:
            low = q
        else:
            high = q
    return (low + high) / 2


class Engine:
    CARRY_S = 0.05  # how much loop lateness a busy engine makes up on its next steps

    def __init__(self, params: InstanceParams, metrics: VllmMetrics, *, name: str = "",
                 ground_truth: GroundTruth | None = None, clock: Callable[[], float] = time.time) -> None:
        self.params = params
        self.metrics = metrics
        self.name = name  # host:port, set once the server is bound
        self.ground_truth = ground_truth
        self.tracing: FinishedObserver | None = None  # `--otlp-endpoint`: set once the instance has its name
        self.clock = clock
        self.faults = Faults()
        self.kv = KvCache(params.num_gpu_blocks, params.block_size, params.prefix_caching)
        # vLLM refuses to start when one max-length sequence cannot fit the KV cache
        self.max_model_len = min(params.max_model_len, params.num_gpu_blocks * params.block_size)
        self.waiting: deque[SimRequest] = deque()
        self.deferred: deque[SimRequest] = deque()  # waiting, but not schedulable yet (KV transfer)
        self.running: list[SimRequest] = []
        self.rng = random.Random(params.seed)
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        self._unhung = asyncio.Event()
        self._unhung.set()
        self._health_ok = asyncio.Event()  # cleared while /health must not answer
        self._health_ok.set()
        self._task: asyncio.Task[None] | None = None
        self.started_at = self.clock()
        self.steps = 0
        self.busy_s = 0.0
        self.lag_s = 0.0
        self.preemptions = 0
        self.closed = False
        self.rejections = 0
        self.attach_metrics(metrics)

    def attach_metrics(self, metrics: VllmMetrics) -> None:
        """Report to this page from now on (the metric version can change while the engine runs)."""
        self.metrics = metrics
        metrics.bind_scheduler(lambda: len(self.running), lambda: len(self.waiting) + len(self.deferred),
                               lambda: self.kv.usage, lambda: len(self.deferred))
        metrics.set_sleep(self.faults.sleep)

    @property
    def spec_acceptance(self) -> float | None:
        """The speculative decoding acceptance rate in force (a fault overrides the instance's), None: off."""
        if self.faults.spec_decode_acceptance is not None:
            return self.faults.spec_decode_acceptance
        return self.params.spec_decode_acceptance

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
        for req in [*self.running, *self.waiting, *self.deferred]:
            self._finish(req, "abort", now)
        self._unhung.set()
        self._health_ok.set()

    # --- requests -----------------------------------------------------------------------------

    def submit(self, tokens: Sequence[Any], max_tokens: int | None, *, ignore_eos: bool = False,
               min_tokens: int = 0, arrival: float | None = None) -> SimRequest:
        """Queue a request; raises RequestRejected (400), AdmissionRejected (503), EngineDeadError or
        InjectedError (500). With the `engine_dead` fault or asleep, the request is queued and waits."""
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
        queue_limit = self.faults.max_num_queued_reqs or self.params.max_num_queued_reqs
        if queue_limit is not None and len(self.waiting) + len(self.deferred) >= queue_limit:
            self.rejections += 1
            self.metrics.rejected("max_num_queued_reqs")
            raise AdmissionRejected(f"The server is at its limit of {queue_limit} queued requests "
                                    "(--max-num-queued-reqs); try again later.")
        if self.faults.error_rate > 0 and self.rng.random() < self.faults.error_rate:
            self._finish(req, "error", now)
            raise InjectedError("Simulated engine error (error_rate fault).")
        if self.faults.kv_transfer_delay_s > 0:
            req.ready_at = now + self.faults.kv_transfer_delay_s * self.params.time_scale
            self.deferred.append(req)
        else:
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
            for req in [*self.running, *self.waiting, *self.deferred]:
                self._finish(req, "engine_dead", now, counted=False)
        if faults.engine_dead and not previous.engine_dead:
            # the EngineCore died: the API server still holds its requests, none of them running
            for req in reversed(self.running):
                self.kv.release(req.blocks)
                req.blocks = req.computed = 0
                self.waiting.appendleft(req)
            self.running.clear()
        if faults.sleep and not previous.sleep:
            self.kv.forget_cached()  # vLLM resets the prefix cache when it goes to sleep
        if previous.kv_cache_leak and not faults.kv_cache_leak:
            self.kv.clear_leak()
        if faults.hang:
            self._unhung.clear()
        else:
            self._unhung.set()
        if faults.hang or faults.health_timeout:
            self._health_ok.clear()
        else:
            self._health_ok.set()
        self.metrics.set_sleep(faults.sleep)
        self._wake.set()

    async def wait_unhung(self) -> None:
        await self._unhung.wait()

    async def wait_health(self) -> None:
        """Returns once /health may answer (never, while `hang` or `health_timeout` is set)."""
        await self._health_ok.wait()

    # --- the step loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_start: float | None = None
        while True:
            if self.deferred:
                self._release_deferred()
            if self.faults.engine_stopped or not (self.running or self.waiting):
                next_start = None
                self._wake.clear()
                await self._wait_wake()
                continue
            plan, preempted, queries, hits = self._schedule()
            if not plan:  # nothing fits (e.g. leaked KV): wait for an abort or a fault change
                next_start = None
                self._wake.clear()
                await self._wait_wake()
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

    async def _wait_wake(self) -> None:
        """Until something changes, or the next deferred request becomes schedulable."""
        if not self.deferred:
            await self._wake.wait()
            return
        delay = max(0.0, min(r.ready_at for r in self.deferred) - self.clock())
        try:
            await asyncio.wait_for(self._wake.wait(), delay + 0.001)
        except TimeoutError:
            pass

    def _release_deferred(self) -> None:
        now = self.clock()
        ready = [r for r in self.deferred if r.ready_at <= now]
        for req in ready:
            self.deferred.remove(req)
            self.waiting.append(req)

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
        cost = ((p.step_base_s + p.step_s_per_seq * seqs) * p.tpot_factor
                + p.prefill_s_per_token * max(0, tokens - seqs) * p.ttft_factor)
        return cost * self.faults.latency_multiplier * p.time_scale / p.speed

    def _complete_step(self, plan: list[tuple[SimRequest, int]], preempted: int, queries: int, hits: int) -> None:
        now = self.clock()
        prompt_tokens = cached_prompt = generated = 0
        ttfts: list[float] = []
        itls: list[float] = []
        acceptance = self.spec_acceptance
        k = self.params.num_speculative_tokens
        q = acceptance_per_position(acceptance, k) if acceptance is not None else 0.0
        drafts = 0
        accepted_per_pos = [0] * k
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
                if acceptance is not None:
                    # a decode step verifies k draft tokens; the accepted prefix comes out with the
                    # sampled token in one output event (one ITL observation, several tokens)
                    drafts += 1
                    accepted = 0
                    while accepted < k and self.rng.random() < q:
                        accepted_per_pos[accepted] += 1
                        accepted += 1
                    extra = min(accepted, req.target - req.generated)
                    req.generated += extra
                    generated += extra
            req.last_token_at = now
            if req.generated >= req.target:
                self._finish(req, req.stop_reason, now)
            else:
                req.event.set()
        self.metrics.step(StepStats(
            prompt_tokens=prompt_tokens, cached_prompt_tokens=cached_prompt, generation_tokens=generated,
            preemptions=preempted, ttfts=tuple(ttfts), itls=tuple(itls), prefix_queries=queries, prefix_hits=hits,
            spec_drafts=drafts, spec_draft_tokens=drafts * k if drafts else 0,
            spec_accepted_per_pos=tuple(accepted_per_pos) if drafts else (),
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
        elif req in self.deferred:
            self.deferred.remove(req)
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
            preemptions=req.preemptions,
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
            "waiting": len(self.waiting) + len(self.deferred),
            "waiting_deferred": len(self.deferred),
            "sleep_level": self.faults.sleep,
            "spec_decode_acceptance": self.spec_acceptance,
            "admission_rejections": self.rejections,
            "metrics_version": self.metrics.version,
            "kv_cache_usage": self.kv.usage,
            "kv_blocks_used": self.kv.used,
            "kv_blocks_leaked": self.kv.leaked,
            "preemptions": self.preemptions,
            "steps": self.steps,
            "busy_s": self.busy_s,
            "lag_s": self.lag_s,
            "uptime_s": self.clock() - self.started_at,
        }
