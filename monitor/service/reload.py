"""Live reload (SIGHUP and `POST /-/reload`), as Prometheus users know it: re-read the config file,
validate it whole, and either apply it or keep serving the old one and say why."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Callable

import monitor.service.wiring as wiring
from monitor.config import Config, ConfigError, load
from monitor.service.core import Service
from monitor.service.outputs import AlertDelivery
from monitor.units import counted

log = logging.getLogger("monitor.service")


class Reloader:
    """One reload at a time; a config that fails validation is never applied."""

    def __init__(self, service: Service, path: str | Path, on_applied: Callable[[], None] | None = None) -> None:
        self.service = service
        self.path = Path(path)
        self.on_applied = on_applied  # reschedule the jobs: called when scrape.interval changed
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()  # SIGHUP reloads in flight, referenced until done
        # `serve --listen` overrides the file's api.listen; a reload must not read that override as
        # a change to the file (only one made in the file since the start is worth a note)
        self._file_listen = _file_listen(self.path)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def request(self) -> None:
        """From a signal handler (any thread): reload soon on the service's loop."""
        if self._loop is None or self._loop.is_closed():
            log.warning("SIGHUP: the service is not running yet; nothing reloaded")
            return
        self._loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        """`reload()` answers every failure itself; this only retrieves what a bug left, so asyncio
        never logs "Task exception was never retrieved" with the file's bytes in it."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("config reload failed: %s", type(task.exception()).__name__)

    def _refuse(self, problems: list[str]) -> tuple[bool, list[str]]:
        """The old config goes on; the gauge goes to 0; one summary line, then the problems."""
        status = self.service.reload_status
        status.successful, status.problems = False, tuple(problems)
        log.error("config reload from %s refused, still serving the previous config (%s):",
                  self.path, counted(len(problems), "problem"))
        for problem in problems:
            log.error("  %s", problem)
        return False, list(problems)

    async def reload(self) -> tuple[bool, list[str]]:
        """(applied, problems or notes). Never raises: a refused or failed reload keeps the old
        config serving and says why (problems by key path)."""
        async with self._lock:
            status = self.service.reload_status
            try:
                loaded = await asyncio.to_thread(load, self.path)
            except ConfigError as exc:
                return self._refuse(list(exc.problems))
            except Exception as exc:  # noqa: BLE001 - load raises only ConfigError; a bug must not escape
                return self._refuse([f"{self.path}: cannot load the config ({type(exc).__name__}: {exc})"])
            for warning in loaded.warnings:
                log.warning("config: %s", warning)
            config, running = loaded.config, self.service.config
            if config.api.listen == self._file_listen and running.api.listen != config.api.listen:
                config = config.model_copy(update={"api": config.api.model_copy(update={"listen": running.api.listen})})
            interval = running.scrape.interval
            try:
                async with self.service.cycle_lock:  # between cycles: no cycle sees half a config
                    notes = await apply_config(self.service, config)
            except Exception as exc:  # a bug must not take the running service down
                log.debug("applying the reloaded config failed", exc_info=True)
                try:
                    await apply_config(self.service, running)  # back to the config that was serving
                except Exception:
                    log.debug("restoring the previous config failed", exc_info=True)
                return self._refuse([(f"applying the config failed ({type(exc).__name__}: {exc}); the previous "
                                     "config was put back")])
            for note in notes:
                log.warning("config reload: %s", note)
            status.successful, status.success_at, status.problems = True, time.time(), ()
            if self.on_applied is not None and self.service.config.scrape.interval != interval:
                self.on_applied()  # only then: rescheduling runs a cycle at once and shifts their phase
            pools = self.service.config.pools
            log.info("config reloaded from %s: %s, %s, %s", self.path, counted(len(pools), "pool"),
                     counted(len(self.service.config.slos), "SLO"), counted(len(self.service.targets), "target"))
            return True, notes


def _file_listen(path: Path) -> str | None:
    """The file's own api.listen as the service started from it (None if it cannot be read now)."""
    try:
        return load(path).config.api.listen
    except Exception:  # noqa: BLE001 - ConfigError, or anything else: then there is no file value
        return None


async def apply_config(service: Service, config: Config) -> list[str]:
    """Take a validated new config into a running service (this package's own business, hence its
    insides). What stays keeps its state: instances, windows, error budgets, ejections and backoff.
    Returns notes on what needs a restart."""
    old, service.config = service.config, config
    notes = [f"{key}: changed, but only a restart applies it"
             for key in ("storage", "api", "ha", "traces", "haproxy") if getattr(old, key) != getattr(config, key)]
    await service.discovery.reconfigure(wiring.pool_specs(config), config.discovery)
    await service.discovery.refresh()  # new sources read now: a target moved from `targets` to a file never leaves
    service.decisions.configure(wiring.pool_policies(config), wiring.addresses(service.membership),
                                config.scrape.interval)
    service.slo.configure(config.slos, [p.name for p in config.pools], costs={p.name: p.cost for p in config.pools})
    service.slo.health_checked = wiring.health_checked(config)
    service.canaries.configure(config.canaries, config.slos)
    service.slo.evaluate(time.time())  # /api/v1/slos shows the new definitions as soon as the reload answers
    service.fleet.configure(config.evaluation.window, config.scrape.interval,
                            max(service.decisions.windows(config.evaluation.window).values(), default=0.0))
    if service.history is not None:
        service.history.settle_s = wiring.settle_s(config)
    if (old.scrape, old.source) != (config.scrape, config.source) and service.scraper is not None:
        previous, service.scraper = service.scraper, wiring.scrape_source(config)
        await previous.aclose()
    if old.alertmanager != config.alertmanager:
        if service.alerts is not None:
            await service.alerts.close(old.alertmanager.timeout + 1.0)
        notifier = wiring.notifier(config)
        service.alerts = AlertDelivery(notifier) if notifier is not None else None
    if old.nginx != config.nginx:
        service.configure_nginx(config)
    if old.gpu != config.gpu:
        if service.gpu_scraper is not None:
            await service.gpu_scraper.aclose()
        service.gpu_scraper = wiring.gpu_scraper(config)
        gpu, tracker = config.gpu, service.gpus
        tracker.memory_threshold, tracker.xid_hold_s, tracker.stale_after_s = (
            gpu.memory_threshold, gpu.xid_hold, gpu.stale_after)
        tracker.keep_exporters(gpu.exporters)
    service.apply_membership(service.discovery.membership, time.time(), force=True)
    return notes
