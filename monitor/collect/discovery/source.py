"""What every discovery source shares: its status, and a refresh that never raises.

A source never raises out of `refresh`: a discovery source that fails must not stop collection,
and must not empty a pool. Each error is logged once per change of cause: when it starts, when it
becomes a different error, and once more when the item recovers, so a file broken for a week
logs two lines, not 120,000. Targets dropped from an answer (outside the target grammar, listed
twice) are counted by reason each time an answer is read, and logged the same way: once when the
set of drops of a file, name or URL changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from monitor.collect.discovery.targets import DiscoveredTarget, Parsed, Rejected
from monitor.settings.discovery import DiscoveryConfig, DiscoverySettings

log = logging.getLogger("monitor.discovery")


@dataclass(slots=True)
class SourceStatus:
    """What /metrics shows per source (pool, kind, index): the service publishes these as is."""

    pool: str
    kind: str  # file, http, dns, prometheus
    index: int  # position in the pool's discovery list
    targets: int = 0  # in the list in use (the last good one when failing)
    refreshes: int = 0  # for files: checks (a glob and a stat per file), most of which read nothing
    failures: int = 0  # refreshes in which a read failed, in whole or for one of its files/names
    last_success: float | None = None  # unix time of the last refresh without any error
    last_error: str | None = None  # None while the source is healthy
    conflicts: int = 0  # targets left out because another pool has the same instance
    # targets dropped from answers, by reason (monitor.units.TARGET_REASONS), counted at every read
    rejected: dict[str, int] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()  # why each target of the answers in use was dropped (the first 20)

    @property
    def name(self) -> str:
        return f"{self.pool}/{self.kind}[{self.index}]"

    @property
    def healthy(self) -> bool:
        return self.last_error is None


class Source:
    """One `pools[].discovery` item. `targets` is the list in use: the last good one."""

    kind = ""

    def __init__(self, pool: str, index: int, config: DiscoveryConfig, settings: DiscoverySettings) -> None:
        self.pool = pool
        self.index = index
        self.config = config
        self.max_targets = settings.max_targets
        self.status = SourceStatus(pool, self.kind, index)
        self.targets: tuple[DiscoveredTarget, ...] = ()
        self.changed = False  # set when `targets` changed; Discovery clears it
        self._failing: dict[str, str] = {}  # item (file, name, url) -> its error, while failing
        self._dropped: dict[str, tuple[str, ...]] = {}  # item -> why targets of its last answer were dropped
        self._next_at = 0.0  # when a network source is next due
        self._failed_now = False  # an attempt in this refresh failed

    @property
    def name(self) -> str:
        return self.status.name

    @property
    def refresh_s(self) -> float:
        return float(self.config.refresh)

    def due(self, now: float) -> bool:
        return now >= self._next_at

    async def refresh(self, now: float) -> None:
        """Read the source once; never raises (but lets cancellation through)."""
        self._next_at = now + self.refresh_s
        self.status.refreshes += 1
        self._failed_now = False
        try:
            await self._refresh(now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not stop collection either
            log.exception("discovery %s: refresh failed", self.name)
            self._fail("*", f"{type(exc).__name__}: {exc}")
        else:
            self._ok("*")
        if self._failed_now:
            self.status.failures += 1
        if self._failing:
            self.status.last_error = "; ".join(self._failing.values())[:2000]
        else:
            self.status.last_error = None
            self.status.last_success = time.time()

    async def _refresh(self, now: float) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass

    def _set(self, targets: Sequence[DiscoveredTarget]) -> None:
        new = tuple(targets)
        if new != self.targets:
            self.targets = new
            self.changed = True
        self.status.targets = len(new)

    def _fail(self, item: str, message: str) -> None:
        self._failed_now = True
        if self._failing.get(item) != message:  # the message names the file, name or URL itself
            log.warning("discovery %s: %s; keeping the last good list (%d targets)", self.name, message,
                        len(self.targets))
        self._failing[item] = message

    def _take(self, item: str, parsed: Parsed) -> bool:
        """Count and log what one read of `item` dropped; False (and `item` failing, its last good
        list kept) when every target it listed was dropped: a generator that mangled every line is
        far likelier than a fleet of nothing, and an empty pool routes nowhere."""
        self._reject(item, parsed.rejected)
        if parsed.targets or all(r.reason == "duplicate" for r in parsed.rejected):
            return True
        self._fail(item, f"{parsed.rejected[0].message} (every target of this answer was dropped)")
        return False

    def _reject(self, item: str, rejected: Sequence[Rejected]) -> None:
        """Count the targets one read of `item` dropped, and log them when they differ from last time."""
        for r in rejected:
            self.status.rejected[r.reason] = self.status.rejected.get(r.reason, 0) + 1
        messages = tuple(r.message for r in rejected)
        if messages != self._dropped.get(item, ()):
            if messages:
                log.warning("discovery %s: %d target%s dropped, the rest kept: %s%s", self.name, len(messages),
                            "s" if len(messages) != 1 else "", "; ".join(messages[:3]),
                            f"; and {len(messages) - 3} more" if len(messages) > 3 else "")
            else:
                log.info("discovery %s%s: no target dropped any more", self.name, f" {item}" if item else "")
        if messages:
            self._dropped[item] = messages
        else:
            self._dropped.pop(item, None)
        self.status.dropped = tuple(m for ms in self._dropped.values() for m in ms)[:20]

    def _forget(self, item: str) -> None:
        """An item (a file gone from the globs) whose drops no longer count."""
        if self._dropped.pop(item, None) is not None:
            self.status.dropped = tuple(m for ms in self._dropped.values() for m in ms)[:20]

    def _ok(self, item: str) -> None:
        if self._failing.pop(item, None) is not None:
            log.info("discovery %s%s: reads again", self.name, f" {item}" if item else "")


def dedupe(groups: Sequence[Sequence[DiscoveredTarget]]) -> list[DiscoveredTarget]:
    """One target per address, the first one seen winning (files in sorted order, names in config order)."""
    out: dict[str, DiscoveredTarget] = {}
    for group in groups:
        for t in group:
            out.setdefault(t.address, t)
    return list(out.values())
