"""The rolling window of request records the service keeps, per pool, de-duplicated.

In memory only: goodput and exact SLIs are computed over minutes, and what outlives them is the
per-minute SLO events the engine already stores. Bounded twice — by age (`retention_s`) and by count
per pool (`max_records_per_pool`, oldest dropped first and counted) — so a flood of spans costs a
known amount of memory. De-duplicated by (trace id, span id): an OTLP exporter retries an export
whose answer it did not get, and the retry must not count the same requests twice.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Iterable

from monitor.otlp.records import RequestRecord

RETENTION_S = 3600.0
MAX_RECORDS_PER_POOL = 500_000


class TraceStore:
    """`add` is the receiver's sink; `records` and `first_at` feed goodput. Thread-safe."""

    def __init__(self, retention_s: float = RETENTION_S, max_records_per_pool: int = MAX_RECORDS_PER_POOL,
                 clock: Callable[[], float] = time.time) -> None:
        self.retention_s = retention_s
        self.max_records_per_pool = max_records_per_pool
        self.clock = clock
        self._by_pool: dict[str, deque[RequestRecord]] = {}
        self._first_at: dict[str, float] = {}
        self._keys: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.accepted = 0
        self.duplicates = 0
        self.dropped = 0  # pushed out by the per-pool cap before their time

    def add(self, records: Iterable[RequestRecord]) -> int:
        """Keep new records; returns how many were new (duplicates are skipped and counted)."""
        added = 0
        with self._lock:
            now = self.clock()
            for record in records:
                key = record.key
                if key is not None:
                    if key in self._keys:
                        self.duplicates += 1
                        continue
                    self._keys.add(key)
                pool = self._by_pool.get(record.pool)
                if pool is None:
                    pool = self._by_pool[record.pool] = deque()
                self._first_at[record.pool] = min(self._first_at.get(record.pool, now), record.at)
                pool.append(record)
                added += 1
                if len(pool) > self.max_records_per_pool:
                    self._forget(pool.popleft())
                    self.dropped += 1
            self.accepted += added
            self._prune(now)
        return added

    def __call__(self, records: Iterable[RequestRecord]) -> int:
        return self.add(records)

    def _forget(self, record: RequestRecord) -> None:
        key = record.key
        if key is not None:
            self._keys.discard(key)

    def _prune(self, now: float) -> None:
        """Drop records past retention. Arrival order is nearly finish order; a record that came late
        with an old `at` waits behind newer ones for a while (memory only: `records` skips it)."""
        horizon = now - self.retention_s
        for pool in self._by_pool.values():
            while pool and pool[0].at < horizon:
                self._forget(pool.popleft())

    def prune(self, now: float | None = None) -> None:
        with self._lock:
            self._prune(self.clock() if now is None else now)

    def records(self, pool: str, *, since: float = float("-inf"), model: str | None = None) -> list[RequestRecord]:
        """The pool's records that finished after `since` and within retention (optionally one model),
        in arrival order. The retention test here also hides a late record still queued behind newer ones."""
        with self._lock:
            found = self._by_pool.get(pool)
            if not found:
                return []
            since = max(since, self.clock() - self.retention_s)
            return [r for r in found if r.at > since and (model is None or r.model == model)]

    def first_at(self, pool: str) -> float | None:
        """The earliest finish among the pool's records ever received (no later than the first
        arrival): where what traces can speak for begins, for goodput's per-second rate."""
        with self._lock:
            return self._first_at.get(pool)

    def pools(self) -> list[str]:
        with self._lock:
            return sorted(self._by_pool)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(p) for p in self._by_pool.values())
