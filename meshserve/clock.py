"""Injected time (STYLE.md #9): a monotonic clock plus one-shot timers on that clock.

Components that wait (batchers, timers for deadlines) take a ``clock`` (``() -> seconds``,
``time.monotonic`` by default) and a `Timers`. Production uses `LOOP_TIMERS`, which arms the
callback on the running asyncio loop exactly like ``loop.call_later`` did. Tests use one
`ManualClock` as both: time stands still until the test calls `ManualClock.advance`, which runs
every callback that falls due, in time order, so nothing waits on the wall clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["LOOP_TIMERS", "Clock", "LoopTimers", "ManualClock", "TimerHandle", "Timers"]

Clock = Callable[[], float]


class TimerHandle(Protocol):
    """An armed timer."""

    def cancel(self) -> None:
        """Do not run the callback (no-op once it ran)."""


class Timers(Protocol):
    """Arms one-shot callbacks at a time of the monotonic clock.

    Contract: ``call_at(when, callback, *args)`` runs ``callback(*args)`` once, on the event
    loop thread, no earlier than `when` (a `when` in the past runs soon); callbacks due at the
    same time run in the order they were armed. Must be called on the event loop thread.
    """

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> TimerHandle: ...


class LoopTimers:
    """`Timers` on the running asyncio loop, whose clock is ``time.monotonic`` (asyncio's
    ``BaseEventLoop.time``): `when` goes to ``loop.call_at`` as it is, no conversion."""

    __slots__ = ()

    def call_at(
        self, when: float, callback: Callable[..., object], *args: Any
    ) -> asyncio.TimerHandle:
        """Arm `callback` on the running loop (one ``loop.call_at``, cheaper than call_later)."""
        return asyncio.get_running_loop().call_at(when, callback, *args)


LOOP_TIMERS = LoopTimers()


class ManualTimer:
    """A timer of a `ManualClock`."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock and `Timers` for tests: time moves only in `advance` (or by setting `now`).

    Call it for the time; pass it as both ``clock`` and ``timers``. `advance(dt)` steps time
    forward to each due timer in turn and runs it (callbacks it arms that fall due within `dt`
    run too), then stops at ``now + dt``. Setting `now` moves time without running timers (e.g.
    a fake model's compute time, from the executor thread).
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._heap: list[tuple[float, int, ManualTimer]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> ManualTimer:
        timer = ManualTimer(when, callback, args)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        return timer

    def call_later(
        self, delay_s: float, callback: Callable[..., object], *args: Any
    ) -> ManualTimer:
        return self.call_at(self.now + delay_s, callback, *args)

    def advance(self, dt_s: float) -> None:
        """Move time forward by `dt_s`, running the timers that fall due, in time order."""
        if dt_s < 0:
            raise ValueError(f"time only moves forward (dt_s={dt_s})")
        target = self.now + dt_s
        heap = self._heap
        while heap and heap[0][0] <= target:
            when, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                continue
            self.now = max(self.now, when)
            timer.callback(*timer.args)
        self.now = target

    def pending(self) -> list[float]:
        """When the armed (not cancelled, not yet run) timers are due, earliest first."""
        return sorted(when for when, _, timer in self._heap if not timer.cancelled)

    async def sleep(self, delay_s: float) -> None:
        """Wait until `advance` moves time `delay_s` on (a fake's latency, on this clock)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.call_at(self.now + delay_s, _settle, future)
        await future


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
