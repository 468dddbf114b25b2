"""GPU readings → reasons in an instance's health, and the little state that needs.

Pure parts: `new_xid_events` (what changed between two readings of one GPU) and `gpu_reasons` (what
one reading plus its recent XID events say). `GpuTracker` is the stateful part the service keeps:
the last reading per GPU, XID events within the hold, GPUs that vanished from a page.

XID semantics differ by page, and getting them wrong either misses faults or pages forever:
- `DCGM_EXP_XID_ERRORS_COUNT` (our exporter; dcgm-exporter when enabled) counts XIDs per code over a
  sliding window: a count that rises is a new event.
- `DCGM_FI_DEV_XID_ERRORS` alone (dcgm-exporter's default) is the *last* XID ever seen, and stays at
  that value: only a change of value is an event. The first value read is a baseline, not an event,
  or every restart of the service would re-raise an XID from last month. A repeat of the same XID
  cannot be seen this way; that is what the count metric is for.
An event stays a reason for `xid_hold_s`, so a load balancer polling health sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from monitor.gpu.mapping import GpuMapper, GpuPlacement
from monitor.gpu.parse import GpuPage
from monitor.gpu.readings import GpuReading, xid_message
from monitor.gpu.rollup import GpuRollups

MEMORY_THRESHOLD = 0.9
XID_HOLD_S = 300.0
STALE_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class XidEvent:
    at: float  # when the service saw it (unix seconds)
    xid: int


def new_xid_events(previous: GpuReading | None, current: GpuReading, at: float) -> list[XidEvent]:
    """XID events that happened between `previous` and `current` readings of one GPU."""
    if current.xid_recent is not None:
        before = previous.xid_recent if previous is not None and previous.xid_recent is not None else {}
        events: list[XidEvent] = []
        for xid, count in sorted(current.xid_recent.items()):
            events.extend(XidEvent(at, xid) for _ in range(max(0, count - before.get(xid, 0))))
        return events
    if previous is None or current.xid_last is None or current.xid_last == 0:
        return []
    if current.xid_last != previous.xid_last:
        return [XidEvent(at, current.xid_last)]
    return []


def gpu_reasons(
    reading: GpuReading,
    xid_events: Iterable[XidEvent] = (),
    *,
    now: float,
    memory_threshold: float = MEMORY_THRESHOLD,
    xid_hold_s: float = XID_HOLD_S,
    fresh: bool = True,
) -> tuple[str, ...]:
    """Reasons one GPU gives its instance: lost, memory above the threshold, XID events in the hold.

    `fresh` False (the reading is older than the exporter's staleness limit) drops the memory reason:
    an old figure is not a current fact. Loss and XID events keep their own clocks.
    """
    reasons: list[str] = []
    if reading.lost:
        reasons.append(f"{reading.label} lost")
    ratio = reading.memory_used_ratio
    if fresh and not reading.lost and ratio is not None and ratio > memory_threshold:
        reasons.append(f"{reading.label} memory {ratio:.0%} used (above {memory_threshold:.0%})")
    for event in xid_events:
        age = now - event.at
        if age < xid_hold_s:
            reasons.append(f"{reading.label} XID {event.xid} ({xid_message(event.xid)}) {max(age, 0.0):.0f}s ago")
    return tuple(reasons)


@dataclass(frozen=True, slots=True)
class ExporterScrape:
    """One scrape of one GPU exporter; `page` None with `error` set when it failed."""

    url: str
    started_at: float
    duration_s: float
    page: GpuPage | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.page is not None


@dataclass(slots=True)
class GpuState:
    """What the service knows about one GPU (what /api/v1/gpus shows)."""

    reading: GpuReading
    placement: GpuPlacement
    exporter: str
    seen_at: float  # last time a page carried it
    xid_events: list[XidEvent] = field(default_factory=list)
    vanished: bool = False  # seen before, absent from the exporter's last good page


@dataclass(slots=True)
class ExporterStatus:
    url: str
    ok: bool = False
    error: str | None = "not scraped yet"
    last_scrape_at: float | None = None
    last_success_at: float | None = None
    duration_s: float | None = None
    nvml_up: bool | None = None
    gpus: int = 0


class GpuTracker:
    """Per-GPU state across scrapes, and the reasons for each instance. Feed it every exporter
    scrape (`observe`), then ask `reasons(pool, instance, now)` when evaluating health.

    `rollups` (the service passes one when it has a database) receives every reading, to be stored
    per GPU per minute.
    """

    def __init__(self, mapper: GpuMapper, *, memory_threshold: float = MEMORY_THRESHOLD,
                 xid_hold_s: float = XID_HOLD_S, stale_after_s: float = STALE_AFTER_S,
                 exporters: Sequence[str] = (), rollups: GpuRollups | None = None) -> None:
        self.mapper = mapper
        self.rollups = rollups
        self.memory_threshold = memory_threshold
        self.xid_hold_s = xid_hold_s
        self.stale_after_s = stale_after_s
        self.gpus: dict[tuple[str, str, str], GpuState] = {}
        self.exporters: dict[str, ExporterStatus] = {u: ExporterStatus(u) for u in exporters}

    def keep_exporters(self, urls: Sequence[str]) -> None:
        """A reloaded `gpu.exporters`: new ones are tracked, removed ones forgotten with their GPUs."""
        for url in [u for u in self.exporters if u not in urls]:
            del self.exporters[url]
        for url in urls:
            self.exporters.setdefault(url, ExporterStatus(url))
        self.gpus = {key: state for key, state in self.gpus.items() if state.exporter in urls}

    def observe(self, scrape: ExporterScrape, now: float | None = None) -> None:
        at = scrape.started_at + scrape.duration_s if now is None else now
        status = self.exporters.setdefault(scrape.url, ExporterStatus(scrape.url))
        status.last_scrape_at, status.duration_s = at, scrape.duration_s
        status.ok, status.error = scrape.ok, scrape.error
        if not scrape.ok:
            return  # an exporter down says nothing about its GPUs: keep them, let them go stale
        assert scrape.page is not None
        status.last_success_at, status.nvml_up = at, scrape.page.nvml_up
        status.gpus = len(scrape.page.readings)
        present = set()
        for reading in scrape.page.readings:
            key = reading.key
            present.add(key)
            state = self.gpus.get(key)
            previous = state.reading if state is not None else None
            events = new_xid_events(previous, reading, at)
            if state is None:
                state = self.gpus[key] = GpuState(reading, self.mapper.place(reading), scrape.url, at)
            else:
                state.reading, state.seen_at, state.vanished = reading, at, False
                state.placement, state.exporter = self.mapper.place(reading), scrape.url
            state.xid_events = [e for e in state.xid_events if at - e.at < self.xid_hold_s] + events
            if self.rollups is not None:
                self.rollups.add(reading, at, pool=state.placement.pool, instance=state.placement.instance,
                                 xid_events=len(events))
        for key, state in self.gpus.items():
            if state.exporter == scrape.url and key not in present and not state.vanished:
                # dcgm-exporter drops a GPU it can no longer read; our exporter says `lost` itself
                state.vanished = True
                state.reading = replace(state.reading, lost=True)
                if self.rollups is not None:
                    self.rollups.add(state.reading, at, pool=state.placement.pool,
                                     instance=state.placement.instance)

    def reasons(self, pool: str, instance: str, now: float) -> tuple[str, ...]:
        """Reasons from every GPU mapped to this instance, in GPU order."""
        out: list[str] = []
        for state in self.states():
            if state.placement.pool == pool and state.placement.instance == instance:
                out.extend(self.reasons_of(state, now))
        return tuple(out)

    def pool_reasons(self, pool: str, now: float) -> tuple[str, ...]:
        """Reasons from GPUs attributed to the pool but to no instance (shown at pool level)."""
        out: list[str] = []
        for state in self.states():
            if state.placement.pool == pool and state.placement.instance is None:
                out.extend(self.reasons_of(state, now))
        return tuple(out)

    def reasons_of(self, state: GpuState, now: float) -> tuple[str, ...]:
        """The reasons one GPU gives now (its readings may be stale: then no memory reason)."""
        return gpu_reasons(state.reading, state.xid_events, now=now, memory_threshold=self.memory_threshold,
                           xid_hold_s=self.xid_hold_s, fresh=now - state.seen_at <= self.stale_after_s)

    def states(self) -> list[GpuState]:
        return sorted(self.gpus.values(), key=lambda s: (s.reading.host, s.reading.index if s.reading.index
                                                          is not None else 1 << 30, s.reading.uuid))

    def remap(self, mapper: GpuMapper) -> None:
        """A new config: place every known GPU again."""
        self.mapper = mapper
        for state in self.gpus.values():
            state.placement = mapper.place(state.reading)
