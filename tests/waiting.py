"""The one polling helper of the suite: wait for a condition itself, never for a fixed time.

Use an event or a future when the code under test can signal; poll (`wait_until`, or
`wait_until_sync` outside an event loop) only what another process or Consul decides: a
registration, a leader, a watcher update, a line in a log.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

__all__ = ["RETRYABLE", "unless_unavailable", "wait_until", "wait_until_sync"]

T = TypeVar("T")

# Errors that mean "not yet" by default: a server still starting or restarting.
RETRYABLE: tuple[type[BaseException], ...] = (grpc.aio.AioRpcError, OSError)


async def wait_until(
    check: Callable[[], T | Awaitable[T]],
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    *,
    retry_on: tuple[type[BaseException], ...] = RETRYABLE,
) -> T:
    """Call `check` (sync or async) until it returns something truthy, and return that.

    An exception of `retry_on` counts as "not yet"; anything else propagates at once. Fails
    naming `what` and the last value or error after `timeout_s`.
    """
    polls = _Polls(timeout_s, what)
    while True:
        try:
            value = check()
            done = polls.outcome(await value if inspect.isawaitable(value) else value)
        except retry_on as exc:
            done = polls.outcome(exc, failed=True)
        if done:
            return polls.last  # type: ignore[no-any-return]
        await asyncio.sleep(interval_s)


def wait_until_sync(
    check: Callable[[], T],
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    *,
    retry_on: tuple[type[BaseException], ...] = RETRYABLE,
) -> T:
    """`wait_until` for code that runs outside an event loop (fixtures, process start-up)."""
    polls = _Polls(timeout_s, what)
    while True:
        try:
            done = polls.outcome(check())
        except retry_on as exc:
            done = polls.outcome(exc, failed=True)
        if done:
            return polls.last  # type: ignore[no-any-return]
        time.sleep(interval_s)


class _Polls:
    """The deadline and the last answer of one wait (shared by the async and sync forms)."""

    def __init__(self, timeout_s: float, what: str) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.what = what
        self.last: Any = None

    def outcome(self, value: Any, *, failed: bool = False) -> bool:
        """True when `value` ends the wait; raises AssertionError once the deadline passed."""
        self.last = value
        if value and not failed:
            return True
        if time.monotonic() >= self.deadline:
            raise AssertionError(
                f"timed out after {self.timeout_s}s waiting for {self.what}; last: {value!r}"
            )
        return False


async def unless_unavailable(call: Awaitable[T]) -> T | None:
    """The reply of a gRPC `call`, or None while the server answers UNAVAILABLE (still starting:
    a `wait_until` check); any other error propagates."""
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return None
