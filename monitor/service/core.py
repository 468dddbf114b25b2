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
from monitor.decide.fleet import CycleDecisions, FleetDecisions
from monitor.decide.verdicts import EJECTED, LEAVING, REMOVED, SLEEPING, STARTING
from monitor.evaluate.fleet import FleetView
from monitor.evaluate.signals import PoolSignals, pool_signals
from monitor.evaluate.slo_engine import SloStatus
from monitor.gpu.health import GpuTracker
from monitor.gpu.rollup import GpuRollups
from monitor.otlp.receiver import TraceReceiver
from monitor.otlp.records import Routing
from monitor.otlp.store import TraceStore
from monitor.samples import ScrapeResult
import monitor.service.wiring as wiring
from monitor.service.history import History
from monitor.service.outputs import AlertDelivery, UpstreamPublisher
from monitor.settings import LatencyIndicator
from monitor.store import AuditEntry, Store
from monitor.store.lease import LeaderLease, Leadership, default_replica_id

log = logging.getLogger("monitor.service")

PERSIST_EVERY_S = 15.0
CLEANUP_EVERY_S = 3600.0
RECENT_DECISIONS = 1000
# Prometheus samples reach the `prometheus` source up to one Prometheus scrape interval after
# their timestamp: a minute is rolled up only once they have had time to arrive
PROMETHEUS_SETTLE_S = 30.0


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
        self.fail_open: dict[str, str | None] = {}  # pool -> why decisions are failing open
        self.reload_status = ReloadStatus(True, now)
        self.migrated = store is None  # /readyz: set once migrations ran
        self._desired: dict[str, int] = {}
        self._firing: dict[tuple[str, str, str], tuple[str, ...]] = {}  # SLO key -> severities firing

        self.discovery: Discovery = wiring.discovery(config)
        self.membership: dict[str, dict[str, DiscoveredTarget]] = {}
        self.joined_at: dict[str, float] = {}
        self.fleet = FleetView(config.evaluation.window, config.scrape.interval)
        self.decisions = FleetDecisions(wiring.pool_policies(config), {}, config.scrape.interval)
        self.slo = wiring.slo_engine(config, keep_rows=store is not None)
        self.scraper: Scraper | PrometheusSource | None = None
        self.targets: list[Target] = []

        notifier = wiring.notifier(config)
        self.alerts = AlertDelivery(notifier) if notifier is not None else None
        self.nginx: UpstreamWriter | None = None
        self.upstreams: UpstreamPublisher | None = None
        self._configure_nginx(config)
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
        self.receiver = TraceReceiver(self.traces.add, Routing({}, self._model_of),
                                      max_body=config.traces.max_body_size)
        if config.traces.exact_slis:  # latency minutes the traces cover are recounted from them, exactly
            self.slo.use_traces(self.traces, now)

        self.history: History | None = None
        if store is not None:
            settle = config.scrape.timeout + 1.0  # a scrape started before a minute's end may finish later
            if config.source.type == "prometheus":
                settle += PROMETHEUS_SETTLE_S
            self.history = History(store, self.fleet, self.slo, self.gpus.rollups, settle_s=settle,
                                   retention_s=config.storage.retention, started_at=now)
        self.leadership: Leadership | None = None
        if config.ha.enabled:
            if store is None:
                raise ValueError("ha.enabled needs a database shared by the replicas (storage.url)")
            self.leadership = Leadership(LeaderLease(store.engine), config.ha.replica_id or default_replica_id(),
                                         config.ha.lease)
        self._acting_term: int | None = None  # the lease term this replica last took over in
        self._apply_membership(self.discovery.membership, now, sync_store=False)

    # -- what outputs read ------------------------------------------------------------------------------

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
        for members in self.membership.values():
            if instance in members:
                return members[instance].source, self.joined_at.get(instance)
        return "static", self.joined_at.get(instance)

    def upstreams_file(self) -> str:
        return self._render_upstreams()[0]

    def _render_upstreams(self) -> tuple[str, str]:
        pools = {p.name: self.decisions.pool_verdicts(p.name) for p in self.config.pools}
        pools = {name: verdicts for name, verdicts in pools.items() if verdicts}
        down = sum(1 for verdicts in pools.values() for v in verdicts if v.state == EJECTED)
        summary = (f"{len(pools)} pool{'s' if len(pools) != 1 else ''}, "
                   f"{down} server{'s' if down != 1 else ''} down")
        return render_file(pools), summary

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.scraper = wiring.scrape_source(self.config)
        membership = await self.discovery.refresh()
        self._apply_membership(membership, time.time(), sync_store=False)
        if self.store is not None and self.history is not None:
            await asyncio.to_thread(self.store.sync_fleet, wiring.urls(self.membership), time.time())
            await self.history.reload_slo_events()
            saved = await self.history.restore_health()
            if saved:
                self.decisions.restore(saved)
                log.info("health state restored for %d pools", len(saved))
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
        if self.history is not None:
            self.history.take_over()
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

    def _apply_membership(self, membership: Any, now: float, *, sync_store: bool = True,
                          force: bool = False) -> None:
        """Follow discovery (or a reload, `force`d: the pools' settings changed even where their
        members did not): decisions learn who joined and left, the fleet keeps the tracks of every
        member and of those still draining, the scrape list, trace routing and GPU mapping follow,
        and the database learns the new instances (for their history)."""
        new = {pool: dict(members) for pool, members in membership.items()}
        if new == self.membership and self.targets and not force:
            return
        first = not self.cycles  # what is there before the first cycle is the fleet, not a join
        before = {address for members in self.membership.values() for address in members}
        for members in new.values():
            for address in members:
                if address not in before and not first:  # only a newcomer joins: not the fleet found at start
                    self.joined_at[address] = now
        self.membership = new
        self.decisions.set_members(wiring.addresses(new), joining=not first)
        self._follow_members()
        self.targets = wiring.scrape_targets(new)
        addresses = wiring.addresses(new)
        self.receiver.routing = Routing(addresses, self._model_of)
        self.gpus.mapper = wiring.gpu_mapper(self.config, addresses)
        if sync_store and self.store is not None and self.is_leader():
            asyncio.get_running_loop().create_task(self._sync_store())

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
        self.fleet.set_members(urls)
        for address in [a for a in self.joined_at if a not in self.fleet.tracks]:
            del self.joined_at[address]

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
        self._apply_membership(self.discovery.poll(), time.time())
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
        signals = await self._signals(now)
        self.fleet.last_cycle_at = now
        self.fleet.last_cycle_duration_s = time.perf_counter() - started
        self.decide(now, signals)
        self.cycles += 1

    async def _signals(self, now: float) -> dict[str, PoolSignals]:
        """Every pool's signals for this cycle, built in batches that let the API answer in between
        (at 1,000 instances the window figures cost a few hundred ms in one block); health, scaling
        and the API then read the same figures from the fleet's per-cycle cache."""
        out: dict[str, PoolSignals] = {}
        windows = self.decisions.windows(self.fleet.window)
        done = 0
        for pool, health in self.decisions.health.items():
            members = [i for i, h in health.instances.items() if h.state != LEAVING]
            for start in range(0, len(members), 100):
                batch = pool_signals(self.fleet, pool, members[start:start + 100], now, windows[pool])
                previous = out.get(pool)
                if previous is not None:
                    batch = PoolSignals(pool, batch.window_s, {**previous.instances, **batch.instances},
                                        {**previous.stats, **batch.stats}, previous.scraped_ok | batch.scraped_ok)
                out[pool] = batch
                done += 1
                await asyncio.sleep(0)
        return out

    def decide(self, now: float, signals: dict[str, PoolSignals] | None = None) -> None:
        """Health verdicts, scaling recommendations, the audit log and the NGINX upstream file.

        A bug here is logged and counted; collection and the SLOs go on, and the outputs keep the
        last verdicts (which is what failing open means for the service itself).
        """
        try:
            if signals is None:
                windows = self.decisions.windows(self.fleet.window)
                signals = {pool: pool_signals(self.fleet, pool, list(health.instances), now, windows[pool])
                           for pool, health in self.decisions.health.items()}
            external = None
            if self.gpu_scraper is not None:
                external = {(pool, i): self.gpus.reasons(pool, i, now)
                            for pool, s in signals.items() for i in s.instances}
            outcome = self.decisions.decide(signals, now, data_at=self.fleet.last_cycle_at,
                                            cycle_duration_s=self.fleet.last_cycle_duration_s,
                                            burn_rates=self._ttft_burn_rates(), external=external)
            audit = self._audit(outcome, now)
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

    def _audit(self, outcome: CycleDecisions, now: float) -> list[AuditEntry]:
        """The cycle's audit entries, each logged once in words."""
        audit: list[AuditEntry] = []
        for decision in outcome.health:
            if decision.fail_open != self.fail_open.get(decision.pool):
                if decision.fail_open:
                    log.warning("pool %s: %s", decision.pool, decision.fail_open)
                else:
                    log.info("pool %s: no longer failing open", decision.pool)
                self.fail_open[decision.pool] = decision.fail_open
            for t in decision.transitions:
                log.info("%s", _transition_line(t.pool, t.instance, t.from_state, t.to_state, t.reasons))
                audit.append(AuditEntry(t.at, "health", t.pool, t.instance, t.from_state, t.to_state, t.reasons,
                                        t.signals))
        for pool, rec in outcome.scaling.items():
            before = self._desired.get(pool)
            if before != rec.desired_replicas:
                self._desired[pool] = rec.desired_replicas
                if before is not None:
                    log.info("pool %s: desired replicas %d -> %d (%s)", pool, before, rec.desired_replicas, rec.reason)
                audit.append(AuditEntry(now, "scaling", pool, "", "" if before is None else str(before),
                                        str(rec.desired_replicas), (rec.reason,), rec.signals))
        return audit

    def _model_of(self, pool: str, instance: str | None) -> str | None:
        """The model an instance serves, for vLLM V1 spans that do not name it: the scraped one."""
        track = self.fleet.tracks.get(instance) if instance else None
        models = [m for m in (track.samples if track else {}) if m]
        if len(models) == 1:
            return models[0]
        pool_models = {m for t in self.fleet.tracks.values() if t.pool == pool for m in t.samples if m}
        return next(iter(pool_models)) if len(pool_models) == 1 else None

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

    def evaluate_slos(self, results: list[ScrapeResult]) -> None:
        """Count the cycle's SLO events, evaluate, and hand alerts to the notifier.

        A bug here is logged and counted but must not stop collection: the per-instance figures
        and health outputs do not depend on it.
        """
        try:
            self.slo.observe(results, not_serving=self._not_serving())
            now = time.time()
            statuses = self.slo.evaluate(now)
            self._log_alert_changes(statuses)
            if self.alerts is not None:
                self.alerts.notifier.update(statuses, now)  # followers keep the alert set, for a takeover
                if self.is_leader():
                    self.alerts.soon()
        except Exception:  # noqa: BLE001
            self.slo_errors += 1
            log.exception("SLO evaluation failed")

    def _not_serving(self) -> set[str]:
        """Members joined and still starting, or leaving: not counted by the availability SLO."""
        return {i for health in self.decisions.health.values() for i, h in health.instances.items()
                if h.state in (STARTING, LEAVING, SLEEPING)}

    def _log_alert_changes(self, statuses: list[SloStatus]) -> None:
        """One line when an SLO's page or ticket starts or stops firing, Alertmanager or not."""
        firing: dict[tuple[str, str, str], tuple[str, ...]] = {}
        for status in statuses:
            key = (status.key.slo, status.key.pool, status.key.model_name)
            severities = status.fired_severities()
            firing[key] = severities
            before = self._firing.get(key, ())
            who = f"SLO {key[0]} pool {key[1]}" + (f" model {key[2]}" if key[2] else "")
            ev = status.evaluation
            for severity in severities:
                if severity not in before:
                    rates = ", ".join(f"{w} {ev.burn_rates[w]:.1f}x" for w in ("5m", "1h") if ev.burn_rates.get(w))
                    log.warning("%s: %s started firing (%s; burn %s; budget left %.0f%%)", who, severity,
                                ev.pair or "", rates or "n/a", ev.error_budget_remaining * 100)
            for severity in before:
                if severity not in severities:
                    log.info("%s: %s stopped firing", who, severity)
        self._firing = firing

    # -- schedule -----------------------------------------------------------------------------------------

    async def persist(self, final: bool = False) -> None:
        if self.history is not None:
            await self.history.persist(leader=self.is_leader(), final=final)

    async def cleanup(self) -> None:
        if self.history is not None and self.is_leader():
            await self.history.cleanup()

    # -- reload -------------------------------------------------------------------------------------------

    async def apply_config(self, config: Config) -> list[str]:
        """Take a validated new config while running. What stays keeps its state: instances,
        windows, error budgets, ejections and backoff. Returns notes on what needs a restart."""
        old, self.config = self.config, config
        notes = [f"{key}: changed, but only a restart applies it"
                 for key in ("storage", "api", "ha", "traces") if getattr(old, key) != getattr(config, key)]
        await self.discovery.reconfigure(wiring.pool_specs(config), config.discovery)
        self.decisions.configure(wiring.pool_policies(config), wiring.addresses(self.membership))
        self.slo.configure(config.slos, [p.name for p in config.pools])
        self.slo.evaluate(time.time())  # /api/v1/slos shows the new definitions as soon as the reload answers
        self.fleet.window = config.evaluation.window
        if (old.scrape, old.source) != (config.scrape, config.source) and self.scraper is not None:
            previous, self.scraper = self.scraper, wiring.scrape_source(config)
            await previous.aclose()
        if old.alertmanager != config.alertmanager:
            if self.alerts is not None:
                await self.alerts.close(old.alertmanager.timeout + 1.0)
            notifier = wiring.notifier(config)
            self.alerts = AlertDelivery(notifier) if notifier is not None else None
        if old.nginx != config.nginx:
            self._configure_nginx(config)
        if old.gpu != config.gpu:
            if self.gpu_scraper is not None:
                await self.gpu_scraper.aclose()
            self.gpu_scraper = wiring.gpu_scraper(config)
        self._apply_membership(self.discovery.membership, time.time(), force=True)
        return notes

    def _configure_nginx(self, config: Config) -> None:
        n = config.nginx
        self.nginx = UpstreamWriter(n.upstream_file, n.check, n.reload) if n.upstream_file else None
        self.upstreams = UpstreamPublisher(self.nginx, self._render_upstreams) if self.nginx else None


def _transition_line(pool: str, instance: str, before: str, after: str, reasons: tuple[str, ...]) -> str:
    """`pool p 10.0.0.1:8000: healthy -> ejected: TTFT p99 1.2s > eject threshold 1s (...)`, or the
    membership events in words (`joined`, `left`, `dropped after draining`)."""
    why = "; ".join(dict.fromkeys(reasons))
    if not before and after == STARTING:
        return f"pool {pool} {instance}: joined the fleet (starting)"
    if after == LEAVING:
        return f"pool {pool} {instance}: left the fleet ({before} -> leaving, drained)"
    if after == REMOVED:
        return f"pool {pool} {instance}: dropped after draining"
    return f"pool {pool} {instance}: {before} -> {after}" + (f": {why}" if why else "")
