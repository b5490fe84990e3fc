"""Hedged requests (gRFC A6 style): one more attempt elsewhere when the first is slow.

``Hedge`` wraps one attempt of a call (the *primary*, awaited in the caller's own task, so an
unhedged call pays no task). It arms one timer; when it fires while the primary is still
waiting, `start()` (the router's) may send a hedge attempt to another replica as a task. The
first good answer wins:

- the primary answers first: the hedge (if sent) is cancelled;
- the hedge answers first: the caller's task is cancelled out of the primary's await and the
  cancellation is taken back (``Task.uncancel``, as ``asyncio.timeout`` does); a cancellation
  from outside at the same time still propagates;
- the primary fails while the hedge runs: the hedge's outcome is the result (its error when it
  fails too).

The router decides whether a hedge is possible (candidates, budget, deadline) before building
one; `start()` returns None when it no longer is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from meshserve.v1 import model_pb2

__all__ = ["Hedge", "HedgeStart"]

Response = model_pb2.InferResponse
# The router's hedge starter: (instance id, attempt task), or None when no hedge can be sent.
HedgeStart = Callable[[], "tuple[str, asyncio.Task[Response]] | None"]


class Hedge:
    """One call attempt with at most one hedge (see the module docstring)."""

    __slots__ = ("_pending", "_start", "_task", "_timer", "_won", "attempt", "replica_id")

    def __init__(self, delay_s: float, start: HedgeStart) -> None:
        task = asyncio.current_task()
        assert task is not None, "Hedge runs inside a task"
        self._task = task
        self._start = start
        self._pending = True  # the primary is still awaited
        self._won = False
        self.replica_id = ""  # the hedge's replica, once sent
        self.attempt: asyncio.Task[Response] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            delay_s, self._fire
        )

    def _fire(self) -> None:
        self._timer = None
        if not self._pending:
            return
        started = self._start()
        if started is None:
            return
        self.replica_id, self.attempt = started
        self.attempt.add_done_callback(self._done)

    def _done(self, attempt: asyncio.Task[Response]) -> None:
        if attempt.cancelled():
            return
        if attempt.exception() is None and self._pending:  # (retrieves a failure)
            self._won = True
            self._task.cancel()

    async def run(self, primary: Awaitable[Response]) -> Response:
        """The first good answer of the primary and the hedge; raises the last failure."""
        try:
            resp = await primary
            self._pending = False
            return resp
        except asyncio.CancelledError:
            self._pending = False
            if self._won and self._task.uncancel() == 0:
                assert self.attempt is not None
                return self.attempt.result()
            raise
        except Exception:
            self._pending = False
            if self.attempt is None:
                raise
            return await self.attempt  # the hedge now carries the call
        finally:
            self._pending = False
            self.cancel()

    def cancel(self) -> None:
        """Disarm the timer and cancel a hedge still running (the loser)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.attempt is not None and not self.attempt.done():
            self.attempt.cancel()
