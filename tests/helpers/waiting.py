"""Polling until something is true, for tests and benchmarks that drive real processes."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Protocol

import httpx


class Checked(Protocol):
    def check(self) -> None:
        """Raise if the process has exited."""


def wait_until(predicate: Callable[[], Any], deadline_s: float, poll_s: float = 0.1, what: str = "condition",
               not_yet: tuple[type[BaseException], ...] = (httpx.TransportError,), procs: Iterable[Checked] = ()):
    """Poll until `predicate()` is truthy and return its value; errors in `not_yet` count as not yet.

    Each of `procs` is checked on every round, so a child that died fails the wait at once with its
    own message instead of after the whole deadline.
    """
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        for proc in procs:
            proc.check()
        try:
            last = predicate()
            if last:
                return last
        except not_yet as exc:
            last = exc
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {deadline_s:g}s waiting for {what}; last: {last!r}")
