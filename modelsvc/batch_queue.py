"""Admission and the request queue of the dynamic batcher (modelsvc/batcher.py has the rules).

`RequestQueue` is bounded (one request over ``queue_max`` fails with OverloadedError, i.e.
RESOURCE_EXHAUSTED with a pushback), refuses requests whose deadline already passed, and hands
out batches in arrival order: cancelled requests are dropped, expired ones failed with
DeadlineExceededError, and a request is never split (one that would overflow a batch heads the
next one).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from opentelemetry import trace

from meshserve.clock import Clock
from meshserve.errors import DeadlineExceededError, OverloadedError
from meshserve.modelsvc.batch_exec import BatchResult

__all__ = ["Batch", "QueuedRequest", "RequestQueue"]


@dataclass(slots=True)
class QueuedRequest:
    """One request waiting for (or riding in) a batch."""

    inputs: Mapping[str, np.ndarray]
    rows: int
    deadline: float | None
    enqueued_at: float
    future: asyncio.Future[BatchResult]
    span_context: trace.SpanContext | None = None
    caller_links: Sequence[trace.Link] = ()


@dataclass(slots=True, eq=False)
class Batch:
    """A dispatched batch; `done` resolves when it finished or was abandoned."""

    items: list[QueuedRequest]
    rows: int
    dispatched_at: float
    done: asyncio.Future[None]
    span: trace.Span | None = None


class RequestQueue:
    """FIFO of queued requests; `rows` counts their rows (cancelled ones until taken), so the
    pump sees "not full yet" without walking the queue."""

    def __init__(self, queue_max: int, overload_pushback_ms: int, clock: Clock) -> None:
        self.items: collections.deque[QueuedRequest] = collections.deque()
        self.rows = 0
        self._queue_max = queue_max
        self._pushback_ms = overload_pushback_ms
        self._clock = clock

    def __len__(self) -> int:
        return len(self.items)

    def admit(
        self,
        loop: asyncio.AbstractEventLoop,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        deadline: float | None,
        span_context: trace.SpanContext | None,
        caller_links: Sequence[trace.Link],
    ) -> QueuedRequest:
        """Queue one request, or raise OverloadedError (full) / DeadlineExceededError."""
        if len(self.items) >= self._queue_max:
            raise OverloadedError(
                f"model queue is full ({self._queue_max} requests waiting); retry later",
                retry_pushback_ms=self._pushback_ms,
            )
        now = self._clock()
        if deadline is not None and deadline <= now:
            raise DeadlineExceededError("deadline expired before the request was queued")
        item = QueuedRequest(
            inputs, rows, deadline, now, loop.create_future(), span_context, caller_links
        )
        self.items.append(item)
        self.rows += rows
        return item

    def take(self, max_rows: int) -> tuple[list[QueuedRequest], int, bool]:
        """Pop live requests for one batch: (requests, rows, full). Cancelled ones are dropped,
        expired ones failed; a request that would overflow the batch stays at the head."""
        items: list[QueuedRequest] = []
        rows = 0
        now = self._clock()
        queue = self.items
        while queue:
            item = queue[0]
            if item.future.done():
                queue.popleft()
                self.rows -= item.rows
                continue
            if item.deadline is not None and item.deadline <= now:
                queue.popleft()
                self.rows -= item.rows
                item.future.set_exception(
                    DeadlineExceededError(
                        "deadline expired while queued "
                        f"({(now - item.enqueued_at) * 1e3:.1f} ms in the queue)"
                    )
                )
                continue
            if items and rows + item.rows > max_rows:
                return items, rows, True  # never split: it heads the next batch
            queue.popleft()
            self.rows -= item.rows
            items.append(item)
            rows += item.rows
            if rows >= max_rows:
                return items, rows, True
        return items, rows, False

    def put_back(self, items: list[QueuedRequest], rows: int) -> None:
        """Return a taken batch to the head of the queue, in order."""
        self.items.extendleft(reversed(items))
        self.rows += rows

    def fail_all(self, exc: BaseException) -> None:
        """Empty the queue, failing every request still waiting."""
        while self.items:
            item = self.items.popleft()
            if not item.future.done():
                item.future.set_exception(exc)
        self.rows = 0


def fail(items: Sequence[QueuedRequest], exc: BaseException) -> None:
    """Fail every request of `items` not settled yet."""
    for item in items:
        if not item.future.done():
            item.future.set_exception(exc)
