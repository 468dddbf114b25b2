"""`slo-monitor demo` (scenario `fault`, the default): three instances, one made slow part-way.

The service's verdict on it, when it came and why, and what it changed: the load goes through the
upstream the service writes, so the summary can say how much of the traffic moved away from the
faulted instance and what the fleet's TTFT p99 was before and after.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from monitor.demo.report import (
    Answered,
    Served,
    decision_line,
    fault_story,
    next_steps,
    phase_line,
    phase_table,
    served_rows,
    shift_line,
    story_sentences,
)
from monitor.demo.stack import (
    POOL,
    Balancer,
    Clock,
    DemoOptions,
    ServiceApi,
    TruthTail,
    Watched,
    describe_slos,
    open_balancer,
    say,
    say_slos,
    start_service,
    watch,
)
from monitor.demo.view import InstanceRow, result_line, table
from monitor.loadgen.report import Summary, format_summary
from monitor.loadgen.runner import LoadRun
from monitor.loadgen.workload import Workload
from monitor.sim.fleet import QuietServer, SimFleet, bind_socket
from monitor.sim.params import Faults, InstanceParams

INSTANCES = 3
SCRAPE_INTERVAL = "1s"
WINDOW = "30s"
TTFT_THRESHOLD_S = 0.25
# The fault scenario's health settings (documented in docs/simulator.md). TPOT p99 over the TPOT
# SLO's own threshold ejects: decoding that breaks the SLO takes the instance out of rotation. TPOT
# is a mean over each request's tokens, so a CPU stall of this one-process demo cannot fake it; the
# relative-slowdown rule is off here because with 2-3 instances and a few dozen requests each a p99
# is the slowest request or two, and on a shared CPU one stalled request made a healthy instance
# "3x slower than the others" in trials.
FAULT_HEALTH = {"tpot_p99_eject": "50ms", "relative_slowdown": None}
FAULT_SLOS = [
    {"name": "ttft-250ms", "indicator": {"type": "latency", "metric": "ttft", "threshold": "250ms"},
     "objective": "99%"},
    {"name": "tpot-50ms", "indicator": {"type": "latency", "metric": "tpot", "threshold": "50ms"},
     "objective": "99%"},
    {"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%"},
]


def fault_config(urls: list[str], db_url: str, listen: str, nginx: dict[str, str] | None = None):
    from monitor.config import validate

    return validate({
        "storage": {"url": db_url},
        "scrape": {"interval": SCRAPE_INTERVAL},
        "evaluation": {"window": WINDOW},
        "pools": [{"name": POOL, "targets": urls, "health": FAULT_HEALTH}],
        "slos": FAULT_SLOS,
        "api": {"listen": listen},
        **({"nginx": nginx} if nginx else {}),
    }, environ={}).config


class FaultScenario:
    """One instance gets a latency fault part-way; the rest is what the service makes of it."""

    def __init__(self, options: DemoOptions, fleet: SimFleet, api: ServiceApi, clock: Clock, faulted: str,
                 balancer: Balancer, truth: TruthTail, load: LoadRun, client: httpx.AsyncClient) -> None:
        self.options = options
        self.fleet = fleet
        self.api = api
        self.clock = clock
        self.faulted = faulted
        self.balancer = balancer
        self.truth = truth
        self.load = load
        self.client = client
        self.watched = Watched()
        self.fault_injected_at: float | None = None
        self.title = "slo-monitor demo: what the service sees and decides"

    def over(self, now: float) -> bool:
        return self.options.duration_s is not None and now >= self.options.duration_s

    def wake_at(self) -> float | None:
        return self.options.effective_fault_at if self.fault_injected_at is None else None

    async def tick(self, now: float) -> list[str]:
        events: list[str] = []
        if self.fault_injected_at is None and now >= self.options.effective_fault_at:
            await _inject(self.client, self.fleet, self.faulted, self.options.latency_multiplier)
            self.fault_injected_at = now
            events.append(f"fault at={now:.1f}s instance={self.faulted} latency_multiplier="
                          f"{self.options.latency_multiplier:g}")
        return events + await self.refresh()

    async def refresh(self) -> list[str]:
        """Poll the service and read the simulator's record; no action."""
        faults = {i.engine.name: _fault_text(i.engine.faults) for i in self.fleet.instances}
        events = await self.watched.poll(self.api, self.clock, faults, ("health",))
        self.truth.read()
        return events

    def rows(self) -> list[InstanceRow]:
        return self.watched.rows

    def status(self, now: float) -> list[str]:
        options = self.options
        until = f"/{options.duration_s:g}s" if options.duration_s is not None else " (Ctrl-C to stop)"
        if self.fault_injected_at is not None:
            fault = f"latency x{options.latency_multiplier:g} on {self.faulted} since {self.fault_injected_at:.0f} s"
        else:
            fault = (f"latency fault on {self.faulted} in "
                     f"{max(0.0, options.effective_fault_at - now):.0f} s")
        lines = [f"[{now:5.0f}s{until}] {fault} | load: {self.load.progress().line().split('] ', 1)[-1]}"]
        recent = [r for r in served_rows(self.truth.rows, self.clock.t0_wall) if r.at >= now - 10.0]
        if recent:
            share = sum(1 for r in recent if r.instance == self.faulted) / len(recent)
            lines.append(f"traffic to {self.faulted} over the last 10 s: {share * 100:.0f}% "
                         f"({self.balancer.kind}; an even share is {100 / INSTANCES:.0f}%)")
        lines.append(self.watched.slo_status())
        if self.api.last_error:
            lines.append(self.api.last_error)
        return lines


async def run_fault(options: DemoOptions, console: Console, stop: asyncio.Event, root: Path, db_path: str) -> int:
    truth_path = root / "requests.jsonl"
    params = [InstanceParams(num_gpu_blocks=1024, seed=options.seed + i) for i in range(INSTANCES)]
    fleet = SimFleet(params, ground_truth=truth_path)
    urls = fleet.bind()
    service_sock = bind_socket("127.0.0.1", 0)
    listen = f"127.0.0.1:{service_sock.getsockname()[1]}"
    faulted = fleet.instances[options.fault_instance % INSTANCES].engine.name
    say(console, f"console: http://{listen}/ui/ (open it in a browser while the demo runs; the table below stays)")
    say(console, f"demo: {INSTANCES} simulated vLLM instances {', '.join(i.engine.name for i in fleet.instances)}; "
                 f"monitor API http://{listen}/api/v1/instances; load {options.fault_rate:g} req/s; "
                 f"latency x{options.latency_multiplier:g} fault on {faulted} at {options.effective_fault_at:g} s")
    balancer = open_balancer(options.balancer, root, urls, console)
    try:
        say(console, f"load balancer: {balancer.description}")
        say(console, "starting the monitoring service (database migrations first)...")
        # built before the fleet serves: building the app may block this loop for a moment
        config = fault_config(urls, f"sqlite:///{db_path}", listen, balancer.config())
        health = config.pools[0].health
        say(console, f"health rules of pool {POOL} (window {WINDOW}, scrape every {SCRAPE_INTERVAL}): ejected when "
                     f"TPOT p99 > {(health.tpot_p99_eject or 0) * 1000:g} ms (the TPOT SLO's threshold), TTFT p99 > "
                     f"{health.ttft_p99_eject:g} s or {health.failure_threshold} scrapes fail, for "
                     f"{health.base_ejection_time:g} s (longer each time); degraded (a quarter of the traffic) when "
                     f"TTFT p99 > {health.ttft_p99_degraded * 1000:g} ms; the relative-slowdown rule is off in this "
                     "demo (see docs/simulator.md)")
        describe_slos(console, config.slos, POOL)
        return await _run_fault(options, console, stop, fleet, config, service_sock, listen, faulted, balancer,
                                truth_path)
    finally:
        balancer.close()


async def _run_fault(options: DemoOptions, console: Console, stop: asyncio.Event, fleet: SimFleet, config: Any,
                     service_sock: Any, listen: str, faulted: str, balancer: Balancer, truth_path: Path) -> int:
    await fleet.start()
    service: QuietServer | None = None
    service_task: asyncio.Task[None] | None = None
    clock = Clock()
    truth = TruthTail(truth_path)
    load = balancer.load(fleet.urls, options.fault_rate, options.duration_s or 10**9,
                         Workload(prompt_tokens=256, output_tokens=64, prefix_tokens=64, seed=options.seed))
    summary: Summary | None = None
    scenario: FaultScenario | None = None
    end = 0.0
    try:
        service, service_task = await start_service(config, service_sock)
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            scenario = FaultScenario(options, fleet, ServiceApi(client, listen), clock, faulted, balancer, truth,
                                     load, client)
            clock.reset()
            load_task = asyncio.create_task(load.run())
            await watch(console, stop, scenario, clock, load_task)
            end = clock.now()
            load.stop_sending.set()
            summary = await load_task
            for line in await scenario.refresh():
                if not console.is_terminal:
                    print(line, flush=True)
    finally:
        if service is not None:
            service.should_exit = True
        await fleet.stop()  # requests still running end as aborted and get their ground-truth rows
        if service_task is not None:
            await asyncio.gather(service_task, return_exceptions=True)
    truth.read()
    if scenario is not None:
        _print_fault_summary(console, scenario, end, summary)
    return 0


async def _inject(client: httpx.AsyncClient, fleet: SimFleet, name: str, multiplier: float) -> None:
    """Through the instance's own fault endpoint, as an operator rehearsing an incident would."""
    url = next(u for u, i in zip(fleet.urls, fleet.instances, strict=True) if i.engine.name == name)
    response = await client.post(url + "/sim/faults", json={"latency_multiplier": multiplier})
    response.raise_for_status()


def _fault_text(faults: Faults) -> str:
    active = faults.active
    if not active:
        return "none"
    return ", ".join(f"latency x{v:g}" if k == "latency_multiplier" else f"{k}={v}" for k, v in active.items())


def _print_fault_summary(console: Console, scenario: FaultScenario, end: float, summary: Summary | None) -> None:
    watched, faulted = scenario.watched, scenario.faulted
    fault_at = scenario.fault_injected_at
    console.print()
    when = f" at {fault_at:.0f} s" if fault_at is not None else " (not reached)"
    console.print(table(watched.rows, f"Final view of the service (window {WINDOW}); latency fault on {faulted}{when}",
                        console.width))
    for row in watched.rows:
        say(console, result_line(row))
    faulted_row = next((r for r in watched.rows if r.instance == faulted), None)
    others = [r.ttft_p99_s for r in watched.rows if r.instance != faulted and r.ttft_p99_s is not None]
    if faulted_row is not None and faulted_row.ttft_p99_s is not None and others:
        higher = faulted_row.ttft_p99_s > max(others)
        say(console, f"verdict: faulted instance {faulted} TTFT p99 {faulted_row.ttft_p99_s:.3f} s, others at most "
                     f"{max(others):.3f} s: {'higher' if higher else 'NOT higher'}")

    console.print()
    say(console, "Decisions (the service's audit log, GET /api/v1/decisions; at = seconds since the load started):")
    for d in sorted(watched.decisions, key=lambda d: d.at):
        say(console, decision_line(d))
    if fault_at is not None:
        on_faulted = sorted((d for d in watched.decisions if d.instance == faulted and d.at >= fault_at),
                            key=lambda d: d.at)
        for d in on_faulted:
            say(console, f"{faulted}: {d.to_state} {d.at - fault_at:.1f} s after the fault (at {d.at:.1f} s): "
                         f"{'; '.join(dict.fromkeys(d.reasons)) or '-'}")
        if not on_faulted:
            say(console, f"{faulted}: no verdict against it in the {end - fault_at:.0f} s after the fault")

    console.print()
    say(console, f"What the verdicts changed (load balancer: {scenario.balancer.kind}; which instance served a "
                 "request is the simulator's record, TTFT is what the client measured):")
    served: list[Served] = served_rows(scenario.truth.rows, scenario.clock.t0_wall)
    answered = [Answered(o.started - scenario.clock.t0_perf, o.ttft if o.ok else None)
                for o in scenario.load.outcomes]
    story = fault_story(fault_at, [d for d in watched.decisions if d.kind == "health"], end, served, answered,
                        faulted, TTFT_THRESHOLD_S, INSTANCES)
    for line in phase_table(story.phases, faulted, TTFT_THRESHOLD_S):
        say(console, line)
    for p in story.phases:
        say(console, phase_line(p))
    for line in story_sentences(story, f"latency x{scenario.options.latency_multiplier:g}"):
        say(console, line)
    say(console, shift_line(story, scenario.balancer.kind))
    if scenario.balancer.nginx is not None:
        say(console, f"nginx reloads by the service: {scenario.balancer.nginx.reloads()}")

    console.print()
    say_slos(console, watched.alerts, watched.slos)
    if summary is not None:
        console.print(format_summary(summary), markup=False, highlight=False, soft_wrap=True)
    console.print()
    for line in next_steps("fault"):
        say(console, line)
