"""The demo's orchestration: fleet, service, load, fault, live view, summary — all on one event loop.

The service runs exactly as `slo-monitor serve` runs it (same app, same scheduler, SQLite store), only
in-process, so what the view shows is what its API answers. The view polls `GET /api/v1/instances`
like any operator's script would, rather than reading the service's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.live import Live

from monitor.demo.view import InstanceRow, plain_line, result_line, screen, table
from monitor.loadgen.report import Summary, format_summary
from monitor.loadgen.runner import LoadRun
from monitor.loadgen.workload import Workload
from monitor.sim.fleet import QuietServer, SimFleet, bind_socket
from monitor.sim.params import Faults, InstanceParams

INSTANCES = 3
SCRAPE_INTERVAL = "2s"
WINDOW = "30s"


@dataclass(slots=True)
class DemoOptions:
    duration_s: float | None = None  # None: until interrupted
    rate: float = 6.0
    fault_at_s: float = 20.0
    fault_instance: int = 1
    latency_multiplier: float = 4.0
    seed: int = 0
    db_path: str | None = None

    @property
    def effective_fault_at(self) -> float:
        """About 20 s in; in short runs half-way, so the fault has as long as the baseline to show."""
        if self.duration_s is None:
            return self.fault_at_s
        return min(self.fault_at_s, self.duration_s / 2)


@dataclass(slots=True)
class DemoState:
    rows: list[InstanceRow] = field(default_factory=list)
    fault_injected_at: float | None = None
    last_error: str | None = None


def demo_config(urls: list[str], db_url: str, listen: str):
    from monitor.config import validate

    return validate({
        "storage": {"url": db_url},
        "scrape": {"interval": SCRAPE_INTERVAL, "timeout": "1s"},
        "evaluation": {"window": WINDOW},
        "pools": [{"name": "demo", "targets": urls}],
        "slos": [
            {"name": "ttft-250ms", "indicator": {"type": "latency", "metric": "ttft", "threshold": "250ms"},
             "objective": "99%"},
            {"name": "tpot-50ms", "indicator": {"type": "latency", "metric": "tpot", "threshold": "50ms"},
             "objective": "99%"},
            {"name": "errors", "indicator": {"type": "error_ratio"}, "objective": "99.9%"},
        ],
        "api": {"listen": listen},
    }, environ={}).config


async def run_demo(options: DemoOptions, console: Console, stop: asyncio.Event) -> int:
    with contextlib.ExitStack() as stack:
        db_path = options.db_path
        if db_path is None:
            db_path = str(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="slo-demo-"))) / "demo.db")
        return await _run(options, console, stop, db_path)


async def _run(options: DemoOptions, console: Console, stop: asyncio.Event, db_path: str) -> int:
    from monitor.service import create_app
    from monitor.store import Store

    params = [InstanceParams(num_gpu_blocks=1024, seed=options.seed + i) for i in range(INSTANCES)]
    fleet = SimFleet(params)
    urls = fleet.bind()
    service_sock = bind_socket("127.0.0.1", 0)
    listen = f"127.0.0.1:{service_sock.getsockname()[1]}"
    faulted = fleet.instances[options.fault_instance % INSTANCES].engine.name
    console.print(f"demo: {INSTANCES} simulated vLLM instances {', '.join(i.engine.name for i in fleet.instances)}; "
                  f"monitor API http://{listen}/api/v1/instances; load {options.rate:g} req/s; "
                  f"latency x{options.latency_multiplier:g} fault on {faulted} at {options.effective_fault_at:g} s",
                  markup=False, highlight=False, soft_wrap=True)
    console.print("starting the monitoring service (database migrations first)...", markup=False, highlight=False)
    # built before the fleet serves: building the app may block this loop for a moment
    config = demo_config(urls, f"sqlite:///{db_path}", listen)
    app = create_app(config, store=Store.open(config.storage.url))
    await fleet.start()
    service = QuietServer(uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                         lifespan="on", timeout_graceful_shutdown=2))
    service_task = asyncio.create_task(service.serve(sockets=[service_sock]))
    state = DemoState()
    load = LoadRun(urls, options.rate, options.duration_s or 10**9,
                   Workload(prompt_tokens=256, output_tokens=64, prefix_tokens=64, seed=options.seed), drain_s=3.0)
    summary: Summary | None = None
    try:
        while not service.started:
            if service_task.done():
                service_task.result()
                raise RuntimeError("the monitoring service stopped while starting")
            await asyncio.sleep(0.05)
        load_task = asyncio.create_task(load.run())
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            await _watch(options, console, stop, client, listen, fleet, load, state, faulted, load_task)
            load.stop_sending.set()
            summary = await load_task
            await _poll(client, listen, fleet, state)
    finally:
        service.should_exit = True
        await fleet.stop()
        await asyncio.gather(service_task, return_exceptions=True)
    _print_summary(console, options, state, faulted, summary)
    return 0


async def _watch(options: DemoOptions, console: Console, stop: asyncio.Event, client: httpx.AsyncClient,
                 listen: str, fleet: SimFleet, load: LoadRun, state: DemoState, faulted: str,
                 load_task: asyncio.Task) -> None:
    started = time.monotonic()
    live = Live(console=console, refresh_per_second=4, transient=False) if console.is_terminal else None
    last_plain = -5.0
    with live if live is not None else contextlib.nullcontext():
        while not stop.is_set() and not load_task.done():
            elapsed = time.monotonic() - started
            if options.duration_s is not None and elapsed >= options.duration_s:
                break
            if state.fault_injected_at is None and elapsed >= options.effective_fault_at:
                await _inject(client, fleet, faulted, options.latency_multiplier)
                state.fault_injected_at = elapsed
            await _poll(client, listen, fleet, state)
            status = _status_lines(options, state, load, elapsed, faulted)
            if live is not None:
                live.update(screen(state.rows, "slo-monitor demo: what the service sees", status, console.width))
            elif elapsed - last_plain >= 5.0:
                last_plain = elapsed
                print(status[0], flush=True)
                for row in state.rows:
                    print(plain_line("  ", row), flush=True)
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
    if load_task.done() and load_task.exception() is not None:
        load_task.result()


async def _inject(client: httpx.AsyncClient, fleet: SimFleet, name: str, multiplier: float) -> None:
    """Through the instance's own fault endpoint, as an operator rehearsing an incident would."""
    url = next(u for u, i in zip(fleet.urls, fleet.instances, strict=True) if i.engine.name == name)
    response = await client.post(url + "/sim/faults", json={"latency_multiplier": multiplier})
    response.raise_for_status()


async def _poll(client: httpx.AsyncClient, listen: str, fleet: SimFleet, state: DemoState) -> None:
    try:
        response = await client.get(f"http://{listen}/api/v1/instances")
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()
        state.last_error = None
    except (httpx.HTTPError, ValueError) as exc:
        state.last_error = f"service API: {type(exc).__name__}: {exc}"
        return
    faults = {i.engine.name: _fault_text(i.engine.faults) for i in fleet.instances}
    state.rows = [InstanceRow.from_api(item, faults.get(item["instance"], "none")) for item in items]


def _fault_text(faults: Faults) -> str:
    active = faults.active
    if not active:
        return "none"
    return ", ".join(f"latency x{v:g}" if k == "latency_multiplier" else f"{k}={v}" for k, v in active.items())


def _status_lines(options: DemoOptions, state: DemoState, load: LoadRun, elapsed: float, faulted: str) -> list[str]:
    until = f"/{options.duration_s:g}s" if options.duration_s is not None else " (Ctrl-C to stop)"
    if state.fault_injected_at is not None:
        fault = f"latency x{options.latency_multiplier:g} on {faulted} since {state.fault_injected_at:.0f} s"
    else:
        fault = f"latency fault on {faulted} in {max(0.0, options.effective_fault_at - elapsed):.0f} s"
    lines = [f"[{elapsed:5.0f}s{until}] {fault} | load: {load.progress().line().split('] ', 1)[-1]}"]
    if state.last_error:
        lines.append(state.last_error)
    return lines


def _print_summary(console: Console, options: DemoOptions, state: DemoState, faulted: str,
                   summary: Summary | None) -> None:
    console.print()
    when = f" at {state.fault_injected_at:.0f} s" if state.fault_injected_at is not None else " (not reached)"
    console.print(table(state.rows, f"Final view of the service (window {WINDOW}); latency fault on {faulted}{when}",
                        console.width))
    for row in state.rows:
        console.print(result_line(row), markup=False, highlight=False, soft_wrap=True)
    faulted_row = next((r for r in state.rows if r.instance == faulted), None)
    others = [r.ttft_p99_s for r in state.rows if r.instance != faulted and r.ttft_p99_s is not None]
    if faulted_row is not None and faulted_row.ttft_p99_s is not None and others:
        higher = faulted_row.ttft_p99_s > max(others)
        console.print(f"verdict: faulted instance {faulted} TTFT p99 {faulted_row.ttft_p99_s:.3f} s, others at most "
                      f"{max(others):.3f} s: {'higher' if higher else 'NOT higher'}", markup=False, highlight=False,
                      soft_wrap=True)
    if summary is not None:
        console.print(format_summary(summary), markup=False, highlight=False, soft_wrap=True)
