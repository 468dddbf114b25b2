"""The HTTP app with the service loop bound to its lifespan, and the schedule that drives it."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import AsyncIterator

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from fastapi import FastAPI

from monitor.config import Config
from monitor.publish.api import install_routes
from monitor.service.core import CLEANUP_EVERY_S, PERSIST_EVERY_S, Service
from monitor.service.reload import Reloader
from monitor.store import Store, upgrade
from monitor.units import counted

log = logging.getLogger("monitor.service")


def create_app(config: Config, *, store: Store | None = None, migrate: bool = True,
               config_path: str | Path | None = None) -> FastAPI:
    """`config_path`: the file SIGHUP and `POST /-/reload` re-read (no reload without one)."""
    service = Service(config, store)
    scheduler = AsyncIOScheduler()
    reloader = Reloader(service, config_path, on_applied=lambda: _schedule(scheduler, service)) if config_path else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if store is not None and migrate:
            await asyncio.to_thread(upgrade, store.engine)
        service.migrated = True
        await service.start()
        _schedule(scheduler, service)
        scheduler.start()
        if reloader is not None:
            reloader.bind(asyncio.get_running_loop())
        source = "querying prometheus for" if service.config.source.type == "prometheus" else "scraping"
        log.info("%s %s in %s every %gs", source, counted(len(service.targets), "target"),
                 counted(len(service.config.pools), "pool"), service.config.scrape.interval)
        try:
            yield
        finally:
            scheduler.shutdown(wait=False)  # no new job; the running cycle is waited for by stop()
            await service.stop()
            if store is not None:
                store.close()

    # no open /docs, /redoc or /openapi.json: they would describe the API to callers without the
    # token (the schema is served under the token at /api/v1/openapi.json)
    app = FastAPI(title="llm-slo-monitor", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.service = service
    app.state.reloader = reloader
    install_routes(app, service, reloader.reload if reloader is not None else None)
    return app


def _schedule(scheduler: AsyncIOScheduler, service: Service) -> None:
    """(Re)place the jobs: at start, and after a reload that may have changed the interval."""
    interval = service.config.scrape.interval
    scheduler.add_job(service.scheduled_cycle, "interval", seconds=interval, next_run_time=_now(), max_instances=1,
                      coalesce=True, misfire_grace_time=max(1, int(interval)), id="scrape", replace_existing=True)
    # apart from the cycle: stale verdicts fail open in the NGINX file even while a cycle hangs
    scheduler.add_job(service.watch_outputs, "interval", seconds=interval, max_instances=1, coalesce=True,
                      id="watchdog", replace_existing=True)
    if service.store is not None:
        scheduler.add_job(service.persist, "interval", seconds=PERSIST_EVERY_S, max_instances=1, coalesce=True,
                          id="persist", replace_existing=True)
        if scheduler.get_job("cleanup") is None:
            scheduler.add_job(service.cleanup, "interval", seconds=CLEANUP_EVERY_S, next_run_time=_now(),
                              max_instances=1, coalesce=True, id="cleanup")
    if service.leadership is not None:
        scheduler.add_job(service.renew_lease, "interval", seconds=service.config.ha.renew_every(interval),
                          max_instances=1, coalesce=True, id="lease", replace_existing=True)


def _now() -> datetime:
    return datetime.now(UTC)
