"""The running service: scrape → windows and SLOs → persist on a schedule, and the HTTP app that publishes it.

APScheduler drives the loop inside uvicorn's event loop, so scraping (async I/O) and the API share
one thread; database writes run in a worker thread and can never stall a scrape cycle, and
Alertmanager is notified from a background task, so an unreachable Alertmanager cannot either.
With `ha`, every replica collects and evaluates, but only the one holding the database lease
(monitor/store/lease.py) acts on it: writes the NGINX file, pages Alertmanager, writes history.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from monitor.act.haproxy import AgentCheckServer
from monitor.act.nginx import UpstreamWriter, WriteResult, render_file
from monitor.collect.promql import PrometheusSource
from monitor.collect.scraper import Scraper, targets_of
from monitor.config import Config, LatencyIndicator
from monitor.decide.health import FleetHealth
from monitor.decide.scaling import FleetScaling
from monitor.evaluate.fleet import FleetView, InstanceView, minute_floor, take_outcomes
from monitor.evaluate.slo import MINUTE
from monitor.evaluate.slo_engine import SloEngine, SloEventRow
from monitor.gpu.collect import GpuScraper
from monitor.gpu.health import GpuTracker
from monitor.gpu.mapping import GpuMapper
from monitor.gpu.rollup import GpuRollups
from monitor.otlp.receiver import TraceReceiver
from monitor.otlp.records import Routing
from monitor.otlp.store import TraceStore
from monitor.publish.alertmanager import AlertmanagerNotifier
from monitor.samples import ScrapeResult
from monitor.store.db import Decision, Store, upgrade
from monitor.store.lease import LeaderLease, Leadership, default_replica_id

log = logging.getLogger(__name__)

PERSIST_EVERY_S = 15.0
SHUTDOWN_FLUSH_S = 10.0  # how long an exit keeps trying to write held rows
SHUTDOWN_RETRY_S = 1.0
CLEANUP_EVERY_S = 3600.0
HEALTH_STATE_KEY = "health"
RECENT_DECISIONS = 1000
# A follower keeps this much recent history unwritten, so that when it takes over it rewrites the
# minutes a crashed leader may not have flushed (at most PERSIST_EVERY_S plus the minute filling)
STANDBY_KEEP_S = 120.0
# Prometheus samples reach the `prometheus` source up to one Prometheus scrape interval after
# their timestamp: a minute is rolled up only once they have had time to arrive
PROMETHEUS_SETTLE_S = 30.0


class Service:
    """Owns the collection loop and the state every output reads."""

    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.store = store
        self.fleet = FleetView(config)
        self.slo = SloEngine(config, keep_rows=store is not None)
        self.notifier = AlertmanagerNotifier.from_config(config)
        self._notify_task: asyncio.Task | None = None
        self.slo_errors = 0  # cycles whose SLO step failed (a bug, logged with its traceback)
        self.health = FleetHealth(config)
        self.scaling = FleetScaling(config)
        self.decide_errors = 0
        self.recent_decisions: deque[Decision] = deque(maxlen=RECENT_DECISIONS)  # newest last
        self._desired: dict[str, int] = {}
        self.fail_open: dict[str, str | None] = {}  # pool -> why decisions are failing open
        n = config.nginx
        self.nginx = UpstreamWriter(n.upstream_file, n.check, n.reload) if n.upstream_file else None
        self._nginx_task: asyncio.Task | None = None
        self._nginx_pending: str | None = None
        self.agent: AgentCheckServer | None = None
        if config.haproxy.agent_listen:
            host, _, port = config.haproxy.agent_listen.rpartition(":")
            self.agent = AgentCheckServer(self.health.find, host.strip("[]") or "127.0.0.1", int(port))
        gpu = config.gpu
        self.gpu_scraper = GpuScraper.from_config(config) if gpu.exporters else None
        self.gpus = GpuTracker(GpuMapper.from_config(config), memory_threshold=gpu.memory_threshold,
                               xid_hold_s=gpu.xid_hold, stale_after_s=gpu.stale_after, exporters=gpu.exporters,
                               rollups=GpuRollups() if store is not None else None)  # stored per GPU per minute
        self.traces = TraceStore(retention_s=config.traces.retention,
                                 max_records_per_pool=config.traces.max_records_per_pool)
        self.receiver = TraceReceiver(self.traces.add, Routing.from_config(config, model_of=self._model_of),
                                      max_body=config.traces.max_body_size)
        if config.traces.exact_slis:  # latency minutes the traces cover are recounted from them, exactly
            self.slo.use_traces(self.traces, time.time())
        self.targets = targets_of(config)
        self.scraper: Scraper | PrometheusSource | None = None
        self.leadership: Leadership | None = None
        if config.ha.enabled:
            if store is None:
                raise ValueError("ha.enabled needs a database shared by the replicas (storage.url)")
            self.leadership = Leadership(LeaderLease(store.engine), config.ha.replica_id or default_replica_id(),
                                         config.ha.lease)
        self._acting_term: int | None = None  # the lease term this replica last took over in
        self._standby_slo_rows: dict[tuple[str, str, str, float], SloEventRow] = {}
        self.started_at = time.time()
        self.cycles = 0
        self._rolled_up_to = minute_floor(self.started_at)
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self.config.source.type == "prometheus":
            self.scraper = PrometheusSource.from_config(self.config)
        else:
            self.scraper = Scraper.from_config(self.config)
        if self.store is not None:
            await asyncio.to_thread(self.store.sync_fleet, self.config, time.time())
            await self.reload_slo_events()
            await self.restore_health()
        await self.renew_lease()
        self.slo.evaluate(time.time())
        if self.agent is not None:
            await self.agent.start()

    async def restore_health(self) -> None:
        """Put back who was ejected and until when: a restart must not hand traffic back to an
        instance that has not earned it."""
        assert self.store is not None
        try:
            saved = await asyncio.to_thread(self.store.load_state, HEALTH_STATE_KEY)
        except SQLAlchemyError as exc:
            log.warning("health state not restored (starting fresh): %s", str(exc).splitlines()[0])
            return
        if saved:
            self.health.restore(saved)
            log.info("health state restored for %d pools", len(saved))

    async def reload_slo_events(self) -> None:
        """Rebuild the SLO series from the stored minutes, so budgets and the 1h..3d windows
        survive a restart. A database that does not answer costs history, never the start."""
        if self.store is None or not self.slo.slos:
            return
        now = time.time()
        try:
            rows = await asyncio.to_thread(self.store.slo_events, now - self.slo.horizon() - MINUTE)
        except SQLAlchemyError as exc:
            log.warning("SLO history not reloaded (budgets start empty): %s", str(exc).splitlines()[0])
            return
        used = self.slo.load(rows, now)
        log.info("SLO history: reloaded %d per-minute rows for %d SLOs", used, len(self.slo.slos))

    async def stop(self) -> None:
        if self.agent is not None:
            await self.agent.stop()
        if self.scraper is not None:
            await self.scraper.aclose()
        if self.gpu_scraper is not None:
            await self.gpu_scraper.aclose()
        if self._nginx_task is not None and not self._nginx_task.done():
            await asyncio.wait({self._nginx_task}, timeout=35.0)
        if self._notify_task is not None and not self._notify_task.done():
            # a POST in flight is bounded by alertmanager.timeout; let it finish, don't resolve
            # anything on shutdown (firing alerts expire by their endsAt if nobody takes over)
            await asyncio.wait({self._notify_task}, timeout=self.config.alertmanager.timeout + 1.0)
        if self.notifier is not None:
            await self.notifier.aclose()
        if self.store is not None:
            if self.is_leader():
                self.store.queue_state(HEALTH_STATE_KEY, self.health.snapshot(), time.time())
            await self.persist(final=True)
            await self._flush_before_exit()
        if self.leadership is not None:
            await asyncio.to_thread(self.leadership.release)

    async def _flush_before_exit(self) -> None:
        """Rows the database refused are held in memory while serving; at exit they have nowhere
        else to go, so the database gets a few more tries (well inside Kubernetes' 30 s grace
        period), and what is still refused after them is reported as lost, with its count."""
        assert self.store is not None
        deadline = time.monotonic() + SHUTDOWN_FLUSH_S
        while self.store.pending and time.monotonic() < deadline:
            await asyncio.sleep(SHUTDOWN_RETRY_S)
            await asyncio.to_thread(self.store.flush)
        if self.store.pending:
            log.error("exit: %d rows of history could not be written in %gs (%s) and are lost",
                      self.store.pending, SHUTDOWN_FLUSH_S, self.store.last_error)

    # -- leadership (ha.enabled: several replicas on one database) --------------------------------

    def is_leader(self) -> bool:
        """Whether this replica acts: writes NGINX, pages Alertmanager, writes history. Always True
        without `ha`; with it, only while the lease this replica last renewed is surely still its."""
        return self.leadership is None or self.leadership.is_leader()

    async def renew_lease(self) -> None:
        """One election round (every renew interval, and once at start before the first cycle)."""
        if self.leadership is None:
            return
        await asyncio.to_thread(self.leadership.renew)
        lease = self.leadership
        if lease.is_leader():
            if self._acting_term != lease.term:
                self._elected()
        elif self._acting_term is not None:
            self._acting_term = None
            if lease.holder != lease.replica_id:
                log.warning("leadership lost: %s holds the lease (term %d); this replica (%s) follows",
                            lease.holder, lease.term, lease.replica_id)
            else:
                log.warning("leadership suspended: the lease could not be renewed in time (%s)", lease.last_error)

    def _elected(self) -> None:
        """Take over: whatever the previous leader may not have delivered is delivered again."""
        assert self.leadership is not None
        self._acting_term = self.leadership.term
        log.warning("leader: replica %s holds the lease (term %d, %gs)", self.leadership.replica_id,
                    self.leadership.term, self.leadership.duration_s)
        if self.store is not None:
            self.store.queue_slo_events(list(self._standby_slo_rows.values()))
            self._standby_slo_rows.clear()
            if self.cycles:
                self.store.queue_state(HEALTH_STATE_KEY, self.health.snapshot(), time.time())
        if self.notifier is not None:
            self.notifier.resend_all()
            if self.cycles:
                self._notify_soon()
        if self.nginx is not None and self.cycles:
            self.nginx.last_applied = None  # the file may have been written by the previous leader
            self._write_upstreams_soon()

    async def scrape_cycle(self) -> None:
        assert self.scraper is not None
        started = time.perf_counter()
        if self.gpu_scraper is not None:
            results, gpu_scrapes = await asyncio.gather(self.scraper.scrape_all(self.targets),
                                                        self.gpu_scraper.scrape_all())
            for scrape in gpu_scrapes:
                self.gpus.observe(scrape, time.time())
        else:
            results = await self.scraper.scrape_all(self.targets)
        self.fleet.ingest(results)
        self.evaluate_slos(results)
        now = time.time()
        await self._window_stats(now)
        self.fleet.last_cycle_at = now
        self.fleet.last_cycle_duration_s = time.perf_counter() - started
        self.decide(now)
        self.cycles += 1

    async def _window_stats(self, now: float) -> None:
        """Every instance's window figures for this cycle, computed in batches that let the API answer
        in between (at 1,000 instances they cost a few hundred ms in one block); health, scaling
        and the API then read them from the fleet's per-cycle cache."""
        windows = {self.fleet.window} | self.health.windows(self.fleet.window)
        for i, track in enumerate(self.fleet.tracks.values()):
            for window in windows:
                self.fleet.stats(track, now, window)
            if i % 100 == 99:
                await asyncio.sleep(0)

    def figures_at(self) -> float:
        """The `now` of the per-instance figures the API and /metrics show: the last cycle's, the
        moment the verdicts were made on them (and whose figures are computed once already)."""
        return self.fleet.last_cycle_at or time.time()

    def decide(self, now: float) -> None:
        """Health verdicts, scaling recommendations, the audit log and the NGINX upstream file.

        A bug here is logged and counted; collection and the SLOs go on, and the outputs keep the
        last verdicts (which is what failing open means for the service itself).
        """
        try:
            audit: list[Decision] = []
            external = (lambda pool, instance: self.gpus.reasons(pool, instance, now)) if self.gpu_scraper else None
            for decision in self.health.evaluate(self.fleet, now, external=external):
                if decision.fail_open != self.fail_open.get(decision.pool):
                    if decision.fail_open:
                        log.warning("pool %s: failing open: %s", decision.pool, decision.fail_open)
                    self.fail_open[decision.pool] = decision.fail_open
                for t in decision.transitions:
                    log.info("%s %s: %s -> %s (%s)", t.pool, t.instance, t.from_state, t.to_state, "; ".join(t.reasons))
                    audit.append(Decision(t.at, "health", t.pool, t.instance, t.from_state, t.to_state, t.reasons,
                                          t.signals))
            changed_health = bool(audit)
            recommendations = self.scaling.evaluate(
                self.fleet, now, serving=self._serves, burn_rates=self._ttft_burn_rates())
            for pool, rec in recommendations.items():
                before = self._desired.get(pool)
                if before != rec.desired_replicas:
                    self._desired[pool] = rec.desired_replicas
                    audit.append(Decision(now, "scaling", pool, "", "" if before is None else str(before),
                                          str(rec.desired_replicas), (rec.reason,), rec.signals))
            self.recent_decisions.extend(audit)
            leader = self.is_leader()
            if self.store is not None and leader:
                self.store.queue_decisions(audit)
                if changed_health:
                    self.store.queue_state(HEALTH_STATE_KEY, self.health.snapshot(), now)
            if self.nginx is not None and leader:
                self._write_upstreams_soon()
        except Exception:  # noqa: BLE001
            self.decide_errors += 1
            log.exception("health/scaling decisions failed")

    def _model_of(self, pool: str, instance: str | None) -> str | None:
        """The model an instance serves, for vLLM V1 spans that do not name it: the scraped one."""
        track = self.fleet.tracks.get(instance) if instance else None
        models = [m for m in (track.samples if track else {}) if m]
        if len(models) == 1:
            return models[0]
        pool_models = {m for t in self.fleet.tracks.values() if t.pool == pool for m in t.samples if m}
        return next(iter(pool_models)) if len(pool_models) == 1 else None

    def _serves(self, pool: str, instance: str) -> bool:
        verdict = self.health.verdict(pool, instance)
        return verdict is None or verdict.serves_traffic

    def _ttft_burn_rates(self) -> dict[str, float | None]:
        """Per pool, the highest 5m burn rate among its TTFT latency SLOs (None without one)."""
        out: dict[str, float | None] = {}
        for status in self.slo.statuses:
            indicator = status.config.indicator
            if status.key.model_name or not (isinstance(indicator, LatencyIndicator) and indicator.metric == "ttft"):
                continue
            burn = status.evaluation.burn_rates.get("5m")
            if burn is not None:
                current = out.get(status.key.pool)
                out[status.key.pool] = burn if current is None else max(current, burn)
        return out

    def views(self, now: float) -> list[InstanceView]:
        """Per-instance views with the health verdict's state and reasons."""
        out = []
        for view in self.fleet.views(now):
            verdict = self.health.verdict(view.pool, view.instance)
            if verdict is not None:
                view = dataclasses.replace(view, state=verdict.state, reasons=tuple(verdict.reasons))
            out.append(view)
        return out

    def upstreams_file(self) -> str:
        return render_file({p.name: self.health.pool_verdicts(p.name) for p in self.config.pools})

    def _write_upstreams_soon(self) -> None:
        """Render now; write, validate and reload in a worker thread. One write at a time: a render
        made while one is in flight replaces any older waiting one."""
        self._nginx_pending = self.upstreams_file()
        if self._nginx_task is None or self._nginx_task.done():
            self._nginx_task = asyncio.get_running_loop().create_task(self._write_upstreams())

    async def _write_upstreams(self) -> None:
        assert self.nginx is not None
        while self._nginx_pending is not None:
            content, self._nginx_pending = self._nginx_pending, None
            result: WriteResult = await self.nginx.apply(content)
            if result.skipped:  # unchanged, or a failure already logged that waits for its retry
                continue
            if result.changed or not result.ok:
                level = logging.INFO if result.ok else logging.WARNING
                log.log(level, "nginx upstreams: %s", result)

    def evaluate_slos(self, results: list[ScrapeResult]) -> None:
        """Count the cycle's SLO events, evaluate, and hand alerts to the notifier.

        A bug here is logged and counted but must not stop collection: the per-instance figures
        and health outputs do not depend on it.
        """
        try:
            self.slo.observe(results)
            now = time.time()
            statuses = self.slo.evaluate(now)
            if self.notifier is not None:
                self.notifier.update(statuses, now)  # followers keep the alert set, to send on a takeover
                if self.is_leader():
                    self._notify_soon()
        except Exception:  # noqa: BLE001
            self.slo_errors += 1
            log.exception("SLO evaluation failed")

    def _notify_soon(self) -> None:
        """Start a delivery in the background unless one is in flight (it picks up changes next)."""
        if self._notify_task is None or self._notify_task.done():
            self._notify_task = asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        assert self.notifier is not None
        try:
            await self.notifier.tick(time.time())
        except Exception:  # noqa: BLE001 - delivery must never take the loop down
            log.exception("alert delivery failed")

    async def persist(self, final: bool = False) -> None:
        """Queue the rollups of every finished minute and the SLO minutes that changed, and flush."""
        if self.store is None:
            return
        async with self._lock:
            now = time.time()
            if not self.is_leader():
                self._stand_by(now)
                return
            # a scrape started before a minute's end may finish up to `timeout` later
            settle = self.config.scrape.timeout + 1.0
            if self.config.source.type == "prometheus":
                settle += PROMETHEUS_SETTLE_S
            ready_before = now if final else now - settle
            rollups = []
            while self._rolled_up_to + 60.0 <= ready_before:
                rollups.extend(self.fleet.rollups(self._rolled_up_to))
                self._rolled_up_to += 60.0
            if final:
                rollups.extend(self.fleet.rollups(self._rolled_up_to))
            outcomes = take_outcomes(self.fleet.tracks.values(), float("inf") if final else self._rolled_up_to)
            self.store.queue(rollups, outcomes)
            self.store.queue_slo_events(self.slo.take_rows())
            if self.gpus.rollups is not None:
                self.store.queue_gpu_rollups(self.gpus.rollups.take(float("inf") if final else self._rolled_up_to))
            await asyncio.to_thread(self.store.flush)

    def _stand_by(self, now: float) -> None:
        """A follower writes nothing (the leader writes the same history), but keeps the last
        STANDBY_KEEP_S of it ready: on a takeover those minutes are written again, covering what
        the previous leader had not flushed when it died."""
        keep_from = minute_floor(now) - STANDBY_KEEP_S
        self._rolled_up_to = max(self._rolled_up_to, keep_from)
        take_outcomes(self.fleet.tracks.values(), self._rolled_up_to)  # older tallies: the leader's
        if self.gpus.rollups is not None:
            self.gpus.rollups.take(self._rolled_up_to)  # older GPU minutes: the leader's too
        for row in self.slo.take_rows():
            self._standby_slo_rows[(row.slo, row.pool, row.model_name, row.minute)] = row
        for key in [k for k in self._standby_slo_rows if k[3] < keep_from]:
            del self._standby_slo_rows[key]

    async def cleanup(self) -> None:
        if self.store is None or not self.is_leader():
            return
        now = time.time()
        deleted = await asyncio.to_thread(self.store.cleanup, now - self.config.storage.retention)
        # SLO minutes live as long as the longest SLO window needs them (a 90d SLO outlives 30d rollups)
        keep = max(self.config.storage.retention, self.slo.horizon()) + MINUTE
        deleted += await asyncio.to_thread(self.store.cleanup_slo_events, now - keep)
        if deleted:
            log.info("retention: deleted %d rows older than %gs", deleted, self.config.storage.retention)


def create_app(config: Config, *, store: Store | None = None, migrate: bool = True) -> FastAPI:
    """The FastAPI app with the service loop bound to its lifespan."""
    from monitor.publish.api import install_routes

    service = Service(config, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if store is not None and migrate:
            await asyncio.to_thread(upgrade, store.engine)
        await service.start()
        scheduler = AsyncIOScheduler()
        interval = config.scrape.interval
        scheduler.add_job(service.scrape_cycle, "interval", seconds=interval, next_run_time=_now(),
                          max_instances=1, coalesce=True, misfire_grace_time=max(1, int(interval)), id="scrape")
        if store is not None:
            scheduler.add_job(service.persist, "interval", seconds=PERSIST_EVERY_S, max_instances=1,
                              coalesce=True, id="persist")
            scheduler.add_job(service.cleanup, "interval", seconds=CLEANUP_EVERY_S, next_run_time=_now(),
                              max_instances=1, coalesce=True, id="cleanup")
        if service.leadership is not None:
            scheduler.add_job(service.renew_lease, "interval", seconds=config.ha.renew_every(interval),
                              max_instances=1, coalesce=True, id="lease")
        scheduler.start()
        log.info("%s %d targets in %d pools every %gs", "querying prometheus for" if config.source.type == "prometheus"
                 else "scraping", len(service.targets), len(config.pools), interval)
        try:
            yield
        finally:
            scheduler.shutdown(wait=False)
            await service.stop()
            if store is not None:
                store.close()

    # no open /docs, /redoc or /openapi.json: they would describe the API to callers without the
    # token (the schema is served under the token at /api/v1/openapi.json)
    app = FastAPI(title="llm-slo-monitor", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.service = service
    install_routes(app, service)
    return app


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
