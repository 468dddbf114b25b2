"""The running service: follow the fleet → scrape → windows and SLOs → decisions → outputs, once per
scrape interval, with the state every output reads.

APScheduler drives the loop inside uvicorn's event loop (monitor/service/app.py), so scraping (async
I/O) and the API share one thread; database writes run in a worker thread and can never stall a
cycle, and the NGINX file and Alertmanager are written from background tasks
(monitor/service/outputs.py). With `ha`, every replica collects and evaluates, but only the one
holding the database lease acts: writes the NGINX file, pages Alertmanager, writes history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from monitor.act.haproxy import AgentCheckServer
from monitor.act.nginx import UpstreamWriter, render_file
from monitor.collect.discovery import Discovery
from monitor.collect.discovery.targets import DiscoveredTarget
from monitor.collect.promql import PrometheusSource
from monitor.collect.scraper import Scraper, Target
from monitor.config import Config
from monitor.decide.fleet import FleetDecisions
from monitor.decide.verdicts import EJECTED, LEAVING, REMOVED, SLEEPING, STARTING
from monitor.evaluate.fleet import FleetView
from monitor.evaluate.signals import PoolSignals, fleet_signals, pool_signals, ttft_burn_rates
from monitor.gpu.health import GpuTracker
from monitor.gpu.rollup import GpuRollups
from monitor.otlp.receiver import TraceReceiver
from monitor.otlp.records import Routing
from monitor.otlp.store import TraceStore
from monitor.samples import ScrapeResult
import monitor.service.wiring as wiring
from monitor.service.events import EventLog
from monitor.service.history import History
from monitor.publish.exclusions import refresh_exclusions
from monitor.service.outputs import AlertDelivery, UpstreamPublisher
from monitor.store import AuditEntry, Store
from monitor.store.lease import LeaderLease, Leadership, default_replica_id
from monitor.units import counted

log = logging.getLogger("monitor.service")

PERSIST_EVERY_S = 15.0
CLEANUP_EVERY_S = 3600.0
RECENT_DECISIONS = 1000


@dataclass(slots=True)
class ReloadStatus:
    """Prometheus's `config_last_reload_successful` and its timestamp."""

    successful: bool = True
    success_at: float = 0.0
    problems: tuple[str, ...] = ()


class Service:
    """Owns the collection loop and the state every output reads."""

    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.store = store
        now = time.time()
        self.started_at = now
        self.cycles = 0
        self.slo_errors = 0  # cycles whose SLO step failed (a bug, logged with its traceback)
        self.decide_errors = 0
        self.recent_decisions: deque[AuditEntry] = deque(maxlen=RECENT_DECISIONS)  # newest last
        self.events = EventLog()  # what changed this cycle, in words and in the audit log
        self.reload_status = ReloadStatus(True, now)
        self.migrated = store is None  # /readyz: set once migrations ran

        self.discovery: Discovery = wiring.discovery(config)
        self.membership: dict[str, dict[str, DiscoveredTarget]] = {}
        self.joined_at: dict[str, float] = {}
        self.sources: dict[str, str] = {}  # how each member joined, kept while it drains
        self._tasks: set[asyncio.Task] = set()  # background work, referenced until done
        self._applied: Any = None  # the membership object last applied
        self.fleet = FleetView(config.evaluation.window, config.scrape.interval)
        self.decisions = FleetDecisions(wiring.pool_policies(config), {}, config.scrape.interval)
        self.fleet.configure(config.evaluation.window, config.scrape.interval,
                             max(self.decisions.windows(config.evaluation.window).values(), default=0.0))
        self.slo = wiring.slo_engine(config, keep_rows=store is not None)
        self.scraper: Scraper | PrometheusSource | None = None
        self.targets: list[Target] = []

        notifier = wiring.notifier(config)
        self.alerts = AlertDelivery(notifier) if notifier is not None else None
        self.nginx: UpstreamWriter | None = None
        self.upstreams: UpstreamPublisher | None = None
        self.configure_nginx(config)
        self.agent: AgentCheckServer | None = None
        if config.haproxy.agent_listen:
            host, _, port = config.haproxy.agent_listen.rpartition(":")
            self.agent = AgentCheckServer(self.decisions.find, host.strip("[]") or "127.0.0.1", int(port))

        gpu = config.gpu
        self.gpu_scraper = wiring.gpu_scraper(config)
        self.gpus = GpuTracker(wiring.gpu_mapper(config, {}), memory_threshold=gpu.memory_threshold,
                               xid_hold_s=gpu.xid_hold, stale_after_s=gpu.stale_after, exporters=gpu.exporters,
                               rollups=GpuRollups() if store is not None else None)  # stored per GPU per minute
        self.traces = TraceStore(retention_s=config.traces.retention,
                                 max_records_per_pool=config.traces.max_records_per_pool)
        self.receiver = TraceReceiver(self.traces.add, Routing({}, self.fleet.model_of),
                                      max_body=config.traces.max_body_size)
        if config.traces.exact_slis:  # latency minutes the traces cover are recounted from them, exactly
            self.slo.use_traces(self.traces, now)

        self.history: History | None = None
        if store is not None:
            self.history = History(store, self.fleet, self.slo, self.gpus.rollups, settle_s=wiring.settle_s(config),
                                   retention_s=config.storage.retention, started_at=now)
        self.leadership: Leadership | None = None
        if config.ha.enabled:
            if store is None:
                raise ValueError("ha.enabled needs a database shared by the replicas (storage.url)")
            self.leadership = Leadership(LeaderLease(store.engine), config.ha.replica_id or default_replica_id(),
                                         config.ha.lease)
        self.apply_membership(self.discovery.membership, now, sync_store=False)

    # -- what outputs read ------------------------------------------------------------------------------

    @property
    def fail_open(self) -> dict[str, str | None]:
        """pool -> why its decisions are failing open (None when they are not)."""
        return self.events.fail_open

    @property
    def notifier(self) -> Any:
        return self.alerts.notifier if self.alerts is not None else None

    @property
    def discovery_statuses(self) -> list[Any]:
        return self.discovery.statuses()

    def figures_at(self) -> float:
        """The `now` of the per-instance figures the API and /metrics show: the last cycle's, the
        moment the verdicts were made on them (and whose figures are computed once already)."""
        return self.fleet.last_cycle_at or time.time()

    def ready(self) -> bool:
        """Migrations ran and a first cycle completed: /readyz."""
        return self.migrated and self.cycles > 0

    def member_info(self, instance: str) -> tuple[str, float | None]:
        """(how it joined: static, file, http, dns, prometheus; when it joined, None for members
        present at start)."""
        return self.sources.get(instance, "static"), self.joined_at.get(instance)

    def upstreams_file(self) -> str:
        return self._render_upstreams()[0]

    def _render_upstreams(self) -> tuple[str, str]:
        pools = {p.name: self.decisions.pool_verdicts(p.name) for p in self.config.pools}  # empty ones too
        down = sum(1 for verdicts in pools.values() for v in verdicts if v.state in (EJECTED, LEAVING, SLEEPING))
        summary = f"{counted(len(pools), 'pool')}, {counted(down, 'server')} down"
        return render_file(pools), summary

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.scraper = wiring.scrape_source(self.config)
        membership = await self.discovery.refresh()
        self.apply_membership(membership, time.time(), sync_store=False)
        if self.store is not None and self.history is not None:
            await asyncio.to_thread(self.store.sync_fleet, wiring.urls(self.membership), time.time())
            await self.history.reload_slo_events()
            await refresh_exclusions(self)  # maintenance windows posted to the API (ALERTING)
            saved = await self.history.restore_health()
            if saved:
                self.decisions.restore(saved)
                log.info("health state restored for %s", counted(len(saved), "pool"))
        await self.renew_lease()
        self.slo.evaluate(time.time())
        if self.agent is not None:
            await self.agent.start()

    async def stop(self) -> None:
        if self.agent is not None:
            await self.agent.stop()
        await self.discovery.aclose()
        if self.scraper is not None:
            await self.scraper.aclose()
        if self.gpu_scraper is not None:
            await self.gpu_scraper.aclose()
        if self.upstreams is not None:
            await self.upstreams.wait(35.0)
        if self.alerts is not None:
            await self.alerts.close(self.config.alertmanager.timeout + 1.0)
        if self.history is not None:
            if self.is_leader():
                self.history.save_health(self.decisions.snapshot(), time.time())
            await self.history.persist(leader=self.is_leader(), final=True)
            await self.history.flush_before_exit()
        if self.leadership is not None:
            await asyncio.to_thread(self.leadership.release)

    # -- leadership (ha.enabled: several replicas on one database) ------------------------------------

    def is_leader(self) -> bool:
        """Whether this replica acts: writes NGINX, pages Alertmanager, writes history. Always True
        without `ha`; with it, only while the lease this replica last renewed is surely still its."""
        return self.leadership is None or self.leadership.is_leader()

    async def renew_lease(self) -> None:
        """One election round (every renew interval, and once at start before the first cycle)."""
        if self.leadership is None:
            return
        await asyncio.to_thread(self.leadership.renew)
        if self.leadership.take_stock():
            self._elected()

    def _elected(self) -> None:
        """Take over: whatever the previous leader may not have delivered is delivered again."""
        if self.history is not None:
            self.history.take_over()
            self.spawn(self._sync_store())  # members that joined while this replica followed
            if self.cycles:
                self.history.save_health(self.decisions.snapshot(), time.time())
        if self.alerts is not None:
            self.alerts.notifier.resend_all()
            if self.cycles:
                self.alerts.soon()
        if self.upstreams is not None and self.cycles:
            self.upstreams.forget_applied()  # the file may have been written by the previous leader
            self.upstreams.soon()

    # -- membership -------------------------------------------------------------------------------------

    def apply_membership(self, membership: Any, now: float, *, sync_store: bool = True,
                          force: bool = False) -> None:
        """Follow discovery (or a reload, `force`d: the pools' settings changed even where their
        members did not): decisions learn who joined and left, the fleet keeps the tracks of every
        member and of those still draining, the scrape list, trace routing and GPU mapping follow,
        and the database learns the new instances (for their history)."""
        if membership is self._applied and not force:  # discovery hands back the same object until it changes
            return
        self._applied = membership
        new = {pool: dict(members) for pool, members in membership.items()}
        first = not self.cycles  # what is there before the first cycle is the fleet, not a join
        before = {address for members in self.membership.values() for address in members}
        for members in new.values():
            for address in members:
                if address not in before and not first:  # only a newcomer joins: not the fleet found at start
                    self.joined_at[address] = now
        self.membership = new
        self.sources.update({address: t.source for members in new.values() for address, t in members.items()})
        self.decisions.set_members(wiring.addresses(new), joining=not first)
        self._follow_members()
        self.targets = wiring.scrape_targets(new)
        if self.scraper is not None:
            self.scraper.keep_only(self.targets)  # connections to departed targets are closed
        addresses = wiring.addresses(new)
        self.receiver.routing = Routing(addresses, self.fleet.model_of)
        self.gpus.mapper = wiring.gpu_mapper(self.config, addresses)
        if sync_store and self.store is not None and self.is_leader():
            self.spawn(self._sync_store())

    def spawn(self, work: Any) -> None:
        """Run `work` in the background, holding a reference until it is done (the loop keeps only
        a weak one, and an unreferenced task can vanish mid-run)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _follow_members(self) -> None:
        """The fleet tracks what decisions still know (members and leaving ones, until dropped)."""
        urls: dict[str, dict[str, str]] = {}
        for pool, health in self.decisions.health.items():
            mine = self.membership.get(pool, {})
            for address in health.instances:
                track = self.fleet.tracks.get(address)
                url = mine[address].url if address in mine else track.url if track else None
                if url is not None:
                    urls.setdefault(pool, {})[address] = url
        _, left = self.fleet.set_members(urls)
        if self.history is not None:
            self.history.retire(left, leader=self.is_leader())  # their last minutes, before they are gone
        self.slo.forget({t.instance for t in left})
        for address in [a for a in self.joined_at if a not in self.fleet.tracks]:
            del self.joined_at[address]
        for address in [a for a in self.sources if a not in self.fleet.tracks]:
            del self.sources[address]

    async def _sync_store(self) -> None:
        assert self.store is not None
        try:
            await asyncio.to_thread(self.store.sync_fleet, wiring.urls(self.membership), time.time())
        except Exception as exc:  # noqa: BLE001 - history of new members waits for the next change
            log.warning("database: new members not recorded yet: %s", str(exc).splitlines()[0])

    # -- one cycle --------------------------------------------------------------------------------------

    async def scrape_cycle(self) -> None:
        assert self.scraper is not None
        started = time.perf_counter()
        wait = min(0.25, self.config.scrape.interval / 10.0)  # a file change is seen in the cycle that reads it
        self.apply_membership(await self.discovery.poll_briefly(wait), time.time())
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
        members = {pool: [i for i, h in health.instances.items() if h.state != LEAVING]
                   for pool, health in self.decisions.health.items()}
        signals = await fleet_signals(self.fleet, members, self.decisions.windows(self.fleet.window), now)
        self.fleet.last_cycle_at = now
        self.fleet.last_cycle_duration_s = time.perf_counter() - started
        self.decide(now, signals)
        self.cycles += 1

    def decide(self, now: float, signals: dict[str, PoolSignals] | None = None) -> None:
        """Health verdicts, scaling recommendations, the audit log and the NGINX upstream file.

        A bug here is logged and counted; collection and the SLOs go on, and the outputs keep the
        last verdicts (which is what failing open means for the service itself).
        """
        try:
            if signals is None:  # outside a cycle (tests, a takeover): every member's signals now
                windows = self.decisions.windows(self.fleet.window)
                signals = {p: pool_signals(self.fleet, p, list(h.instances), now, windows[p])
                           for p, h in self.decisions.health.items()}
            external = None
            if self.gpu_scraper is not None:
                external = {(pool, i): self.gpus.reasons(pool, i, now)
                            for pool, s in signals.items() for i in s.instances}
            outcome = self.decisions.decide(signals, now, data_at=self.fleet.last_cycle_at,
                                            cycle_duration_s=self.fleet.last_cycle_duration_s,
                                            burn_rates=ttft_burn_rates(self.slo.statuses), external=external)
            audit = self.events.audit(outcome, now)
            self.recent_decisions.extend(audit)
            if any(e.to_state == REMOVED for e in audit):
                self._follow_members()
            leader = self.is_leader()
            if self.history is not None and leader:
                self.history.store.queue_decisions(audit)
                if any(e.kind == "health" for e in audit):
                    self.history.save_health(self.decisions.snapshot(), now)
            if self.upstreams is not None and leader:
                self.upstreams.soon()
        except Exception:  # noqa: BLE001
            self.decide_errors += 1
            log.exception("health/scaling decisions failed")

    def evaluate_slos(self, results: list[ScrapeResult]) -> None:
        """Count the cycle's SLO events, evaluate, and hand alerts to the notifier.

        A bug here is logged and counted but must not stop collection: the per-instance figures
        and health outputs do not depend on it.
        """
        try:
            self.slo.observe(results, not_serving=self._not_serving())
            now = time.time()
            statuses = self.slo.evaluate(now)
            self.events.slo_changes(statuses)
            if self.alerts is not None:
                # followers keep the alert set, for a takeover; cost budgets alert too
                self.alerts.notifier.update(statuses, now, self.slo.cost_budgets)
                if self.is_leader():
                    self.alerts.soon()
        except Exception:  # noqa: BLE001
            self.slo_errors += 1
            log.exception("SLO evaluation failed")

    def _not_serving(self) -> set[str]:
        """Members joined and still starting, or leaving: not counted by the availability SLO."""
        return {i for health in self.decisions.health.values() for i, h in health.instances.items()
                if h.state in (STARTING, LEAVING, SLEEPING)}

    # -- schedule -----------------------------------------------------------------------------------------

    async def persist(self, final: bool = False) -> None:
        if self.history is not None:
            await self.history.persist(leader=self.is_leader(), final=final)
            await refresh_exclusions(self)  # another replica may have taken a POST /api/v1/exclusions

    async def cleanup(self) -> None:
        if self.history is not None and self.is_leader():
            await self.history.cleanup()

    def configure_nginx(self, config: Config) -> None:
        n = config.nginx
        self.nginx = UpstreamWriter(n.upstream_file, n.check, n.reload) if n.upstream_file else None
        self.upstreams = UpstreamPublisher(self.nginx, self._render_upstreams) if self.nginx else None
