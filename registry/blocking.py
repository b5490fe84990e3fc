"""Consul blocking queries done by the rules, with injectable time.

A blocking query sends the last ``X-Consul-Index`` back as ``?index=`` with ``?wait=`` and the
agent holds the request until something changes or the wait ends. Consul's rules, followed here:

* feed back the last index; the first query (index 0) is a plain read;
* the index can go backwards (e.g. the agent restarted, a dev agent starts from scratch):
  then reset it to 0 so the next query is a fresh read;
* never *wait* on index 0 (such a query returns at once, a busy loop): a 0 from the agent
  after a response becomes 1;
* the agent may return early with no change, so rate-limit: at least `min_interval_s`
  between the starts of two queries;
* on an error keep the last good result, retry with jittered exponential backoff capped at
  `backoff_max_s`, and make the retry a fresh read (the agent may be a new one).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from meshserve.errors import MeshError

__all__ = [
    "Backoff",
    "BlockingOptions",
    "BlockingQuery",
    "Clock",
    "RateLimiter",
    "Sleep",
    "next_index",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Fetch = Callable[[int, float], Awaitable[tuple[int, T]]]


def next_index(previous: int, returned: int) -> int:
    """The index to send with the next query, given the last one sent and the one returned.

    Backwards -> 0 (fresh read). Otherwise the returned index, but never 0 (0 -> 1).
    """
    if returned < previous:
        return 0
    return max(returned, 1)


@dataclass(frozen=True)
class BlockingOptions:
    """Timing of a blocking-query loop.

    `wait_s`: the ``?wait=`` the agent may hold a query (it adds up to wait/16 of jitter).
    `min_interval_s`: least time between the starts of two queries.
    `backoff_initial_s` / `backoff_max_s` / `backoff_multiplier`: retry delays after errors.
    """

    wait_s: float = 10.0
    min_interval_s: float = 0.05
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    backoff_multiplier: float = 2.0


class RateLimiter:
    """At least `min_interval_s` between two `acquire()` returns (by the injected clock)."""

    def __init__(self, min_interval_s: float, clock: Clock = time.monotonic) -> None:
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._last: float | None = None

    def delay_s(self) -> float:
        """How long the next start has to wait from now (0 when it may start)."""
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.min_interval_s - self._clock())

    async def acquire(self, sleep: Sleep = asyncio.sleep) -> None:
        """Sleep until the next start is allowed, then mark it."""
        delay = self.delay_s()
        if delay > 0:
            await sleep(delay)
        self._last = self._clock()


class Backoff:
    """Capped exponential backoff with "equal jitter": half fixed, half uniformly random.

    The n-th delay (from 0) lies in [d/2, d] where d = min(max_s, initial_s * multiplier**n).
    """

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        multiplier: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.multiplier = multiplier
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay_s(self) -> float:
        """The delay before the next retry; counts one more failure."""
        ceiling = min(self.max_s, self.initial_s * self.multiplier**self.failures)
        self.failures += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        """Forget past failures (after a success)."""
        self.failures = 0


class BlockingQuery(Generic[T]):
    """Repeats ``fetch(index, wait_s) -> (new_index, result)`` by the rules above.

    Iterating yields the first result and then every result that differs from the previous
    one. Errors (`MeshError` from the fetch) are logged and retried; the iteration itself never
    fails, it only ends when the consuming task is cancelled. `index` and `failures` are
    exposed for observability and tests, as is `last_success_at`. `resets` counts the times the
    query started over: after the agent could not be reached, or when its index went backwards
    (its next answer may come from a restarted agent that has not re-learned its state yet).
    """

    def __init__(
        self,
        fetch: Fetch[T],
        options: BlockingOptions | None = None,
        *,
        name: str = "query",
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._fetch = fetch
        self.options = options or BlockingOptions()
        self.name = name
        self._sleep = sleep
        self._limiter = RateLimiter(self.options.min_interval_s, clock)
        self._backoff = Backoff(
            self.options.backoff_initial_s,
            self.options.backoff_max_s,
            self.options.backoff_multiplier,
            rng,
        )
        self._clock = clock
        self.index = 0
        self.failures = 0
        self.resets = 0
        self.last_success_at: float | None = None  # clock() after the last good answer

    def __aiter__(self) -> AsyncIterator[T]:
        return self._results()

    async def _results(self) -> AsyncIterator[T]:
        has_last = False
        last: T | None = None
        while True:
            await self._limiter.acquire(self._sleep)
            sent = self.index
            try:
                returned, result = await self._fetch(sent, self.options.wait_s)
            except MeshError as exc:
                self.failures += 1
                delay = self._backoff.next_delay_s()
                log.warning(
                    "%s failed (%d in a row), retrying in %.2fs: %s",
                    self.name, self._backoff.failures, delay, exc,
                )  # fmt: skip
                if self.index:
                    self.resets += 1
                self.index = 0  # the agent may have restarted: next query is a fresh read
                await self._sleep(delay)
                continue
            if self._backoff.failures:
                log.info("%s recovered after %d failures", self.name, self._backoff.failures)
            self._backoff.reset()
            self.last_success_at = self._clock()
            self.index = next_index(sent, returned)
            if returned < sent:
                self.resets += 1
                log.info("%s: index went backwards (%d -> %d), reset", self.name, sent, returned)
            if not has_last or result != last:
                has_last, last = True, result
                yield result
