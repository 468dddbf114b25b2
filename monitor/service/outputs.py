"""The two outputs that do I/O in the background: the NGINX upstream file and Alertmanager pushes.

Each runs one delivery at a time in a task of its own, so a slow `nginx -s reload` or an
Alertmanager that does not answer can never hold up a scrape cycle; a newer render (or alert set)
made while one is in flight is picked up when it finishes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from monitor.act.nginx import UpstreamWriter, WriteResult
from monitor.publish.alertmanager import AlertmanagerNotifier

log = logging.getLogger("monitor.service")


class UpstreamPublisher:
    """Render now; write, validate and reload in a worker thread. One write at a time: a render
    made while one is in flight replaces any older waiting one."""

    def __init__(self, writer: UpstreamWriter, render: Callable[[], tuple[str, str]]) -> None:
        """`render()` -> (file content, a short summary for the log: pools and servers down)."""
        self.writer = writer
        self.render = render
        self.task: asyncio.Task | None = None
        self._pending: tuple[str, str] | None = None

    def soon(self) -> None:
        self._pending = self.render()
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._write())

    def forget_applied(self) -> None:
        """The file may have been written by someone else (a previous leader): write it again."""
        self.writer.last_applied = None

    async def _write(self) -> None:
        while self._pending is not None:
            (content, summary), self._pending = self._pending, None
            result: WriteResult = await self.writer.apply(content)
            if result.skipped:  # unchanged, or a failure already logged that waits for its retry
                continue
            if result.changed or not result.ok:
                level = logging.INFO if result.ok else logging.WARNING
                log.log(level, "nginx upstreams: %s", describe(result, summary))

    async def wait(self, timeout: float) -> None:
        if self.task is not None and not self.task.done():
            await asyncio.wait({self.task}, timeout=timeout)


def describe(result: WriteResult, summary: str) -> str:
    """`wrote 2 pools, 1 server down, validated, reloaded in 12 ms`, or what failed, in words."""
    ms = f"{result.duration_s * 1000:.0f} ms"
    if not result.ok:
        done = (["wrote " + summary] if result.written else []) + (["validated"] if result.checked else [])
        put_back = "; the previous file was put back" if result.restored else ""
        return f"{', '.join(done) + ', but ' if done else ''}failed after {ms}: {result.error}{put_back}"
    done = ["wrote " + summary]
    if result.checked:
        done.append("validated")
    done.append(f"reloaded in {ms}" if result.reloaded else f"in {ms} (no reload command)")
    return ", ".join(done)


class AlertDelivery:
    """Alertmanager pushes in the background; a delivery in flight picks up changes next time."""

    def __init__(self, notifier: AlertmanagerNotifier) -> None:
        self.notifier = notifier
        self.task: asyncio.Task | None = None

    def soon(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        try:
            await self.notifier.tick(time.time())
        except Exception:  # delivery must never take the loop down
            log.exception("alert delivery failed")

    async def close(self, timeout: float) -> None:
        """A POST in flight is bounded by alertmanager.timeout; let it finish, don't resolve anything
        on shutdown (firing alerts expire by their endsAt if nobody takes over)."""
        if self.task is not None and not self.task.done():
            await asyncio.wait({self.task}, timeout=timeout)
        await self.notifier.aclose()
