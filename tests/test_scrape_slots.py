"""Scrape slots (monitor/collect/slots.py): never more than `concurrency` held, handed out in the order
asked for, none lost to a cancelled waiter, and one deadline a cycle that refuses what still waits,
following the deadline when the cycle moves it on."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.collect.slots import ScrapeSlots, SlotDeadline


async def test_slots_are_handed_out_in_the_order_asked_for_and_never_more_than_concurrency_at_once():
    slots = ScrapeSlots(2)
    held, most, order = 0, 0, []

    async def target(n: int) -> None:
        nonlocal held, most
        assert await slots.take()
        held += 1
        most = max(most, held)
        order.append(n)
        await asyncio.sleep(0.001 * (n % 3))
        held -= 1
        slots.give()

    await asyncio.gather(*(target(n) for n in range(12)))
    assert most == 2 and order[:2] == [0, 1] and sorted(order) == list(range(12)) and slots.free == 2


async def test_a_waiter_cancelled_in_the_turn_it_was_handed_a_slot_passes_it_on():
    slots = ScrapeSlots(1)
    assert await slots.take()
    first = asyncio.create_task(slots.take())
    second = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.give()  # to `first`, which is cancelled before it runs
    first.cancel()
    assert await asyncio.wait_for(second, 1) is True
    slots.give()
    assert slots.free == 1


async def test_the_deadline_refuses_every_target_still_waiting_and_none_that_holds_a_slot():
    slots = ScrapeSlots(1)
    loop = asyncio.get_running_loop()
    deadline = SlotDeadline(slots, loop.time() + 0.05)
    assert await slots.take()
    waiting = [asyncio.create_task(slots.take()) for _ in range(3)]
    assert await asyncio.gather(*waiting) == [False, False, False]
    deadline.cancel()
    slots.give()
    assert slots.free == 1


async def test_a_deadline_moved_on_while_it_runs_refuses_at_the_new_time_not_the_old():
    slots = ScrapeSlots(1)
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = SlotDeadline(slots, began + 0.05)
    assert await slots.take()
    waiter = asyncio.create_task(slots.take())
    await asyncio.sleep(0.02)
    deadline.at += 0.1  # the cycle spent 0.1 s parsing
    assert await waiter is False
    assert loop.time() - began >= 0.15
    deadline.cancel()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=25))
def test_whatever_waiters_are_cancelled_every_slot_comes_back(concurrency, plan):
    async def run() -> None:
        slots = ScrapeSlots(concurrency)

        async def target(pause: int) -> None:
            if await slots.take():
                try:
                    await asyncio.sleep(0.0005 * pause)
                finally:
                    slots.give()

        tasks = [asyncio.create_task(target(pause)) for pause, _ in plan]
        await asyncio.sleep(0)
        for task, (_, cancel) in zip(tasks, plan):
            if cancel:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert slots.free == concurrency

    asyncio.run(run())
