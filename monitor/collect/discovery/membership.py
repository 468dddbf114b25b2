"""Every pool's current members: its static `targets` and what each of its discovery sources last
read successfully, one instance per address.

Which copy of an instance found twice is kept: the static one, then the first source in the
pool's `discovery` list (the operator's order is the only order that means something). An
instance found in two pools stays in the first pool that lists it statically, else the first pool
in the config that discovers it; the other source counts a conflict and logs it once, because one
server judged in two pools would be ejected by one and fed by the other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from monitor.collect.discovery.sources import Source, SourceStatus, make_source
from monitor.collect.discovery.targets import DiscoveredTarget
from monitor.settings.discovery import DiscoveryConfig, DiscoverySettings
from monitor.units import instance_address

log = logging.getLogger("monitor.discovery")

Membership = Mapping[str, Mapping[str, DiscoveredTarget]]  # pool -> address -> target


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """What discovery reads of a pool's settings."""

    name: str
    targets: Sequence[str] = ()
    discovery: Sequence[DiscoveryConfig] = ()


def static_target(url: str) -> DiscoveredTarget:
    return DiscoveredTarget(url, instance_address(url), "static")


def merge(pools: Sequence[PoolSpec], found: Mapping[tuple[str, int], Sequence[DiscoveredTarget]]
          ) -> tuple[dict[str, dict[str, DiscoveredTarget]], dict[tuple[str, int], list[str]]]:
    """(membership, addresses each source lost to another pool) from the static targets and each
    source's list, keyed (pool, index in its discovery list). Pure: the order rules live here."""
    owner: dict[str, str] = {}
    members: dict[str, dict[str, DiscoveredTarget]] = {}
    for pool in pools:
        members[pool.name] = {}
        for url in pool.targets:
            t = static_target(url)
            members[pool.name].setdefault(t.address, t)
            owner.setdefault(t.address, pool.name)
    conflicts: dict[tuple[str, int], list[str]] = {}
    for pool in pools:
        mine = members[pool.name]
        for index in range(len(pool.discovery)):
            for t in found.get((pool.name, index), ()):
                held_by = owner.setdefault(t.address, pool.name)
                if held_by != pool.name:
                    conflicts.setdefault((pool.name, index), []).append(t.address)
                else:
                    mine.setdefault(t.address, t)
    return members, conflicts


class Discovery:
    """The fleet as discovery sees it now.

    Two ways to drive it: `await refresh()` reads every due source and waits for them (at start,
    and in tests); `poll()` is the per-scrape-cycle call: it starts, in the background, each source
    that is due and not already running, and returns the membership as of the sources that have
    finished, so a hung endpoint never delays a scrape cycle. `membership` is rebuilt only when a
    source's list changed; `version` counts those changes.
    """

    def __init__(self, pools: Sequence[PoolSpec], settings: DiscoverySettings | None = None) -> None:
        self._settings = settings or DiscoverySettings()
        self._pools = list(pools)
        self._sources: list[Source] = [make_source(p.name, i, c, self._settings)
                                       for p in self._pools for i, c in enumerate(p.discovery)]
        self._tasks: dict[Source, asyncio.Task[None]] = {}
        self._conflicted: set[tuple[str, int]] = set()
        self.version = 0
        self._membership: dict[str, dict[str, DiscoveredTarget]] = {}
        self._remerge()

    @property
    def sources(self) -> Sequence[Source]:
        return tuple(self._sources)

    @property
    def membership(self) -> Membership:
        if any(s.changed for s in self._sources):
            self._remerge()
        return self._membership

    def statuses(self) -> list[SourceStatus]:
        return [s.status for s in self._sources]

    def poll(self, now: float | None = None) -> Membership:
        now = time.time() if now is None else now
        for source in self._sources:
            if source not in self._tasks and source.due(now):
                task = asyncio.create_task(source.refresh(now), name=f"discovery {source.name}")
                self._tasks[source] = task

                def forget(_task: asyncio.Task[None], s: Source = source) -> None:
                    self._tasks.pop(s, None)

                task.add_done_callback(forget)
        return self.membership

    async def poll_briefly(self, timeout: float, now: float | None = None) -> Membership:
        """`poll()`, then wait up to `timeout` for the reads it started: a changed file is applied in
        the cycle that read it, while a hung endpoint costs the cycle no more than `timeout`."""
        self.poll(now)
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=timeout)
        return self.membership

    async def refresh(self, now: float | None = None) -> Membership:
        """Every due source read (each within its own time bound), and the membership after."""
        self.poll(now)
        if self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
        return self.membership

    async def run(self, interval: float) -> None:
        """`poll()` every `interval` (the scrape interval: files changes are seen within one) until cancelled."""
        try:
            while True:
                self.poll()
                await asyncio.sleep(interval)
        finally:
            await self._cancel(list(self._tasks.values()))

    async def reconfigure(self, pools: Sequence[PoolSpec], settings: DiscoverySettings | None = None) -> None:
        """A reloaded config: sources whose pool and settings are unchanged keep their last good
        list and status; the rest are closed or created."""
        settings = settings or DiscoverySettings()
        # a list, not a dict: the settings models hold lists and dicts, so they compare but do not hash
        keep = list(self._sources) if settings == self._settings else []
        sources: list[Source] = []
        for pool in pools:
            for index, config in enumerate(pool.discovery):
                source = next((s for s in keep if s.pool == pool.name and s.config == config), None)
                if source is not None:
                    keep.remove(source)
                else:
                    source = make_source(pool.name, index, config, settings)
                source.index = source.status.index = index
                sources.append(source)
        dropped = [s for s in self._sources if s not in sources]
        await self._cancel([self._tasks[s] for s in dropped if s in self._tasks])
        for source in dropped:
            await source.aclose()
        self._settings, self._pools, self._sources = settings, list(pools), sources
        self._conflicted &= {(s.pool, s.index) for s in sources}
        self._remerge()

    async def aclose(self) -> None:
        await self._cancel(list(self._tasks.values()))
        for source in self._sources:
            await source.aclose()

    async def _cancel(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _remerge(self) -> None:
        for source in self._sources:
            source.changed = False
        members, conflicts = merge(self._pools, {(s.pool, s.index): s.targets for s in self._sources})
        for source in self._sources:
            key = (source.pool, source.index)
            lost = conflicts.get(key, [])
            source.status.conflicts = len(lost)
            if lost and key not in self._conflicted:
                log.warning("discovery %s: %d targets are already members of another pool and are left out "
                            "(first: %s)", source.name, len(lost), lost[0])
                self._conflicted.add(key)
            elif not lost and key in self._conflicted:
                log.info("discovery %s: no more targets claimed by another pool", source.name)
                self._conflicted.discard(key)
        if members != self._membership:
            self._membership = members
            self.version += 1


async def check_files(pools: Sequence[PoolSpec], settings: DiscoverySettings | None = None,
                      found: dict[str, dict[str, dict[str, str]]] | None = None) -> list[str]:
    """What `check` says of the pools' file_sd sources: each read once now, every target it would
    drop and every file it would refuse, in words. Only files: `check` must not wait on a network
    endpoint or a resolver, and a file is the config's own neighbour."""
    settings = settings or DiscoverySettings()
    lines: list[str] = []
    for i, pool in enumerate(pools):
        for index, config in enumerate(pool.discovery):
            if config.type != "file":
                continue
            source = make_source(pool.name, index, config, settings)
            await source.refresh(time.time())
            where = f"pools[{i}].discovery[{index}]"  # the key path, as check names every problem
            lines += [f"{where}: target dropped: {message}" for message in source.status.dropped]
            if found is not None:  # the labels read, per pool and address: check judges canary groups by them
                found.setdefault(pool.name, {}).update({t.address: dict(t.labels) for t in source.targets})
            if source.status.last_error:
                lines.append(f"{where}: {source.status.last_error}")
            await source.aclose()
    return lines
