"""`slo-monitor demo --scenario autoscale`: the product's loop closed on a simulated fleet.

One instance serves a steady load; part-way the load triples. TTFT burns its SLO, the service's
desired replicas rise, an autoscaler acting as KEDA would on `GET /api/v1/pools/{pool}/scaling` adds
instances (each refusing connections while it "loads its model"), the simulator lists them in a
Prometheus file_sd file, the service discovers them there (`starting`), sees them serve (`healthy`),
writes them into the upstream, the load reaches them, and TTFT comes back under its SLO. Every step is
recorded with its time as a `step at=... what=... value=...` line.

Sized for CI (about a minute): 1 s scrapes, a 10 s window, 2 s scale-up stabilisation, a 2 s
autoscaler interval and a 4 s model load; instances are small (4 sequences at a time on a GPU half
as fast as the default) so that a few requests per second overload one and three carry them.
Health's TTFT thresholds are off in this pool: slowness from load is the autoscaler's to fix, and
ejecting an overloaded instance would only push its load onto the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from monitor.demo.balancer import parse_upstream
from monitor.demo.report import (
    Answered,
    Step,
    Steps,
    decision_line,
    next_steps,
    percentile,
    served_rows,
    step_line,
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
from monitor.loadgen.report import Summary, format_summary, summarize
from monitor.loadgen.runner import LoadRun
from monitor.loadgen.workload import Workload
from monitor.sim.control import Autoscaler
from monitor.sim.fleet import QuietServer, SimFleet, bind_socket, write_file_sd
from monitor.sim.params import InstanceParams

BASE_RATE = 1.5  # req/s before the load triples: about 40% of one instance
TRIPLE_AT_S = 10.0
START_INSTANCES = 1
MAX_REPLICAS = 3
MODEL_LOAD_S = 4.0
AUTOSCALE_INTERVAL_S = 2.0
HOLD_S = 5.0  # the story goes on this long after TTFT recovered, to show it stays there
CAP_S = 100.0  # without --duration, the scenario ends here even if TTFT never recovered
TTFT_SLO_S = 0.5
WINDOW = "10s"
INSTANCE: dict[str, Any] = {"speed": 0.5, "max_num_seqs": 4, "num_gpu_blocks": 1024}
HEALTH = {"ttft_p99_degraded": None, "ttft_p99_eject": None, "startup_grace": "60s", "drain_time": "10s"}
# TTFT p99 drives the recommendation, over at least 20 requests (more than the steady load brings into
# the window, so one slow request before the load triples cannot scale the pool); the SLO's burn rate
# is not a scaling signal here: over a 5m window that holds a few dozen requests, one slow request
# is a burn rate of 5 or more.
SCALING = {"min_replicas": 1, "max_replicas": MAX_REPLICAS, "target_ttft_p99": "500ms", "min_requests": 20,
           "target_ttft_burn_rate": None, "scale_up_stabilization": "2s", "scale_down_stabilization": "5m"}
SLOS = [
    {"name": "ttft-500ms", "indicator": {"type": "latency", "metric": "ttft", "threshold": "500ms"},
     "objective": "99%"},
    {"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%"},
]


def autoscale_config(file_sd: Path, db_url: str, listen: str, nginx: dict[str, str]):
    from monitor.config import validate

    return validate({
        "storage": {"url": db_url},
        "scrape": {"interval": "1s"},
        "evaluation": {"window": WINDOW},
        "pools": [{"name": POOL, "discovery": [{"type": "file", "files": [str(file_sd)]}], "health": HEALTH,
                   "scaling": SCALING}],
        "slos": SLOS,
        "api": {"listen": listen},
        "nginx": nginx,
    }, environ={}).config


def _address(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


class AutoscaleScenario:
    def __init__(self, base_rate: float, duration_s: float | None, fleet: SimFleet, api: ServiceApi, clock: Clock,
                 balancer: Balancer, truth: TruthTail, listen: str, seed: int) -> None:
        self.base_rate = base_rate
        self.duration_s = duration_s
        self.fleet = fleet
        self.api = api
        self.clock = clock
        self.balancer = balancer
        self.truth = truth
        self.listen = listen
        self.seed = seed
        self.initial = {_address(u) for u in fleet.urls}
        self.watched = Watched()
        self.steps = Steps()
        self.scaling: dict[str, Any] | None = None
        self.pool_ttft: float | None = None
        self.loads: list[LoadRun] = []
        self.load_tasks: list[asyncio.Task[Summary]] = []
        self.pending: list[str] = []
        self.tripled_at: float | None = None
        self._seen_decisions = 0
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.title = "slo-monitor demo --scenario autoscale: what the service sees and decides"

    # -- running ----------------------------------------------------------------------------------------

    def _load(self, rate: float, seed: int) -> None:
        load = self.balancer.load(self.fleet.urls, rate, 10**9,
                                  Workload(prompt_tokens=256, output_tokens=32, prefix_tokens=64, seed=seed))
        self.loads.append(load)
        self.load_tasks.append(asyncio.create_task(load.run()))

    def start(self) -> None:
        self._load(self.base_rate, self.seed)
        self._tasks.append(asyncio.create_task(self._autoscale()))
        self._tasks.append(asyncio.create_task(self._follow_upstream()))

    def _mark(self, at: float, what: str, value: object, why: str = "", *, once: bool = False) -> Step | None:
        step = self.steps.mark(at, what, value, why, once=once)
        if step is not None:
            self.pending.append(step_line(step))
        return step

    async def _autoscale(self) -> None:
        """The autoscaler, as KEDA on the service's scaling endpoint (one step per interval)."""
        scaler = Autoscaler(self.fleet, f"http://{self.listen}/api/v1/pools/{POOL}/scaling",
                            interval_s=AUTOSCALE_INTERVAL_S, load_time_s=MODEL_LOAD_S, min_instances=START_INSTANCES,
                            max_instances=MAX_REPLICAS, timeout_s=2.0)
        async with httpx.AsyncClient(trust_env=False) as client:
            while not self._stopping.is_set():
                done = len(scaler.steps)
                await scaler.poll_once(client)
                for action, desired, url in scaler.steps[done:]:
                    what = "instance_added" if action == "add" else "instance_removed"
                    self._mark(self.clock.now(), what, _address(url),
                               f"the autoscaler read desired_replicas {desired} and had {len(self.fleet.members)} "
                               f"instance(s) after this step; the new one loads its model for {MODEL_LOAD_S:g} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), AUTOSCALE_INTERVAL_S)

    async def _follow_upstream(self) -> None:
        """When each new instance enters the upstream file the service writes (NGINX reloads from it)."""
        path = self.balancer.upstream_file
        last = ""
        while not self._stopping.is_set():
            try:
                text = path.read_text()
            except OSError:
                text = last
            if text != last:
                last = text
                for entry in parse_upstream(text, POOL):
                    if not entry.down and entry.address not in self.initial:
                        self._mark(self.clock.now(), "in_upstream", entry.address,
                                   f"listed in {path.name} with weight {entry.weight}"
                                   + (", nginx reloaded" if self.balancer.nginx is not None else ""))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.1)

    async def stop(self) -> list[Summary]:
        self._stopping.set()
        for load in self.loads:
            load.stop_sending.set()
        summaries = await asyncio.gather(*self.load_tasks)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return list(summaries)

    # -- the watch loop ---------------------------------------------------------------------------------

    @property
    def recovered(self) -> Step | None:
        return self.steps.first("ttft_recovered")

    def over(self, now: float) -> bool:
        if self.duration_s is not None and now >= self.duration_s:
            return True
        if self.duration_s is None and now >= CAP_S:
            return True
        recovered = self.recovered
        return self.duration_s is None and recovered is not None and now >= recovered.at + HOLD_S

    def wake_at(self) -> float | None:
        return TRIPLE_AT_S if self.tripled_at is None else None

    async def tick(self, now: float) -> list[str]:
        if self.tripled_at is None and now >= TRIPLE_AT_S:
            self.tripled_at = now
            self._load(2 * self.base_rate, self.seed + 1)
            self._mark(now, "load", f"{3 * self.base_rate:g}",
                       f"load tripled: {self.base_rate:g} -> {3 * self.base_rate:g} req/s", once=True)
        events = await self.refresh(now)
        return events

    async def refresh(self, now: float) -> list[str]:
        events = await self.watched.poll(self.api, self.clock, {}, ("health", "scaling"))
        for d in self.watched.decisions[self._seen_decisions:]:
            why = "; ".join(dict.fromkeys(d.reasons))
            if d.kind == "scaling" and d.from_state and d.to_state.isdigit() and d.from_state.isdigit() \
                    and int(d.to_state) > int(d.from_state):
                self._mark(d.at, "desired_replicas", d.to_state, why)
            elif d.kind == "health" and d.instance not in self.initial:
                if d.to_state == "starting" and not d.from_state:
                    self._mark(d.at, "starting", d.instance, "joined through file discovery")
                elif d.to_state == "healthy" and d.from_state == "starting":
                    self._mark(d.at, "healthy", d.instance, "first successful scrape with /health 200")
        self._seen_decisions = len(self.watched.decisions)
        scaling = await self.api.get(f"/api/v1/pools/{POOL}/scaling")
        if scaling is not None:
            self.scaling = scaling
            metric = ((scaling.get("signals") or {}).get("metrics") or {}).get("ttft_p99_s") or {}
            self.pool_ttft = metric.get("value")
        if self.tripled_at is not None:
            for item in self.watched.slos:
                burn = (item.get("burn_rates") or {}).get("5m")
                if item.get("indicator", {}).get("metric") == "ttft" and burn is not None and burn > 1.0:
                    self._mark(now, "ttft_burn", f"{burn:.2f}",
                               f"SLO {item.get('name')} burns its budget {burn:.1f}x as fast as it is earned (5m)",
                               once=True)
            if self.pool_ttft is not None and self.pool_ttft > TTFT_SLO_S:
                self._mark(now, "ttft_over_slo", f"{self.pool_ttft:.3f}",
                           f"pool TTFT p99 over the {WINDOW} window above the SLO's {TTFT_SLO_S * 1000:g} ms",
                           once=True)
            grown = any(s.what == "in_upstream" for s in self.steps.items)
            if (grown and self.steps.first("ttft_over_slo") is not None and self.pool_ttft is not None
                    and self.pool_ttft <= TTFT_SLO_S):
                self._mark(now, "ttft_recovered", f"{self.pool_ttft:.3f}",
                           f"pool TTFT p99 over the {WINDOW} window back under {TTFT_SLO_S * 1000:g} ms",
                           once=True)
        self.truth.read()
        events += self.pending
        self.pending = []
        return events

    def rows(self) -> list[InstanceRow]:
        return self.watched.rows

    def status(self, now: float) -> list[str]:
        rate = self.base_rate * (3 if self.tripled_at is not None else 1)
        load = (f"load {rate:g} req/s" + (f" (tripled at {self.tripled_at:.0f} s)" if self.tripled_at is not None
                                          else f" (triples in {max(0.0, TRIPLE_AT_S - now):.0f} s)"))
        members = self.fleet.describe()
        loading = sum(1 for m in members if m["state"] == "loading")
        desired = self.scaling.get("desired_replicas") if self.scaling else None
        ttft = "n/a" if self.pool_ttft is None else f"{self.pool_ttft * 1000:.0f} ms"
        lines = [f"[{now:5.0f}s] {load} | instances {len(members) - loading} serving + {loading} loading, desired "
                 f"{desired if desired is not None else 'n/a'} | pool TTFT p99 {ttft} (SLO {TTFT_SLO_S * 1000:g} ms)",
                 self.watched.slo_status()]
        if self.api.last_error:
            lines.append(self.api.last_error)
        return lines


async def run_autoscale(options: DemoOptions, console: Console, stop: asyncio.Event, root: Path, db_path: str) -> int:
    truth_path = root / "requests.jsonl"
    sd_path = root / "targets" / f"{POOL}.json"
    base = InstanceParams(**INSTANCE, seed=options.seed)
    fleet = SimFleet([base.with_(seed=options.seed + i) for i in range(START_INSTANCES)], ground_truth=truth_path,
                     file_sd=sd_path)
    urls = fleet.bind()
    write_file_sd(sd_path, [_address(u) for u in urls])  # before the service reads it
    service_sock = bind_socket("127.0.0.1", 0)
    listen = f"127.0.0.1:{service_sock.getsockname()[1]}"
    rate = options.rate if options.rate is not None else BASE_RATE
    say(console, f"console: http://{listen}/ui/ (open it in a browser while the demo runs)")
    say(console, f"demo --scenario autoscale: {START_INSTANCES} simulated vLLM instance(s) {', '.join(_address(u) for u in urls)} "
                 f"listed in the file_sd file {sd_path}; load {rate:g} req/s, tripled at {TRIPLE_AT_S:g} s; an "
                 f"autoscaler polls http://{listen}/api/v1/pools/{POOL}/scaling every {AUTOSCALE_INTERVAL_S:g} s "
                 f"(up to {MAX_REPLICAS} instances, {MODEL_LOAD_S:g} s model load each)")
    balancer = open_balancer(options.balancer, root, urls, console)
    try:
        say(console, f"load balancer: {balancer.description}")
        say(console, "starting the monitoring service (database migrations first)...")
        config = autoscale_config(sd_path, f"sqlite:///{db_path}", listen, balancer.config())
        scaling = config.pools[0].scaling
        say(console, f"scaling of pool {POOL} (window {WINDOW}, scrape every 1s): desired replicas by the HPA rule on "
                     f"TTFT p99 over {scaling.min_requests}+ requests (target {scaling.target_ttft_p99 * 1000:g} ms) and "
                     f"waiting requests per replica (target {scaling.target_waiting_per_replica:g}); scale-up "
                     f"stabilisation {scaling.scale_up_stabilization:g} s; {scaling.min_replicas}..{scaling.max_replicas} "
                     "replicas. Health's TTFT thresholds are off: slowness under load is for the autoscaler")
        describe_slos(console, config.slos, POOL)
        return await _run(options, console, stop, fleet, config, service_sock, listen, balancer, truth_path, rate)
    finally:
        balancer.close()


async def _run(options: DemoOptions, console: Console, stop: asyncio.Event, fleet: SimFleet, config: Any, service_sock: Any,
               listen: str, balancer: Balancer, truth_path: Path, rate: float) -> int:
    await fleet.start()
    service: QuietServer | None = None
    service_task: asyncio.Task[None] | None = None
    clock = Clock()
    truth = TruthTail(truth_path)
    scenario: AutoscaleScenario | None = None
    summaries: list[Summary] = []
    end = 0.0
    try:
        service, service_task = await start_service(config, service_sock)
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            scenario = AutoscaleScenario(rate, options.duration_s, fleet, ServiceApi(client, listen), clock,
                                         balancer, truth, listen, options.seed)
            clock.reset()
            scenario.start()
            try:
                await watch(console, stop, scenario, clock, period_s=0.5)
            finally:
                end = clock.now()
                summaries = await scenario.stop()
            for line in await scenario.refresh(clock.now()):
                if not console.is_terminal:
                    print(line, flush=True)
    finally:
        if service is not None:
            service.should_exit = True
        await fleet.stop()
        if service_task is not None:
            await asyncio.gather(service_task, return_exceptions=True)
    truth.read()
    if scenario is not None:
        _print_summary(console, scenario, end, summaries)
    return 0


def _print_summary(console: Console, scenario: AutoscaleScenario, end: float, summaries: list[Summary]) -> None:
    watched, steps, clock = scenario.watched, scenario.steps, scenario.clock
    served = served_rows(scenario.truth.rows, clock.t0_wall)
    for s in sorted(served, key=lambda s: s.at):
        if s.instance not in scenario.initial:
            steps.mark(s.at, "first_request", s.instance, "the first request it served")
    console.print()
    console.print(table(watched.rows, f"Final view of the service (window {WINDOW}) after {end:.0f} s", console.width))
    for row in watched.rows:
        say(console, result_line(row))

    console.print()
    say(console, "Timeline (at = seconds since the load started):")
    for step in steps.ordered():
        say(console, step_line(step))
    console.print()
    for line in timeline_sentences(steps, scenario.tripled_at):
        say(console, line)

    console.print()
    say(console, "Decisions (the service's audit log, GET /api/v1/decisions):")
    for d in sorted(watched.decisions, key=lambda d: d.at):
        say(console, decision_line(d))

    console.print()
    say(console, f"Load by phase (client side; load balancer: {scenario.balancer.kind}):")
    outcomes = [o for load in scenario.loads for o in load.outcomes]
    answered = [Answered(o.started - clock.t0_perf, o.ttft if o.ok else None) for o in outcomes]
    first_in = min((s.at for s in steps.items if s.what == "in_upstream"), default=None)
    recovered = steps.first("ttft_recovered")
    cuts = [("steady", 0.0), ("tripled", scenario.tripled_at), ("scaled", first_in),
            ("recovered", recovered.at if recovered else None)]
    present = [(name, at) for name, at in cuts if at is not None and at < end]
    for (name, start), (_, stop) in zip(present, present[1:] + [("", end)], strict=True):
        got = [a.ttft_s for a in answered if start <= a.at < stop and a.ttft_s is not None]
        p50, p99 = percentile(got, 50), percentile(got, 99)
        say(console, f"load phase={name} from={start:.1f}s to={stop:.1f}s requests={len(got)} "
                     f"ttft_p50_s={'nan' if p50 is None else f'{p50:.3f}'} "
                     f"ttft_p99_s={'nan' if p99 is None else f'{p99:.3f}'}")
    counts: dict[str, int] = {}
    for s in served:
        counts[s.instance] = counts.get(s.instance, 0) + 1
    say(console, "requests served per instance: " + ", ".join(f"{i} {n}" for i, n in sorted(counts.items())))

    console.print()
    say_slos(console, watched.alerts, watched.slos)
    if outcomes:
        starts = [o.started for o in outcomes]
        ends = [o.started + o.e2e for o in outcomes if o.ok and o.e2e is not None]
        duration = max(max(ends, default=max(starts)) - min(starts), 1e-9)
        combined = summarize(outcomes, 3 * scenario.base_rate, duration, sum(s.incomplete for s in summaries))
        say(console, f"load: {scenario.base_rate:g} req/s, {3 * scenario.base_rate:g} req/s from "
                     f"{scenario.tripled_at or 0:.0f} s (the rate below is the tripled one)")
        console.print(format_summary(combined), markup=False, highlight=False, soft_wrap=True)
    console.print()
    for line in next_steps("autoscale"):
        say(console, line)


def timeline_sentences(steps: Steps, tripled_at: float | None) -> list[str]:
    """The sequence in words, with each step's time since the load tripled."""
    if tripled_at is None:
        return ["the load never tripled (the run ended first)"]

    def when(step: Step | None) -> str:
        return "never" if step is None else f"at {step.at:.1f} s (+{step.at - tripled_at:.1f} s)"

    lines = [f"load tripled at {tripled_at:.1f} s; TTFT p99 over its SLO {when(steps.first('ttft_over_slo'))}; "
             f"TTFT SLO burning {when(steps.first('ttft_burn'))}; desired replicas up {when(steps.first('desired_replicas'))}"]
    for added in [s for s in steps.ordered() if s.what == "instance_added"]:
        i = added.value
        lines.append(f"{i}: added {when(added)}, starting {when(steps.first('starting', i))}, healthy "
                     f"{when(steps.first('healthy', i))}, in the upstream {when(steps.first('in_upstream', i))}, "
                     f"first request {when(steps.first('first_request', i))}")
    lines.append(f"TTFT p99 back under its SLO {when(steps.first('ttft_recovered'))}")
    return lines
