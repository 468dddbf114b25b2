"""What both demo scenarios run on: options, the clock, the balancer the load goes through, the
service started in-process, its API polled as an operator's script would, the simulator's record of
each request, and the live view.

The service runs exactly as `slo-monitor serve` runs it (same app, same scheduler, SQLite store), only
in-process, so what the view shows is what its API answers: `GET /api/v1/instances`,
`/api/v1/decisions` and `/api/v1/slos`, never the service's internals.

The load follows the service's verdicts through the NGINX output the service writes (see
monitor/demo/balancer.py): a real NGINX when one is installed, else the load generator weighting its
picks by the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import httpx
import uvicorn
from rich.console import Console
from rich.live import Live

from monitor.act.nginx import UpstreamServer, render_file
from monitor.demo.balancer import UpstreamWeights
from monitor.demo.nginx import STREAMING, PrivateNginx, find_nginx
from monitor.demo.report import (
    AlertChange,
    Decision,
    alert_changes,
    alert_line,
    decision_from_api,
    decision_line,
    indicator_words,
    slo_line,
    slo_words,
)
from monitor.demo.view import InstanceRow, plain_line, screen
from monitor.errors import BadInput
from monitor.loadgen.runner import LoadRun
from monitor.loadgen.workload import Workload
from monitor.sim.fleet import QuietServer, free_port

POOL = "demo"
SCENARIOS = ("fault", "autoscale", "canary")
BALANCERS = ("auto", "nginx", "weights")


@dataclass(slots=True)
class DemoOptions:
    scenario: str = "fault"  # fault | autoscale | canary
    duration_s: float | None = None  # None: until interrupted (fault), until the story is told (autoscale)
    rate: float | None = None  # None: the scenario's own
    fault_at_s: float = 20.0
    fault_instance: int = 1
    latency_multiplier: float = 4.0
    seed: int = 0
    db_path: str | None = None
    balancer: str = "auto"

    @property
    def fault_rate(self) -> float:
        return self.rate if self.rate is not None else 6.0

    @property
    def effective_fault_at(self) -> float:
        """About 20 s in; in short runs half-way, so the fault has as long as the baseline to show."""
        if self.duration_s is None:
            return self.fault_at_s
        return min(self.fault_at_s, self.duration_s / 2)


class Clock:
    """Demo seconds: since the load started, on the wall clock (the API's and the simulator's) and on
    perf_counter (the load generator's)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0_wall = time.time()
        self.t0_perf = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0_perf


def say(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def say_slos(console: Console, alerts: Sequence[AlertChange], slos: Sequence[Any]) -> None:
    """The SLO part of every demo's summary: the alert changes as they came, then each SLO at the end."""
    say(console, "SLOs (GET /api/v1/slos at the end; alert changes as they came):")
    for change in alerts:
        say(console, alert_line(change))
    for item in slos:
        say(console, slo_line(item))


# --- the balancer --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Balancer:
    """Where the load goes: NGINX's port, or the instances picked by the upstream file's weights."""

    kind: str  # nginx | weights
    description: str
    upstream_file: Path
    nginx: PrivateNginx | None = None
    weights: UpstreamWeights | None = None

    def config(self) -> dict[str, str]:
        """The service's `nginx:` section."""
        out = {"upstream_file": str(self.upstream_file)}
        if self.nginx is not None:
            out.update(check=self.nginx.check_command, reload=self.nginx.reload_command)
        return out

    def load(self, urls: Sequence[str], rate: float, duration_s: float, workload: Workload) -> LoadRun:
        if self.nginx is not None:
            return LoadRun([self.nginx.url], rate, duration_s, workload, drain_s=3.0)
        return LoadRun(list(urls), rate, duration_s, workload, drain_s=3.0, choose=self.weights)

    def close(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()


def open_balancer(mode: str, root: Path, urls: Sequence[str], console: Console) -> Balancer:
    """NGINX if asked for or (auto) installed and able to start; else the load generator by weights.

    The upstream file is written first as the service's first render will write it (every instance
    plain), because NGINX refuses to start without the file it includes."""
    upstream_file = root / "upstreams.conf"
    upstream_file.write_text(render_file({POOL: [UpstreamServer(u.split("://", 1)[1], "unknown") for u in urls]}))
    if mode != "weights":
        binary = find_nginx()
        if binary is None and mode == "nginx":
            raise BadInput("--balancer nginx: no nginx binary found (install nginx, or use --balancer weights)")
        if binary is not None:
            nginx = PrivateNginx(binary, root / "nginx", upstream_file, POOL, free_port(), location=STREAMING)
            try:
                nginx.start()
            except RuntimeError as exc:
                if mode == "nginx":
                    raise BadInput(f"--balancer nginx: {exc}") from None
                say(console, f"nginx did not start ({exc}); the load generator follows the upstream file instead")
            else:
                return Balancer("nginx", f"{nginx.version()} on {nginx.url}, reloaded by the service from "
                                f"{upstream_file}", upstream_file, nginx=nginx)
    why = "no nginx installed: " if mode == "auto" and find_nginx() is None else ""
    return Balancer("weights", f"{why}the load generator picks instances by the weights of {upstream_file} "
                    "(NGINX's smooth weighted round-robin)", upstream_file,
                    weights=UpstreamWeights(upstream_file, POOL, list(urls)))


# --- the service and its API ----------------------------------------------------------------------------


class ServiceApi:
    """GETs against the service's API; a failure is kept in `last_error` and answers None."""

    def __init__(self, client: httpx.AsyncClient, listen: str) -> None:
        self.client = client
        self.base = f"http://{listen}"
        self.last_error: str | None = None

    async def get(self, path: str, **params: Any) -> Any | None:
        try:
            response = await self.client.get(self.base + path, params=params or None)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            self.last_error = f"service API {path}: {type(exc).__name__}: {exc}"
            return None
        self.last_error = None
        return body


async def start_service(config: Any, sock: Any) -> tuple[QuietServer, asyncio.Task[None]]:
    from monitor.service import create_app
    from monitor.store import Store

    app = create_app(config, store=Store.open(config.storage.url))
    server = QuietServer(uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                        lifespan="on", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the monitoring service stopped while starting")
        await asyncio.sleep(0.05)
    return server, task


class TruthTail:
    """Reads the simulator's ground-truth file as it grows (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        new = []
        for line in lines:
            if line.strip():
                with contextlib.suppress(ValueError):
                    new.append(json.loads(line))
        self.rows.extend(new)
        return new


@dataclass(slots=True)
class Watched:
    """What the polls of the API have seen so far (shared by both scenarios)."""

    rows: list[InstanceRow] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    slos: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[AlertChange] = field(default_factory=list)
    alert_level: dict[str, str] = field(default_factory=dict)
    _decision_keys: set[tuple[Any, ...]] = field(default_factory=set)

    async def poll(self, api: ServiceApi, clock: Clock, faults: dict[str, str], kinds: Sequence[str]) -> list[str]:
        """Instances, new decisions and SLO alert changes; returns the new event lines."""
        events: list[str] = []
        items = await api.get("/api/v1/instances")
        if items is not None:
            self.rows = [InstanceRow.from_api(item, faults.get(item["instance"], "none")) for item in items]
        found = await api.get("/api/v1/decisions", limit=1000)
        if found is not None:
            for item in reversed(found):  # oldest first
                key = (item.get("at"), item.get("kind"), item.get("instance"), item.get("from"), item.get("to"))
                if key in self._decision_keys or item.get("kind") not in kinds:
                    continue
                self._decision_keys.add(key)
                d = decision_from_api(item, clock.t0_wall)
                self.decisions.append(d)
                events.append(decision_line(d))
        slos = await api.get("/api/v1/slos")
        if slos is not None:
            self.slos = slos
            for change in alert_changes(self.alert_level, slos, clock.now()):
                self.alert_level[change.slo] = change.to_alert
                self.alerts.append(change)
                events.append(alert_line(change))
        return events

    def slo_status(self) -> str:
        return "SLOs: " + (" | ".join(slo_words(s) for s in self.slos) if self.slos else "not evaluated yet")


class Scenario(Protocol):
    title: str

    def over(self, now: float) -> bool: ...

    async def tick(self, now: float) -> list[str]: ...

    def rows(self) -> list[InstanceRow]: ...

    def status(self, now: float) -> list[str]: ...

    def wake_at(self) -> float | None:
        """When the scenario acts next (demo seconds), so the loop wakes then rather than a period later."""
        ...


async def watch(console: Console, stop: asyncio.Event, scenario: Scenario, clock: Clock,
                done: asyncio.Future[Any] | None = None, period_s: float = 1.0) -> None:
    """The live view: a rich table on a terminal; otherwise event lines as they come and the table
    as plain lines every 5 s (a log file or CI)."""
    live = Live(console=console, refresh_per_second=4, transient=False) if console.is_terminal else None
    last_plain = -5.0
    recent: list[str] = []
    with live if live is not None else contextlib.nullcontext():
        while not stop.is_set() and (done is None or not done.done()):
            now = clock.now()
            if scenario.over(now):
                break
            events = await scenario.tick(now)
            status = scenario.status(now)
            if live is not None:
                recent = (recent + events)[-6:]
                live.update(screen(scenario.rows(), scenario.title, status + recent, console.width))
            else:
                for line in events:
                    print(line, flush=True)
                if now - last_plain >= 5.0:
                    last_plain = now
                    for line in status:
                        print(line, flush=True)
                    for row in scenario.rows():
                        print(plain_line("  ", row), flush=True)
            wake = scenario.wake_at()
            pause = period_s if wake is None else min(period_s, max(0.0, wake - clock.now()))
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except TimeoutError:
                pass
    if done is not None and done.done() and done.exception() is not None:
        done.result()


def describe_slos(console: Console, slos: Sequence[Any], pool: str) -> None:
    """The SLOs as configured, in words (the summary shows where their budgets ended up)."""
    say(console, f"SLOs on pool {pool} (budgets over each SLO's window; a demo spends them in seconds, "
                 "which is what makes burn rates and pages show):")
    for slo in slos:
        indicator = slo.indicator.model_dump()
        say(console, f"  {slo.name:<12} {indicator_words(indicator, slo.objective)}, over {slo.window / 86400:g} days")
