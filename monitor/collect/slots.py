"""Scrape slots: at most `concurrency` targets fetched at once, handed out in the order asked for,
with one deadline per cycle for the targets still waiting.

asyncio.Semaphore with a timeout per waiter cost O(n²) at 5,000 targets: `locked()` walks every
waiter, each timed-out waiter is removed from the middle of the queue, and a deadline that moves
on (the cycle's parsing, see Scraper.scrape_all) fired every waiter's timer again and again, until
the loop did little else and 3,464 answering targets got no slot. Here a waiter is a future in a
deque: taking, handing on and refusing are O(1), and one timer a cycle refuses what is left.
"""

from __future__ import annotations

import asyncio
from collections import deque


class ScrapeSlots:
    def __init__(self, concurrency: int) -> None:
        self.free = concurrency
        self._waiting: deque[asyncio.Future[bool]] = deque()

    async def take(self) -> bool:
        """True with a slot (give it back with `give`), False when `refuse_waiting` came first."""
        if self.free > 0 and not self._waiting:
            self.free -= 1
            return True
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # handed a slot in the same turn as the cancellation: pass it on, never lose it
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.give()
            raise

    def give(self) -> None:
        """A slot back: to the first target still waiting, else free."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.free += 1

    def refuse_waiting(self) -> int:
        """Tell every target still waiting that no slot comes this cycle; how many there were."""
        refused = 0
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(False)
                refused += 1
        return refused


class SlotDeadline:
    """When a cycle's wait for a slot ends (loop time): refuses the waiting targets then, once; `at`
    may move on while it runs (the cycle's parsing), and the one timer follows it."""

    def __init__(self, slots: ScrapeSlots, at: float) -> None:
        self.slots = slots
        self.at = at
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(at, self._due)

    def _due(self) -> None:
        if self._loop.time() < self.at:  # moved on since the timer was set
            self._timer = self._loop.call_at(self.at, self._due)
            return
        self._timer = None
        self.slots.refuse_waiting()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
