"""Reading the simulator's ground-truth file while the fleet is still writing it."""

from __future__ import annotations

import asyncio

from monitor.sim.groundtruth import read_rows


async def wait_for_rows(path, n: int, timeout: float = 20.0) -> list[dict]:
    """The ground-truth rows once `n` are written (or whatever is there after `timeout`): the simulator
    writes a row when a request finishes, a moment after the client has its answer."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = read_rows(path)
        if len(rows) >= n or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.05)
