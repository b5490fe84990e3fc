"""ManualClock (the test clock and timers) and LoopTimers (the real ones)."""

from __future__ import annotations

import asyncio
import time

import pytest

from meshserve.clock import LOOP_TIMERS, ManualClock


def test_advance_runs_due_timers_in_time_order_at_their_time() -> None:
    clock = ManualClock(start=10.0)
    ran: list[tuple[str, float]] = []
    clock.call_at(12.0, lambda: ran.append(("b", clock())))
    clock.call_at(11.0, lambda: ran.append(("a", clock())))
    late = clock.call_at(11.5, lambda: ran.append(("cancelled", clock())))
    clock.call_at(12.0, lambda: ran.append(("c", clock())))  # same time: in arming order
    late.cancel()
    clock.advance(1.5)
    assert ran == [("a", 11.0)] and clock() == 11.5
    clock.advance(1.0)
    assert ran == [("a", 11.0), ("b", 12.0), ("c", 12.0)] and clock() == 12.5
    assert clock.pending() == []


def test_callbacks_armed_by_callbacks_run_when_they_fall_due_within_the_step() -> None:
    clock = ManualClock(start=0.0)
    ran: list[float] = []

    def tick() -> None:
        ran.append(clock())
        if len(ran) < 10:
            clock.call_later(0.25, tick)

    clock.call_at(0.0, tick)
    clock.advance(1.0)
    assert ran == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert clock.pending() == [1.25]
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1.0)


async def test_manual_sleep_wakes_only_when_the_clock_gets_there() -> None:
    clock = ManualClock()
    sleeper = asyncio.ensure_future(clock.sleep(0.5))
    await asyncio.sleep(0)
    clock.advance(0.4)
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(0.1)
    await sleeper


async def test_loop_timers_fire_on_the_monotonic_clock() -> None:
    before = time.monotonic()
    assert before <= asyncio.get_running_loop().time() <= time.monotonic()  # one time base
    fired = asyncio.Event()
    handle = LOOP_TIMERS.call_at(time.monotonic() - 1.0, fired.set)  # in the past: runs soon
    await asyncio.wait_for(fired.wait(), 5.0)
    cancelled = LOOP_TIMERS.call_at(time.monotonic(), fired.clear)
    cancelled.cancel()
    await asyncio.sleep(0)
    assert fired.is_set()
    handle.cancel()  # after it ran: a no-op
