"""`slo-monitor demo --scenario canary`: a rollout judged on evidence, failed, rolled back, and passed.

Three instances labelled `version=v1` and one labelled `version=v2` serve the same load; the v2 one
decodes 1.5x slower (its TPOT factor). The simulator lists each version in its own Prometheus file_sd
file with its label, the service discovers both files into one pool, and the configured canary
compares `{version: v1}` with `{version: v2}` (monitor/decide/canary.py). The demo then plays the
rollout tool (an Argo Rollouts `web` metric on `GET /api/v1/canaries/{name}`): while the verdict is
`inconclusive` it waits (the status line shows what evidence is missing); on `fail` it rolls back
(the v2 instance leaves, so the candidate group empties and the evidence starts again); then it
deploys a fixed v2 (TPOT factor 1.0) and waits for `pass`. Every step is a `step at=... what=...
value=...` line; the summary lists the verdicts with their sentences.

Sized for CI (about a minute): 1 s scrapes, the canary's minimum evidence scaled down to 40 requests
per group and 10 s (production defaults: 500 requests, 5 minutes). The instances are slow GPUs
(speed 0.33: a decode step of about 40 ms) so that v1's TPOT sits in vLLM's 25-50 ms histogram
bucket and the bad v2's 1.5x in the 50-75 ms one: the judge sees buckets, not exact values, and a
regression hidden inside one bucket is invisible to it (as it would be to Prometheus).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from monitor.demo.report import (
    Step,
    Steps,
    decision_line,
    step_line,
)
from monitor.demo.stack import (
    POOL,
    Balancer,
    Clock,
    DemoOptions,
    ServiceApi,
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
from monitor.sim.fleet import QuietServer, SimFleet, bind_socket, write_file_sd
from monitor.sim.params import InstanceParams

CANARY = "llama-v2"
V1_INSTANCES = 3
BAD_TPOT_FACTOR = 1.5
RATE = 8.0  # req/s through the balancer: v2 gets a quarter of it
MIN_REQUESTS = 40  # per group, before any verdict (production default 500)
MIN_DURATION = "10s"  # (production default 5m)
MODEL_LOAD_S = 2.0  # the fixed v2's model load
HOLD_S = 4.0  # the story goes on this long after the fixed v2 passed
CAP_S = 150.0  # without --duration, the scenario ends here even if no verdict came
WINDOW = "30s"
INSTANCE: dict[str, Any] = {"speed": 0.33, "num_gpu_blocks": 2048}
# health is not the subject here: a 1.5x slower canary is not a broken instance (TTFT thresholds stay
# at their defaults, far above this fleet's); a removed instance is dropped quickly so the candidate
# group empties at once
HEALTH = {"relative_slowdown": None, "drain_time": "2s", "startup_grace": "30s"}
SLOS = [
    {"name": "tpot-100ms", "indicator": {"type": "latency", "metric": "tpot", "threshold": "100ms"},
     "objective": "99%"},
    {"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%"},
]
CANARY_CONFIG = {"name": CANARY, "pool": POOL, "baseline": {"labels": {"version": "v1"}},
                 "candidate": {"labels": {"version": "v2"}}, "min_requests": MIN_REQUESTS,
                 "min_duration": MIN_DURATION, "confidence": "95%"}


def canary_config(sd_files: list[Path], db_url: str, listen: str, nginx: dict[str, str]) -> Any:
    from monitor.config import validate

    return validate({
        "storage": {"url": db_url},
        "scrape": {"interval": "1s"},
        "evaluation": {"window": WINDOW},
        "pools": [{"name": POOL, "discovery": [{"type": "file", "files": [str(p) for p in sd_files]}],
                   "health": HEALTH}],
        "slos": SLOS,
        "canaries": [CANARY_CONFIG],
        "api": {"listen": listen},
        "nginx": nginx,
    }, environ={}).config


def _address(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


class CanaryScenario:
    """The rollout tool's loop: read the verdict, roll back on `fail`, deploy the fix, wait for `pass`."""

    def __init__(self, options: DemoOptions, rate: float, v1: SimFleet, v2: SimFleet, api: ServiceApi, clock: Clock,
                 balancer: Balancer, load: LoadRun) -> None:
        self.options = options
        self.rate = rate
        self.v1 = v1
        self.v2 = v2
        self.api = api
        self.clock = clock
        self.balancer = balancer
        self.load = load
        self.watched = Watched()
        self.steps = Steps()
        self.pending: list[str] = []
        self.canary: dict[str, Any] | None = None
        self.verdicts: list[tuple[float, str, str, str]] = []  # (at, candidate, verdict, reason) as they changed
        self.judged: dict[str, dict[str, Any]] = {}  # pass/fail -> the canary's API answer when first given
        self.phase = "bad"  # bad: the 1.5x v2 serves; rolled_back: none; good: the fixed v2 serves
        self.candidate = _address(v2.urls[0])
        self.title = "slo-monitor demo --scenario canary: v1 against v2, judged on evidence"
        self._acting = False

    def _mark(self, at: float, what: str, value: object, why: str = "") -> Step | None:
        step = self.steps.mark(at, what, value, why)
        if step is not None:
            self.pending.append(step_line(step))
        return step

    @property
    def passed(self) -> Step | None:
        return self.steps.first("verdict", "pass")

    def over(self, now: float) -> bool:
        if self.options.duration_s is not None and now >= self.options.duration_s:
            return True
        passed = self.passed
        if self.options.duration_s is None and now >= CAP_S:
            return True
        return passed is not None and now >= passed.at + HOLD_S

    def wake_at(self) -> float | None:
        return None

    async def tick(self, now: float) -> list[str]:
        events = await self.refresh(now)
        canary = self.canary or {}
        verdict = canary.get("verdict")
        candidates = (canary.get("candidate") or {}).get("instances")
        if self.phase == "bad" and verdict == "fail" and not self._acting:
            self._acting = True
            await self.v2.remove(self.candidate)
            self.phase = "rolled_back"
            self._mark(self.clock.now(), "rollback", self.candidate,
                       f"the rollout tool read verdict=fail from /api/v1/canaries/{CANARY} and removed the "
                       f"x{BAD_TPOT_FACTOR:g} v2 instance (its file_sd file is now empty)")
            self._acting = False
        elif self.phase == "rolled_back" and candidates == [] and not self._acting:
            # the service has seen the candidate group empty: its evidence starts again with the next v2
            self._acting = True
            good = InstanceParams(**INSTANCE, seed=self.options.seed + 100)
            (url,) = await self.v2.add(1, load_time_s=MODEL_LOAD_S, params=good)
            self.candidate = _address(url)
            self.phase = "good"
            self._mark(self.clock.now(), "deploy", self.candidate,
                       f"a fixed v2 (TPOT factor 1.0), labelled version=v2 in its file_sd file; loads its model for "
                       f"{MODEL_LOAD_S:g} s")
            self._acting = False
        self.pending, out = [], self.pending
        return events + out

    async def refresh(self, now: float) -> list[str]:
        events = await self.watched.poll(self.api, self.clock, {}, ("health",))
        canary = await self.api.get(f"/api/v1/canaries/{CANARY}")
        if canary is not None:
            self.canary = canary
            verdict, reason = str(canary.get("verdict")), str(canary.get("reason"))
            last = self.verdicts[-1] if self.verdicts else None
            if last is None or last[2] != verdict or last[1] != self.candidate:
                self.verdicts.append((now, self.candidate, verdict, reason))
            if verdict in ("pass", "fail") and self.phase in ("bad", "good") and (
                    self.candidate in ((canary.get("candidate") or {}).get("instances") or [])):
                which = f"x{BAD_TPOT_FACTOR:g}" if self.phase == "bad" else "fixed"
                self.judged.setdefault(verdict, canary)
                self._mark(now, "verdict", verdict, f"{self.candidate} ({which}): {reason}")
            elif verdict == "inconclusive" and self.phase in ("bad", "good"):
                self._mark(now, "collecting", self.candidate, reason)
        self.pending, out = [], self.pending
        return events + out

    def rows(self) -> list[InstanceRow]:
        return self.watched.rows

    def status(self, now: float) -> list[str]:
        canary = self.canary or {}
        requests = canary.get("requests") or {}
        phase = {"bad": f"v2 = {self.candidate} with TPOT x{BAD_TPOT_FACTOR:g}",
                 "rolled_back": "v2 rolled back; waiting for the service to see the candidate group empty",
                 "good": f"v2 = {self.candidate} fixed (TPOT x1)"}[self.phase]
        lines = [f"[{now:5.0f}s] load {self.rate:g} req/s over {V1_INSTANCES} v1 + 1 v2 | {phase}",
                 (f"canary {CANARY}: {canary.get('verdict', 'n/a')} (v1 {requests.get('baseline', 0)} requests, "
                  f"v2 {requests.get('candidate', 0)}; {MIN_REQUESTS} each and {MIN_DURATION} needed): "
                  f"{canary.get('reason', 'not judged yet')}"),
                 self.watched.slo_status()]
        if self.api.last_error:
            lines.append(self.api.last_error)
        return lines


async def run_canary(options: DemoOptions, console: Console, stop: asyncio.Event, root: Path, db_path: str) -> int:
    sd_v1, sd_v2 = root / "targets" / "v1.json", root / "targets" / "v2.json"
    base = InstanceParams(**INSTANCE, seed=options.seed)
    # one fleet per version, each keeping its own file_sd file with its version label (as two
    # Deployments' pods carry theirs); the service discovers both files into one pool
    v1 = SimFleet([base.with_(seed=options.seed + i) for i in range(V1_INSTANCES)],
                  file_sd=sd_v1, file_sd_labels={"version": "v1"})
    v2 = SimFleet([base.with_(seed=options.seed + 50, tpot_factor=BAD_TPOT_FACTOR)], file_sd=sd_v2,
                  file_sd_labels={"version": "v2"})
    urls = v1.bind() + v2.bind()
    write_file_sd(sd_v1, [_address(u) for u in urls[:V1_INSTANCES]], {"version": "v1"})  # before the service reads it
    write_file_sd(sd_v2, [_address(u) for u in urls[V1_INSTANCES:]], {"version": "v2"})
    service_sock = bind_socket("127.0.0.1", 0)
    listen = f"127.0.0.1:{service_sock.getsockname()[1]}"
    rate = options.rate if options.rate is not None else RATE
    say(console, f"console: http://{listen}/ui/ (open it in a browser while the demo runs)")
    say(console, f"demo --scenario canary: v1 = {', '.join(_address(u) for u in urls[:V1_INSTANCES])} (file_sd "
                 f"{sd_v1}, label version=v1); v2 = {_address(urls[-1])} with TPOT x{BAD_TPOT_FACTOR:g} (file_sd "
                 f"{sd_v2}, label version=v2); load {rate:g} req/s; the demo plays the rollout tool on "
                 f"http://{listen}/api/v1/canaries/{CANARY}")
    balancer = open_balancer(options.balancer, root, urls, console)
    try:
        say(console, f"load balancer: {balancer.description}")
        say(console, "starting the monitoring service (database migrations first)...")
        config = canary_config([sd_v1, sd_v2], f"sqlite:///{db_path}", listen, balancer.config())
        c = config.canaries[0]
        say(console, f"canary {c.name} in pool {POOL}: baseline {c.baseline.describe(POOL)} against candidate "
                     f"{c.candidate.describe(POOL)}; metrics {', '.join(c.metrics)}; tolerance 10% on latencies, "
                     f"0.1 point on errors; a verdict after {c.min_requests} requests per group and {MIN_DURATION} "
                     f"(scaled down for the demo; defaults 500 and 5m); confidence {c.confidence * 100:g}%")
        describe_slos(console, config.slos, POOL)
        return await _run(options, console, stop, v1, v2, config, service_sock, listen, balancer, rate)
    finally:
        balancer.close()


async def _run(options: DemoOptions, console: Console, stop: asyncio.Event, v1: SimFleet, v2: SimFleet, config: Any,
               service_sock: Any, listen: str, balancer: Balancer, rate: float) -> int:
    await v1.start()
    await v2.start()
    service: QuietServer | None = None
    service_task: asyncio.Task[None] | None = None
    clock = Clock()
    load = balancer.load(v1.urls + v2.urls, rate, options.duration_s or 10**9,
                         Workload(prompt_tokens=64, output_tokens=16, seed=options.seed))
    scenario: CanaryScenario | None = None
    summary: Summary | None = None
    end = 0.0
    try:
        service, service_task = await start_service(config, service_sock)
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            scenario = CanaryScenario(options, rate, v1, v2, ServiceApi(client, listen), clock, balancer, load)
            clock.reset()
            load_task = asyncio.create_task(load.run())
            try:
                await watch(console, stop, scenario, clock, load_task, period_s=0.5)
            finally:
                end = clock.now()
                load.stop_sending.set()
                summary = await load_task
            for line in await scenario.refresh(clock.now()):
                if not console.is_terminal:
                    print(line, flush=True)
    finally:
        if service is not None:
            service.should_exit = True
        await v2.stop()
        await v1.stop()
        if service_task is not None:
            await asyncio.gather(service_task, return_exceptions=True)
    if scenario is not None:
        _print_summary(console, scenario, end, summary)
    return 0


def _print_summary(console: Console, scenario: CanaryScenario, end: float, summary: Summary | None) -> None:
    watched = scenario.watched
    console.print()
    console.print(table(watched.rows, f"Final view of the service (window {WINDOW}) after {end:.0f} s", console.width))
    for row in watched.rows:
        say(console, result_line(row))

    console.print()
    say(console, "Timeline (at = seconds since the load started):")
    for step in scenario.steps.ordered():
        say(console, step_line(step))

    console.print()
    say(console, f"Canary {CANARY} verdicts as GET /api/v1/canaries/{CANARY} gave them (each change):")
    for at, candidate, verdict, reason in scenario.verdicts:
        say(console, f"canary at={at:.1f}s candidate={candidate} verdict={verdict} reason={reason}")
    for line in verdict_sentences(scenario.steps):
        say(console, line)
    for verdict, body in scenario.judged.items():
        say(console, f"per metric when the canary was first judged {verdict} (baseline and candidate: p99 or p50 in "
                     "seconds, errors a ratio, preemptions per request):")
        for line in metric_lines(body):
            say(console, line)

    console.print()
    say(console, "Decisions (the service's audit log, GET /api/v1/decisions):")
    for d in sorted(watched.decisions, key=lambda d: d.at):
        say(console, decision_line(d))

    console.print()
    say_slos(console, watched.alerts, watched.slos)
    if summary is not None:
        console.print(format_summary(summary), markup=False, highlight=False, soft_wrap=True)
    console.print()
    for line in next_lines():
        say(console, line)


def verdict_sentences(steps: Steps) -> list[str]:
    """The rollout in words: the bad v2 failed (with the judge's sentence), the fixed one passed."""
    failed, passed = steps.first("verdict", "fail"), steps.first("verdict", "pass")
    rollback, deploy = steps.first("rollback"), steps.first("deploy")
    lines = []
    if failed is not None:
        lines.append(f"the x{BAD_TPOT_FACTOR:g} v2 failed at {failed.at:.1f} s: {failed.why.split(': ', 1)[-1]}")
    else:
        lines.append(f"the x{BAD_TPOT_FACTOR:g} v2 was not failed before the run ended")
    if rollback is not None:
        lines.append(f"rolled back at {rollback.at:.1f} s" + (f"; fixed v2 deployed at {deploy.at:.1f} s"
                                                              if deploy is not None else ""))
    if passed is not None:
        lines.append(f"the fixed v2 passed at {passed.at:.1f} s: {passed.why.split(': ', 1)[-1]}")
    elif deploy is not None:
        lines.append("the fixed v2 had no verdict yet when the run ended")
    return lines


def metric_lines(body: dict[str, Any]) -> list[str]:
    """`metric name=tpot quantile=p99 baseline=0.0497 candidate=0.0742 change=+49% interval=[+44%, +55%]
    verdict=fail` from one `GET /api/v1/canaries/{name}` answer."""
    lines = []
    for name, m in (body.get("metrics") or {}).items():
        absolute = name == "errors"

        def pct(value: Any, absolute: bool = absolute) -> str:
            if not isinstance(value, (int, float)):
                return "n/a"
            return f"{value * 100:+.2f}pt" if absolute else f"{value * 100:+.0f}%"

        interval = m.get("interval") or [None, None]
        base, cand = m.get("baseline"), m.get("candidate")
        lines.append(f"metric name={name} quantile={m.get('quantile') or '-'} "
                     f"baseline={'n/a' if base is None else format(base, '.4g')} "
                     f"candidate={'n/a' if cand is None else format(cand, '.4g')} change={pct(m.get('change'))} "
                     f"interval=[{pct(interval[0])}, {pct(interval[1])}] verdict={m.get('verdict')}"
                     + (f" normalized={m['normalized']}" if m.get("normalized") else "")
                     + (f" note={m['note']}" if m.get("note") else ""))
    return lines


def next_lines() -> list[str]:
    return ["Next:",
            (f"  curl -s http://127.0.0.1:9470/api/v1/canaries/{CANARY} -H 'Authorization: Bearer TOKEN'   # on your "
             "fleet: docs/canaries.md"),
            ("  slo-monitor generate --format prometheus-operator   # an Argo AnalysisTemplate and a Flagger "
             "MetricTemplate per canary"),
            "  ./scripts/run demo --scenario fault --duration 60   # one slow instance among 3: ejected, let back",
            "  slo-monitor demo --help   # the demo's options (--duration, --rate, --balancer)"]
