"""The cycle's boundary: every stage (discovery, scrape, gpu, ingest, slo, signals, decide, outputs,
persist...) runs inside it, so that a failure in one — a bug, a target no parser expected, a pool
whose rules raise — is contained there: counted (`slo_monitor_stage_errors_total{stage}`), logged
once per change of cause rather than every cycle, shown on /healthz while it lasts, and never stops
the other targets, pools or stages.

A "where" names what failed: the stage alone (`scrape`) or the stage and what it was handling
(`decide/chat`, `ingest/10.0.0.1:8000`); the metric's `stage` label is the part before the slash.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

log = logging.getLogger("monitor.service")

T = TypeVar("T")
MAX_FAILING = 200  # `where`s shown at once (a bug hitting every target of 1,000 says so in 200 lines)


def cause_of(exc: BaseException) -> str:
    """`ZeroDivisionError: float division by zero`: one line, bounded."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


class Stages:
    """What failed in the cycle, and since when; counts per stage."""

    def __init__(self) -> None:
        self.errors: dict[str, int] = {}  # stage -> failures counted (slo_monitor_stage_errors_total)
        self.failing: dict[str, str] = {}  # where -> its cause, while it lasts
        self._seen: set[str] = set()  # wheres that failed in the cycle in progress

    def begin(self) -> None:
        """A new cycle: what fails in it is noted afresh."""
        self._seen = set()

    def end(self, *, covered: Callable[[str], bool] = lambda where: True) -> None:
        """The cycle is over: a `where` that ran without failing is well again (said once).
        `covered(where)`: whether the cycle ran that part at all (a target no longer scraped, a pool
        gone with a reload, is over too)."""
        for where in [w for w in self.failing if w not in self._seen and covered(w)]:
            cause = self.failing.pop(where)
            log.info("%s: working again (was failing: %s)", where, cause)

    def failed(self, where: str, cause: str, exc: BaseException | None = None) -> None:
        """Count a failure; log it (with the traceback of `exc`, a bug must be findable) only if its
        cause is new for this `where`."""
        stage = where.partition("/")[0]
        self.errors[stage] = self.errors.get(stage, 0) + 1
        self._seen.add(where)
        if self.failing.get(where) != cause:
            if where not in self.failing and len(self.failing) >= MAX_FAILING:
                return
            log.error("%s failed (contained; the rest of the cycle goes on): %s", where, cause, exc_info=exc)
            self.failing[where] = cause

    def ok(self, where: str) -> None:
        """`where` ran without failing this cycle (for parts not covered by `end`)."""
        if where in self.failing and where not in self._seen:
            log.info("%s: working again (was failing: %s)", where, self.failing.pop(where))

    def run(self, where: str, call: Callable[..., T], *args: Any, default: Any = None, **kwargs: Any) -> T | Any:
        """`call(*args)`, or `default` when it raises (counted and named)."""
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the boundary itself: counted, named, logged
            self.failed(where, cause_of(exc), exc)
            return default

    async def arun(self, where: str, work: Awaitable[T], default: Any = None) -> T | Any:
        """Await `work`, or `default` when it raises (counted and named). Cancellation passes."""
        try:
            return await work
        except Exception as exc:  # noqa: BLE001 - the boundary itself: counted, named, logged
            self.failed(where, cause_of(exc), exc)
            return default

    def snapshot(self) -> dict[str, str]:
        return dict(self.failing)
