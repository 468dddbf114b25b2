"""The simulator and the monitor's decision path in one process on a virtual clock (bench/decision_quality.py).

Why a virtual clock: half an hour of a fleet must take seconds, and the same run must give the same
figures. The simulator's engines are the real ones (monitor/sim/engine.py: they step on asyncio timers);
they run on an event loop whose clock jumps to the next timer whenever nothing is ready, so an engine
step "lasts" its modelled time and costs only its Python. The monitor's side is the real path too:
each scrape renders the engine's real /metrics page, `parse_page` reads it into a `ScrapeResult`, and
`FleetView.ingest` → `fleet_signals` → `FleetDecisions.decide` judge it, as `serve`'s scrape cycle
does (monitor/service/core.py); only the HTTP between them is left out, with what the scraper would
have recorded for a timeout, an unanswered /health or a refused connection written in its words.

A load balancer sends each request to an instance the verdicts let serve (weighted by the verdict's
weight; all of them when none may, as NGINX fails open), and a follower of the recommendation resizes
the pool to `desired_replicas` (capped at `max_pool`, to keep the run cheap; the scores read the
recommendation itself), new replicas taking `load_time_s` to listen.
"""

from __future__ import annotations

import asyncio
import math
import random
import selectors
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from monitor.collect.vllm import PageError, parse_page
from monitor.decide.fleet import FleetDecisions, PoolPolicy
from monitor.evaluate.fleet import FleetView
from monitor.evaluate.signals import fleet_signals
from monitor.samples import ScrapeResult
from monitor.settings import HealthSettings, ScalingSettings
from monitor.sim.engine import (
    AdmissionRejected,
    Engine,
    EngineDeadError,
    InjectedError,
    RequestRejected,
)
from monitor.sim.fleet import cache_config_info
from monitor.sim.metrics import VllmMetrics
from monitor.sim.params import Faults, InstanceParams
from tests.helpers.decision_truth import ASLEEP, SICK, WELL, Fault, StateChange

EPOCH = 1_700_000_000.0  # the virtual clock's start, in unix seconds (minutes and windows line up as in production)
POOL = "chat"


class _JumpingSelector(selectors.DefaultSelector):
    """Polls without waiting; when nothing is ready, the loop's clock jumps by the wait asked for."""

    loop: VirtualLoop

    def select(self, timeout: float | None = None) -> list:  # type: ignore[override]
        events = super().select(0)
        if not events and timeout:
            # at least one step of the float: near 1.7e9 a wait under ~1e-7 s would not move the clock
            self.loop.now = max(self.loop.now + timeout, math.nextafter(self.loop.now, math.inf))
        elif not events and timeout is None and not self.loop._ready:  # type: ignore[attr-defined]
            raise RuntimeError("virtual clock: nothing scheduled, nothing ready (the run would wait forever)")
        return events


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = EPOCH) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = start
        # a timer is due when it falls within this of now: 1 ns (the monotonic clock's) is below the float
        # step near 1.7e9 s, so a timer due exactly now would never be
        self._clock_resolution = 1e-6

    def time(self) -> float:
        return self.now


@dataclass
class Member:
    name: str
    engine: Engine
    metrics: VllmMetrics
    listening_at: float
    frozen_page: str | None = None
    scrapes: int = 0


@dataclass
class Scenario:
    """One run: the pool, the load, the faults and the truth they mean.

    rate(t): offered requests/s at t seconds into the run; events: (t, instance index, Faults, truth);
    multiplier(t): a latency multiplier every healthy instance has at t (drift); timeouts(index, scrape
    number): whether that scrape of that instance times out (a flapping network)."""

    name: str
    what: str
    instances: Sequence[InstanceParams]
    rate: Callable[[float], float]
    duration_s: float
    events: Sequence[tuple[float, int, Faults, str]] = ()
    multiplier: Callable[[float], float] | None = None
    timeouts: Callable[[int, int], bool] | None = None
    prompt_tokens: int = 200
    settle_s: float = 420.0  # after the last change of truth: the window, then both stabilisation windows
    # rate(t) split by model, for a mixed-model pool: model -> share of the requests
    model_shares: dict[str, float] | None = None


@dataclass
class Run:
    """What one run recorded, for decision_truth's scoring."""

    changes: list[StateChange] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, desired, needed)
    reasons: list[str] = field(default_factory=list)  # the recommendation's reason at its highest
    requests: int = 0
    settle_at: float = 0.0


class Simulation:
    def __init__(self, scenario: Scenario, interval_s: float = 5.0, *, max_pool: int = 12, load_time_s: float = 30.0,
                 seed: int = 1, mu: Callable[[InstanceParams, float], float],
                 health: HealthSettings | None = None, scaling: ScalingSettings | None = None) -> None:
        self.s = scenario
        self.interval = interval_s
        self.max_pool = max_pool
        self.load_time = load_time_s
        self.rng = random.Random(seed)
        self.mu = mu
        self.timeout = min(2.0, interval_s)
        self.health = health or HealthSettings()
        self.scaling = scaling or ScalingSettings()
        self.members: list[Member] = []
        self.truth: dict[str, str] = {}
        self.faults: dict[str, Faults] = {}
        self.run = Run()
        self.numbered = 0
        self.t0 = EPOCH

    # -- the fleet -------------------------------------------------------------------------------

    def _params_for(self, index: int) -> InstanceParams:
        base = self.s.instances[index % len(self.s.instances)]
        return base.with_(seed=base.seed + index)

    def _add(self, now: float, listening_at: float) -> Member:
        index = self.numbered
        self.numbered += 1
        params = self._params_for(index)
        metrics = VllmMetrics("latest", params.model, min(params.max_model_len, params.num_gpu_blocks * params.block_size),
                              cache_config_info(params))
        engine = Engine(params, metrics, name=f"10.0.{index // 250}.{index % 250 + 1}:8000", clock=lambda: self.loop.time())
        member = Member(engine.name, engine, metrics, listening_at)
        engine.start()
        self.members.append(member)
        self.truth[member.name] = WELL
        self._apply_faults(member, Faults())
        return member

    def _apply_faults(self, member: Member, faults: Faults) -> None:
        self.faults[member.name] = faults
        m = self.s.multiplier(self.loop.time() - self.t0) if self.s.multiplier else 1.0
        effective = faults if faults.latency_multiplier != 1.0 else Faults(**{**_fields(faults), "latency_multiplier": m})
        if effective != member.engine.faults:
            member.engine.set_faults(effective)
        if not effective.metrics_frozen:
            member.frozen_page = None

    def _membership(self) -> dict[str, dict[str, str]]:
        return {POOL: {m.name: f"http://{m.name}" for m in self.members}}

    # -- load ------------------------------------------------------------------------------------

    async def _load(self) -> None:
        while True:
            t = self.loop.time() - self.t0
            rate = self.s.rate(t)
            if rate <= 0:
                await asyncio.sleep(1.0)
                continue
            await asyncio.sleep(self.rng.expovariate(rate))
            self._send()

    def _send(self) -> None:
        model = None
        if self.s.model_shares:
            r, acc = self.rng.random(), 0.0
            for name, share in self.s.model_shares.items():
                acc += share
                if r <= acc:
                    model = name
                    break
        now = self.loop.time()
        candidates = [m for m in self.members if m.listening_at <= now and (model is None or m.engine.params.model == model)]
        if not candidates:
            return
        weights = []
        for m in candidates:
            verdict = self.decisions.verdict(POOL, m.name)
            weights.append(0.0 if verdict is None or not verdict.serves_traffic else verdict.weight)
        if not any(w > 0 for w in weights):
            weights = [1.0] * len(candidates)  # nothing may serve: fail open, as NGINX does
        member = self.rng.choices(candidates, weights)[0]
        start = 1 + self.run.requests * self.s.prompt_tokens  # distinct prompts: no prefix-cache hits
        tokens = list(range(start, start + self.s.prompt_tokens))
        self.run.requests += 1
        try:
            member.engine.submit(tokens, None)
        except (RequestRejected, AdmissionRejected, EngineDeadError, InjectedError):
            pass

    # -- the monitor's cycle ---------------------------------------------------------------------------

    def _scrape(self, member: Member, now: float) -> ScrapeResult:
        url = f"http://{member.name}"
        member.scrapes += 1
        if member.listening_at > now:
            return ScrapeResult(POOL, member.name, url, now, 0.001, error="cannot connect: ConnectError: "
                                "[Errno 111] Connection refused", error_kind="down")
        if self.s.timeouts and self.s.timeouts(self.members.index(member), member.scrapes):
            return ScrapeResult(POOL, member.name, url, now, self.timeout, error=f"timed out after {self.timeout:g}s",
                                error_kind="timeout", health_error=f"/health timed out after {self.timeout:g}s")
        faults = member.engine.faults
        if faults.metrics_frozen:
            if member.frozen_page is None:
                member.frozen_page = member.metrics.render().decode()
            page = member.frozen_page
        else:
            page = member.metrics.render().decode()
        status: int | None = 200
        health_error = None
        duration = 0.005
        if faults.hang or faults.health_timeout:
            status, health_error, duration = None, f"/health timed out after {self.timeout:g}s", self.timeout
        elif faults.dead:
            status = 503
        try:
            models = tuple(parse_page(page))
        except PageError as exc:
            return ScrapeResult(POOL, member.name, url, now, duration, error=str(exc), error_kind="malformed",
                                health_status=status, health_error=health_error)
        return ScrapeResult(POOL, member.name, url, now, duration, models=models, health_status=status,
                            health_error=health_error, body_bytes=len(page))

    async def _cycle(self) -> None:
        now = self.loop.time()
        results = [self._scrape(m, now) for m in self.members]
        self.fleet.ingest(results)
        members = {POOL: [i for i, h in self.decisions.health[POOL].instances.items() if h.state != "leaving"]}
        # as the service does (monitor/service/core.py): each instance judged on what it did since its last change
        signals = await fleet_signals(self.fleet, members, self.decisions.windows(self.fleet.window), now,
                                      since=self.decisions.judged_since())
        self.fleet.last_cycle_at = now
        self.fleet.last_cycle_duration_s = 0.01
        outcome = self.decisions.decide(signals, now, data_at=now, cycle_duration_s=0.01)
        for verdicts in outcome.health:
            for tr in verdicts.transitions:
                self.run.changes.append(StateChange(tr.at - self.t0, tr.instance, tr.from_state, tr.to_state,
                                                    self.truth.get(tr.instance, WELL),
                                                    tr.reasons[0] if tr.reasons else ""))
        rec = outcome.scaling[POOL]
        t = now - self.t0
        needed = self._needed(t)
        if not self.run.samples or rec.desired_replicas > max(d for _, d, _ in self.run.samples):
            self.run.reasons = [f"t={t:.0f}s desired {rec.desired_replicas}: {rec.reason}"]
        self.run.samples.append((t, rec.desired_replicas, needed))
        await self._follow(rec.desired_replicas, now)

    def _needed(self, t: float) -> int:
        from tests.helpers.decision_truth import needed_replicas

        m = self.s.multiplier(t) if self.s.multiplier else 1.0
        not_serving = sum(1 for v in self.truth.values() if v in (SICK, ASLEEP))
        rate = self.s.rate(t)
        if not self.s.model_shares:
            return needed_replicas(rate, self.mu(self.s.instances[0], m), not_serving=not_serving,
                                   min_replicas=self.scaling.min_replicas)
        total = 0
        for model, share in self.s.model_shares.items():
            params = next(p for p in self.s.instances if p.model == model)
            total += needed_replicas(rate * share, self.mu(params, m), min_replicas=0)
        return max(total, self.scaling.min_replicas) + not_serving

    async def _follow(self, desired: int, now: float) -> None:
        target = max(1, min(desired, self.max_pool))
        changed = False
        while len(self.members) < target:
            self._add(now, now + self.load_time)
            changed = True
        while len(self.members) > target:
            member = self.members.pop()  # the newest goes first, as a Deployment scaled down does
            self.truth.pop(member.name, None)
            await member.engine.stop()
            changed = True
        if changed:
            self.decisions.set_members({POOL: [m.name for m in self.members]})
            urls = {POOL: {i: f"http://{i}" for i in self.decisions.health[POOL].instances}}
            self.fleet.set_members(urls)

    # -- the run -----------------------------------------------------------------------------------

    async def _main(self) -> Run:
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        for _ in range(len(self.s.instances)):
            self._add(self.t0, self.t0)
        self.fleet = FleetView(60.0, self.interval, self._membership())
        self.decisions = FleetDecisions({POOL: PoolPolicy(self.health, self.scaling)},
                                        {POOL: [m.name for m in self.members]}, self.interval)
        load = asyncio.get_running_loop().create_task(self._load())
        events = sorted(self.s.events, key=lambda e: e[0])
        last_change = 0.0
        open_faults: dict[str, Fault] = {}
        cycle = 0
        try:
            while (t := cycle * self.interval) <= self.s.duration_s:
                await asyncio.sleep(max(0.0, self.t0 + t - self.loop.time()))
                while events and events[0][0] <= t:
                    at, index, faults, truth = events.pop(0)
                    if index < len(self.members):
                        member = self.members[index]
                        self._apply_faults(member, faults)
                        if truth != self.truth[member.name]:
                            if member.name in open_faults:
                                f = open_faults.pop(member.name)
                                self.run.faults.append(Fault(f.instance, f.truth, f.start, at))
                            if truth != WELL:
                                open_faults[member.name] = Fault(member.name, truth, at)
                            self.truth[member.name] = truth
                            last_change = at
                if self.s.multiplier:
                    for member in self.members:
                        self._apply_faults(member, self.faults[member.name])
                await self._cycle()
                cycle += 1
        finally:
            load.cancel()
            for member in self.members:
                await member.engine.stop()
        self.run.faults.extend(open_faults.values())
        rate_changes = [t for t in _change_points(self.s.rate, self.s.duration_s)]
        self.run.settle_at = max([last_change, *rate_changes]) + self.s.settle_s
        if self.s.multiplier:
            self.run.settle_at = self.s.duration_s + 1  # drifting to the end: never settled
        return self.run

    def run_sync(self) -> Run:
        loop = VirtualLoop()
        try:
            return loop.run_until_complete(self._main())
        finally:
            loop.close()


def _fields(faults: Faults) -> dict:
    return {name: getattr(faults, name) for name in Faults.__dataclass_fields__}


def _change_points(rate: Callable[[float], float], duration: float, step: float = 1.0) -> list[float]:
    """Where the offered rate steps (sampled once a second)."""
    out = []
    previous = rate(0.0)
    for k in range(1, int(duration / step) + 1):
        value = rate(k * step)
        if not math.isclose(value, previous):
            out.append(k * step)
        previous = value
    return out
