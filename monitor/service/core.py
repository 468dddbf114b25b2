"""The running service: follow the fleet → scrape → windows and SLOs → decisions → outputs, once per
scrape interval, with the state every output reads.

APScheduler drives the loop inside uvicorn's event loop (monitor/service/app.py), so scraping (async
I/O) and the API share one thread; database calls run on the database's own threads and can never
stall a cycle or an output, and the NGINX file and Alertmanager are written from background tasks
(monitor/service/outputs.py).

The cycle has a boundary (monitor/service/stages.py): each stage, each target's ingest and each
pool's decisions fail alone, counted and named, and the cycle itself is cut short past
`cycle_limit_s`. Outputs read verdicts with their age: past a pool's `stale_after` they fail open
whether or not the loop still runs, and a watchdog apart from the cycle rewrites the NGINX file
when that happens. A reload and the shutdown wait for the running cycle (`cycle_lock`). With `ha`, every replica collects and evaluates, but only the one
holding the database lease acts: writes the NGINX file, pages Alertmanager, writes history.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import monitor.service.wiring as wiring
from monitor.act.haproxy import AgentCheckServer
from monitor.act.nginx import UpstreamWriter, render_file
from monitor.collect.discovery import Discovery
from monitor.collect.discovery.targets import DiscoveredTarget
from monitor.collect.promql import PrometheusSource
from monitor.collect.scraper import Scraper, Target
from monitor.config import Config
from monitor.decide.fleet import FleetDecisions
from monitor.decide.verdicts import LEAVING, REMOVED, SLEEPING, STARTING, UNKNOWN
from monitor.evaluate.fleet import FleetView
from monitor.evaluate.signals import PoolSignals, fleet_signals, pool_signals, ttft_burn_rates
from monitor.gpu.health import GpuTracker
from monitor.gpu.rollup import GpuRollups
from monitor.otlp.receiver import TraceReceiver
from monitor.otlp.records import Routing
from monitor.otlp.store import TraceStore
from monitor.publish.api import served
from monitor.publish.canary_alerts import canary_alerts
from monitor.publish.checks import CheckSnapshot, PoolChecks, find, snapshot_of
from monitor.publish.exclusions import refresh_exclusions
from monitor.publish.frontdoor import CheckLoop
from monitor.samples import ScrapeResult
from monitor.service.canaries import Canaries
from monitor.service.events import EventLog
from monitor.service.history import History
from monitor.service.outputs import AlertDelivery, UpstreamPublisher
from monitor.service.stages import Stages, cause_of
from monitor.store import AuditEntry, Store, StoreBusy
from monitor.store.lease import LeaderLease, Leadership, default_replica_id
from monitor.units import counted

log = logging.getLogger("monitor.service")

PERSIST_EVERY_S = 15.0
CLEANUP_EVERY_S = 3600.0
RECENT_DECISIONS = 1000
STOP_WAIT_S = 60.0  # how long a shutdown waits for the running cycle before closing under it
FULL_GC_EVERY_S = 3600.0  # how often the objects frozen after each cycle are collected in full
CHECK_SWITCH_INTERVAL_S = 0.001  # how long a busy thread keeps the GIL from one that waits (default 5 ms)
AUTOMATIC_FULL_GC_NEVER = 1_000_000  # gc threshold2: middle collections before an automatic full one


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere (musl, macOS).

    The fetch phase holds every page body until the parse (58 KB each: 290 MB at 5,000 targets);
    freed, glibc keeps those pages resident for the next cycle's bodies, so the process's RSS was
    the fetch phase's peak all the time. Trimming after each cycle hands them back: RSS between
    cycles is what the service holds (the next fetch phase faults them in again, a few ms)."""
    try:
        return ctypes.CDLL(None).malloc_trim  # the symbols already loaded: no library search (no ldconfig)
    except (OSError, AttributeError):
        return None


MALLOC_TRIM = _malloc_trim()


def cycle_limit_s(interval_s: float) -> float:
    """How long one cycle may run before it is cut short (its scrapes are bounded by scrape.timeout;
    this bounds everything else, a bug that never returns included)."""
    return max(5.0 * interval_s, 30.0)


def stalled_after_s(interval_s: float) -> float:
    """No cycle completed for this long: the loop itself is dead (/healthz answers 503)."""
    return max(10.0 * interval_s, 60.0)


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
        self.stages = Stages()  # what failed in the cycle, contained (slo_monitor_stage_errors_total)
        self.cycle_lock = asyncio.Lock()  # held by a cycle; a reload and the shutdown wait for it
        self.last_cycle_success_at: float | None = None  # the last cycle that collected data and decided
        self.last_cycle_end_at: float | None = None  # the last cycle that completed, whatever failed in it
        # when the cycle in flight began (None between cycles): its readings are not ingested yet, so no
        # minute after it is rolled up (persist runs on its own schedule)
        self.cycle_started_at: float | None = None
        self.loop_started_at = now
        self._full_gc_at = time.monotonic()
        self._process_settings: tuple[tuple[int, ...], float] | None = None
        self.stopping = False
        self._stale: dict[str, str] = {}  # pool -> why its verdicts fail open now (said once)
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
        self.canaries = Canaries(config.canaries, config.slos)  # rollouts judged each cycle (monitor/service/canaries.py)
        self.scraper: Scraper | PrometheusSource | None = None
        self.targets: list[Target] = []

        notifier = wiring.notifier(config)
        self.alerts = AlertDelivery(notifier) if notifier is not None else None
        self.nginx: UpstreamWriter | None = None
        self.upstreams: UpstreamPublisher | None = None
        self.configure_nginx(config)
        # health checks answer from the last published verdicts, on a thread of their own (CheckLoop,
        # started with the service): they never wait for the cycle (monitor/publish/checks.py)
        self.checks = CheckSnapshot()
        self.check_loop: CheckLoop | None = None
        self.agent: AgentCheckServer | None = None
        if config.haproxy.agent_listen:
            host, _, port = config.haproxy.agent_listen.rpartition(":")
            self.agent = AgentCheckServer(lambda name: find(self.checks, name, time.time()),
                                          host.strip("[]") or "127.0.0.1", int(port))

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
        """pool -> why its decisions are failing open (None when they are not): as the last cycle
        said, or because its verdicts are older than its `stale_after` now."""
        out = dict(self.events.fail_open)
        now = time.time()
        for pool in self.decisions.health:
            why = self.decisions.stale_reason(pool, now)
            if why is not None:
                out[pool] = why
        return out

    def stalled(self, now: float | None = None) -> str | None:
        """Why the loop itself looks dead (no cycle completed for `stalled_after_s`), or None."""
        now = time.time() if now is None else now
        limit = stalled_after_s(self.config.scrape.interval)
        since = self.last_cycle_end_at or self.loop_started_at
        if now - since <= limit:
            return None
        what = "the last cycle completed" if self.last_cycle_end_at else "the loop started and no cycle completed"
        return f"no scrape cycle completed for {now - since:.0f}s ({what} then; limit {limit:.0f}s)"

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

    def publish_checks(self) -> None:
        """Swap in a new snapshot of the verdicts for the check listeners (after each decision, and
        when membership or the pools change): one reference assignment, atomic for their thread."""
        pools = {name: PoolChecks(health.verdicts(), health.decided_at, health.stale_after)
                 for name, health in self.decisions.health.items()}
        self.checks = snapshot_of(pools, [p.name for p in self.config.pools])

    def upstreams_file(self) -> str:
        return self._render_upstreams()[0]

    def _render_upstreams(self) -> tuple[str, str]:
        now = time.time()
        pools = {p.name: [served(v) for v in self.decisions.pool_verdicts(p.name, now)]
                 for p in self.config.pools}  # empty ones too
        down = sum(1 for verdicts in pools.values() for v in verdicts if v.state != STARTING and v.weight <= 0.0
                   and v.state != UNKNOWN)
        summary = f"{counted(len(pools), 'pool')}, {counted(down, 'server')} down"
        return render_file(pools), summary

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.scraper = wiring.scrape_source(self.config)
        membership = await self.discovery.refresh()
        self.apply_membership(membership, time.time(), sync_store=False)
        if self.store is not None and self.history is not None:
            await self.store.run(self.store.sync_fleet, wiring.urls(self.membership), time.time())
            await self.history.reload_slo_events()
            await refresh_exclusions(self)  # maintenance windows posted to the API (ALERTING)
            saved = await self.history.restore_health()
            if saved:
                self.decisions.restore(saved, time.time())
                log.info("health state restored for %s", counted(len(saved), "pool"))
        await self.renew_lease()
        self.slo.evaluate(time.time())
        self.publish_checks()
        self._process_settings = (gc.get_threshold(), sys.getswitchinterval())  # put back by stop()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, AUTOMATIC_FULL_GC_NEVER)  # full collections: _settle_garbage's, hourly
        sys.setswitchinterval(CHECK_SWITCH_INTERVAL_S)  # a check waits this long per GIL hand-over, not 5 ms
        self.check_loop = CheckLoop().start()
        if self.agent is not None:
            await self.check_loop.submit(self.agent.start())

    async def stop(self) -> None:
        """Wait for the running cycle (bounded), then close: nothing is closed under a cycle."""
        self.stopping = True
        try:
            await asyncio.wait_for(self.cycle_lock.acquire(), STOP_WAIT_S)  # held until the end: no cycle after
        except TimeoutError:
            log.warning("stop: the running cycle did not finish in %gs; closing under it", STOP_WAIT_S)
        if self.agent is not None and self.check_loop is not None:
            await self.check_loop.submit(self.agent.stop())
        if self.check_loop is not None:
            self.check_loop.stop()
        if self._process_settings is not None:  # a process that goes on (a test) gets its own back
            thresholds, switch = self._process_settings
            gc.set_threshold(*thresholds)
            sys.setswitchinterval(switch)
            gc.unfreeze()
            self._process_settings = None
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
        if self.leadership is not None and self.store is not None:
            try:
                await self.store.run(self.leadership.release, timeout=10.0)
            except (StoreBusy, TimeoutError) as exc:
                log.warning("leader lease not released (it expires by itself): %s", cause_of(exc))

    # -- leadership (ha.enabled: several replicas on one database) ------------------------------------

    def is_leader(self) -> bool:
        """Whether this replica acts: writes NGINX, pages Alertmanager, writes history. Always True
        without `ha`; with it, only while the lease this replica last renewed is surely still its."""
        return self.leadership is None or self.leadership.is_leader()

    async def renew_lease(self) -> None:
        """One election round (every renew interval, and once at start before the first cycle)."""
        if self.leadership is None or self.store is None:
            return
        try:
            await self.store.run(self.leadership.renew)
        except StoreBusy as exc:  # the lease is judged by its own clock (take_stock): not renewed is not held
            log.warning("leader lease not renewed this round: %s", exc)
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
        self.publish_checks()
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
            await self.store.run(self.store.sync_fleet, wiring.urls(self.membership), time.time())
        except Exception as exc:  # noqa: BLE001 - history of new members waits for the next change
            log.warning("database: new members not recorded yet: %s", str(exc).splitlines()[0])

    # -- one cycle --------------------------------------------------------------------------------------

    async def scheduled_cycle(self) -> None:
        """`scrape_cycle` as the scheduler runs it. APScheduler's shutdown cancels the job it is running;
        the cycle itself is shielded from that and runs to its end (`stop` waits for it on `cycle_lock`),
        so a stop never cuts a cycle in the middle of its outputs, nor logs the cancellation as a crash."""
        cycle = asyncio.ensure_future(self.scrape_cycle())
        self._tasks.add(cycle)
        cycle.add_done_callback(self._tasks.discard)
        try:
            await asyncio.shield(cycle)
        except asyncio.CancelledError:
            if not self.stopping and not cycle.done():
                log.info("the scheduler stopped while a cycle ran: the cycle finishes before the service stops")

    async def scrape_cycle(self) -> None:
        """One supervised cycle: never raises, never runs beside a reload or after `stop`, and is cut
        short past `cycle_limit_s`; the outputs' watchdog runs after it whatever happened."""
        if self.stopping:
            return
        async with self.cycle_lock:
            if self.stopping:
                return
            limit = cycle_limit_s(self.config.scrape.interval)
            self.stages.begin()
            self.cycle_started_at = time.time()
            try:
                await asyncio.wait_for(self._cycle(), limit)
            except TimeoutError:
                self.stages.failed("cycle", f"did not finish within {limit:g}s and was cut short")
            except Exception as exc:  # noqa: BLE001 - every stage is contained; this is the last net
                self.stages.failed("cycle", cause_of(exc), exc)
            finally:
                self.cycle_started_at = None
            self.last_cycle_end_at = time.time()
            self.stages.end()
            self._settle_garbage()
        self.watch_outputs()

    def _settle_garbage(self) -> None:
        """After each cycle: collect the young generations, then freeze what survived.

        At 1,000 instances the process holds millions of objects (each instance's recent samples),
        and every full collection walked all of them: a 250-350 ms pause, holding the GIL, a few times
        a minute; every thread waited for it, the health checks' included (their p99 was the pause).
        Frozen objects are still freed by reference counting when dropped; only cyclic garbage among
        them waits for the full collection that runs once every FULL_GC_EVERY_S (unfreeze, collect); the
        automatic full collections, which walked a cycle's young survivors mid-cycle (40-100 ms), are off
        (`start` sets the third threshold out of reach)."""
        now = time.monotonic()
        if now - self._full_gc_at >= FULL_GC_EVERY_S:
            self._full_gc_at = now
            gc.unfreeze()
            gc.collect()
        else:
            gc.collect(1)
        gc.freeze()
        if MALLOC_TRIM is not None:
            MALLOC_TRIM(0)


    async def _cycle(self) -> None:
        assert self.scraper is not None
        st = self.stages
        started = time.perf_counter()
        wait = min(0.25, self.config.scrape.interval / 10.0)  # a file change is seen in the cycle that reads it
        membership = await st.arun("discovery", self.discovery.poll_briefly(wait))
        if membership is not None:
            st.run("membership", self.apply_membership, membership, time.time())
        scrape = st.arun("scrape", self.scraper.scrape_all(self.targets))
        if self.gpu_scraper is not None:
            results, gpu_scrapes = await asyncio.gather(scrape, st.arun("gpu", self.gpu_scraper.scrape_all(), []))
            for gpu_scrape in gpu_scrapes or ():
                st.run("gpu", self.gpus.observe, gpu_scrape, time.time())
        else:
            results = await scrape
        scraped = results is not None
        ingested = []
        for result in results or ():  # one target's result that no stage expected is that target's alone
            if st.run(f"ingest/{result.instance}", self._ingest_one, result, default=False):
                ingested.append(result)
        self.evaluate_slos(ingested)
        now = time.time()
        if scraped:
            self.fleet.last_cycle_at = now  # the time of the data the verdicts are made on
        signals, skip = await self._signals(now)
        self.fleet.last_cycle_duration_s = time.perf_counter() - started
        decided = self.decide(now, signals, data_at=self.fleet.last_cycle_at, skip=skip)
        st.run("canaries", self.judge_canaries, now)
        self.cycles += 1
        if scraped and decided:
            self.last_cycle_success_at = time.time()

    def _ingest_one(self, result: ScrapeResult) -> bool:
        self.fleet.ingest((result,))
        return True

    async def _signals(self, now: float) -> tuple[dict[str, PoolSignals], set[str]]:
        """Every pool's signals; when building them fails, pool by pool, so one pool's failure is its
        own (its decisions are skipped this cycle: its verdicts age, and fail open past stale_after)."""
        st = self.stages
        members = {pool: [i for i, h in health.instances.items() if h.state != LEAVING]
                   for pool, health in self.decisions.health.items()}
        windows = self.decisions.windows(self.fleet.window)
        since = self.decisions.judged_since()  # each instance judged on what it did since its state changed
        signals = await st.arun("signals", fleet_signals(self.fleet, members, windows, now, since=since))
        if signals is not None:
            return signals, set()
        signals, skip = {}, set()
        for pool, instances in members.items():
            got = await st.arun(f"signals/{pool}", fleet_signals(self.fleet, {pool: instances}, windows, now, since=since))
            if got is None:
                skip.add(pool)
            else:
                signals.update(got)
        return signals, skip

    def decide(self, now: float, signals: dict[str, PoolSignals] | None = None, *, data_at: float | None = None,
               skip: set[str] | frozenset[str] = frozenset()) -> bool:
        """Health verdicts, scaling recommendations, the audit log and the NGINX upstream file, each a
        stage of its own. Returns whether decisions were made (for some pools at least).

        A bug deciding one pool is that pool's (FleetDecisions contains it): the others are decided,
        its verdicts age and fail open past stale_after. `data_at`: when the data was collected
        (default: the last cycle's).
        """
        st = self.stages
        if signals is None:  # outside a cycle (tests, a takeover): every member's signals now
            windows = self.decisions.windows(self.fleet.window)
            since = self.decisions.judged_since()
            signals = {p: pool_signals(self.fleet, p, list(h.instances), now, windows[p], since)
                       for p, h in self.decisions.health.items()}
        external = None
        if self.gpu_scraper is not None:
            external = st.run("gpu", lambda: {(pool, i): self.gpus.reasons(pool, i, now)
                                              for pool, s in signals.items() for i in s.instances})
        burn_rates = st.run("decide", ttft_burn_rates, self.slo.statuses, default={})
        outcome = st.run("decide", self.decisions.decide, signals, now,
                         data_at=self.fleet.last_cycle_at if data_at is None else data_at,
                         cycle_duration_s=self.fleet.last_cycle_duration_s, burn_rates=burn_rates,
                         external=external, skip=skip)
        if outcome is None:
            self.decide_errors += 1
            return False
        for pool, cause in outcome.errors.items():
            st.failed(f"decide/{pool}", cause)
        if outcome.errors:
            self.decide_errors += 1
        audit = st.run("events", self.events.audit, outcome, now, default=[])
        self.recent_decisions.extend(audit)
        if any(e.to_state == REMOVED for e in audit):
            st.run("membership", self._follow_members)
        leader = self.is_leader()
        if self.history is not None and leader:
            st.run("persist", self._queue_decisions, audit, now)
        if self.upstreams is not None and leader:
            st.run("outputs", self.upstreams.soon)
        st.run("outputs", self.publish_checks)
        return bool(outcome.health)

    def judge_canaries(self, now: float) -> None:
        """Each canary's evidence and verdict; a changed verdict goes to the audit log."""
        audit = self.canaries.update(self.fleet, self.membership, now)
        self.recent_decisions.extend(audit)
        if audit and self.history is not None and self.is_leader():
            self.history.store.queue_decisions(audit)

    def _queue_decisions(self, audit: list[AuditEntry], now: float) -> None:
        assert self.history is not None
        self.history.store.queue_decisions(audit)
        if any(e.kind == "health" for e in audit):
            self.history.save_health(self.decisions.snapshot(), now)

    def watch_outputs(self) -> None:
        """Apart from the cycle (after each, and on its own schedule, so it runs while a cycle hangs):
        a pool whose verdicts went stale (or fresh again) is said once, and the NGINX file is
        rewritten, failing open; Alertmanager deliveries go on (resends keep firing alerts alive).
        Never raises."""
        try:
            now = time.time()
            stale = {p: why for p in self.decisions.health
                     if (why := self.decisions.stale_reason(p, now)) is not None}
            changed = stale.keys() != self._stale.keys()
            for pool in stale.keys() - self._stale.keys():
                log.warning("pool %s: %s", pool, stale[pool])
            for pool in self._stale.keys() - stale.keys():
                log.info("pool %s: verdicts fresh again; outputs follow them", pool)
            self._stale = stale
            if self.is_leader():
                if self.upstreams is not None and (changed or stale):
                    self.upstreams.soon()
                if self.alerts is not None and self.last_cycle_success_at is not None and \
                        now - self.last_cycle_success_at > self.config.scrape.interval * 2:
                    self.alerts.soon()  # the cycle is not doing it: keep resending what fires
        except Exception as exc:  # noqa: BLE001
            self.stages.failed("outputs", cause_of(exc), exc)

    def evaluate_slos(self, results: list[ScrapeResult]) -> None:
        """Count the cycle's SLO events, evaluate, and hand alerts to the notifier.

        A bug here is logged and counted (`slo` stage) but must not stop collection: the
        per-instance figures and health outputs do not depend on it.
        """
        try:
            self.slo.observe(results, not_serving=self._not_serving())
            now = time.time()
            statuses = self.slo.evaluate(now)
            self.events.slo_changes(statuses)
        except Exception as exc:  # noqa: BLE001
            self.slo_errors += 1
            self.stages.failed("slo", cause_of(exc), exc)
            return
        if self.alerts is not None:
            try:
                # followers keep the alert set, for a takeover; cost budgets alert too
                self.alerts.notifier.update(statuses, now, self.slo.cost_budgets,
                                            canary_alerts(self.canaries.states.values()))  # canaries[].notify
                if self.is_leader():
                    self.alerts.soon()
            except Exception as exc:  # noqa: BLE001
                self.stages.failed("alerts", cause_of(exc), exc)

    def _not_serving(self) -> set[str]:
        """Members joined and still starting, or leaving: not counted by the availability SLO."""
        return {i for health in self.decisions.health.values() for i, h in health.instances.items()
                if h.state in (STARTING, LEAVING, SLEEPING)}

    # -- schedule -----------------------------------------------------------------------------------------

    async def persist(self, final: bool = False) -> None:
        if self.history is not None:
            await self.history.persist(leader=self.is_leader(), final=final, in_flight_since=self.cycle_started_at)
            await refresh_exclusions(self)  # another replica may have taken a POST /api/v1/exclusions

    async def cleanup(self) -> None:
        if self.history is not None and self.is_leader():
            await self.history.cleanup()

    def configure_nginx(self, config: Config) -> None:
        n = config.nginx
        self.nginx = UpstreamWriter(n.upstream_file, n.check, n.reload) if n.upstream_file else None
        self.upstreams = UpstreamPublisher(self.nginx, self._render_upstreams) if self.nginx else None

