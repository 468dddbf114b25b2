"""Live reload (SIGHUP and `POST /-/reload`), as Prometheus users know it: re-read the config file,
validate it whole, and either apply it or keep serving the old one and say why."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Callable

from monitor.config import ConfigError, load
from monitor.service.core import Service

log = logging.getLogger("monitor.service")


class Reloader:
    """One reload at a time; a config that fails validation is never applied."""

    def __init__(self, service: Service, path: str | Path, on_applied: Callable[[], None] | None = None) -> None:
        self.service = service
        self.path = Path(path)
        self.on_applied = on_applied  # e.g. reschedule the cycle when scrape.interval changed
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def request(self) -> None:
        """From a signal handler (any thread): reload soon on the service's loop."""
        if self._loop is None or self._loop.is_closed():
            log.warning("SIGHUP: the service is not running yet; nothing reloaded")
            return
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self.reload()))

    async def reload(self) -> tuple[bool, list[str]]:
        """(applied, problems or notes). Problems are logged one per line with their key path."""
        async with self._lock:
            status = self.service.reload_status
            try:
                loaded = await asyncio.to_thread(load, self.path)
            except ConfigError as exc:
                status.successful, status.problems = False, tuple(exc.problems)
                log.error("config reload from %s refused, still serving the previous config (%d problems):",
                          self.path, len(exc.problems))
                for problem in exc.problems:
                    log.error("  %s", problem)
                return False, list(exc.problems)
            for warning in loaded.warnings:
                log.warning("config: %s", warning)
            try:
                notes = await self.service.apply_config(loaded.config)
            except Exception as exc:  # noqa: BLE001 - a bug must not take the running service down
                log.exception("config reload failed while applying it")
                status.successful, status.problems = False, (f"{type(exc).__name__}: {exc}",)
                return False, [f"applying the config failed: {exc}"]
            for note in notes:
                log.warning("config reload: %s", note)
            status.successful, status.success_at, status.problems = True, time.time(), ()
            if self.on_applied is not None:
                self.on_applied()
            pools = self.service.config.pools
            log.info("config reloaded from %s: %d pools, %d SLOs, %d targets", self.path, len(pools),
                     len(self.service.config.slos), len(self.service.targets))
            return True, notes
