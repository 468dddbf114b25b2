"""The demo's entry: one temporary folder, then the scenario asked for.

Two scenarios share the plumbing of monitor/demo/stack.py: `fault` (the default: one instance made
slow part-way; monitor/demo/fault.py), `autoscale` (load triples and the fleet grows;
monitor/demo/autoscale.py) and `canary` (a v2 judged against v1, failed, rolled back, fixed and
passed; monitor/demo/canary.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

from rich.console import Console

from monitor.demo.autoscale import run_autoscale
from monitor.demo.canary import run_canary
from monitor.demo.fault import run_fault
from monitor.demo.stack import DemoOptions

__all__ = ["DemoOptions", "run_demo"]


async def run_demo(options: DemoOptions, console: Console, stop: asyncio.Event) -> int:
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="slo-demo-")))
        db_path = options.db_path or str(root / "demo.db")
        if options.scenario == "autoscale":
            return await run_autoscale(options, console, stop, root, db_path)
        if options.scenario == "canary":
            return await run_canary(options, console, stop, root, db_path)
        return await run_fault(options, console, stop, root, db_path)
