"""The dynamic batcher shared by every caller of a model replica (unary, stream items, V2).

Contract (STYLE.md #10):

- **Bounded.** At most ``queue_max`` requests wait; one more fails at once with
  OverloadedError (RESOURCE_EXHAUSTED) carrying ``overload_pushback_ms``.
- **Batches (continuous batching).** A batch takes queued requests in arrival order until
  ``max_batch_rows`` rows. It starts, when one of ``max_concurrent_batches`` slots is free, as
  soon as one of these holds:

  * the model is idle (no batch running): what is queued runs now, so a lone request never
    waits for company (low latency at low load);
  * the batch is full (``max_batch_rows`` rows, or the next request would not fit);
  * ``max_wait_us`` passed since its *first* request was queued.

  So requests arriving while a batch runs accumulate into the next one, which starts when the
  running batch finishes (or when it is full, or its wait is over, if a second slot is free).
  Requests queued in the same event-loop turn always share a batch. A request is never split:
  one that would overflow the batch heads the queue for the next batch. A single request larger
  than ``max_batch_rows`` runs alone. ``max_batch_rows == 1`` (or ``mergeable=False``) turns
  merging off: one request per session call.
- **Skips.** Cancelled requests are dropped when taken; expired ones (deadline before dispatch)
  fail with DeadlineExceededError and never reach the model.
- **Runs off the loop, unless tiny.** Concatenation along dim 0, the model call and nothing else
  run in the executor; each caller gets zero-copy views of its own rows back. At most
  ``max_concurrent_batches`` batches run at once. A batch whose expected compute (EWMA of past
  calls, scaled by rows) is at most ``inline_max_us`` runs on the event loop thread instead: a
  thread hand-off each way costs more than such a call.
- **One result per input, enforced.** Every output of a merged call must have exactly the batch's
  rows in dim 0; otherwise every request in it fails with InternalError.
- **Shutdown with a deadline.** ``stop(timeout_s)`` refuses new requests (UnavailableError), runs
  what is queued, waits for running batches until the deadline, then fails what is left.
- **Metrics** through a `BatchObserver` (sizes, queue wait, compute, queue depth).

Dispatch is event driven, with as few event-loop turns per batch as possible (this is the
per-request overhead of a replica): a submit schedules one ``_pump`` per loop turn, a timer
covers ``max_wait_us``, the executor thread hands the outputs back with one
``call_soon_threadsafe`` and the next batch is started in that same callback. Time comes from
an injectable monotonic clock.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from opentelemetry import context as otel_context
from opentelemetry import trace

from meshserve.errors import (
    DeadlineExceededError,
    InternalError,
    MeshError,
    OverloadedError,
    UnavailableError,
)
from meshserve.modelsvc.config import BatchingConfig, auto_concurrent_batches, usable_cpus
from meshserve.telemetry import tracing_enabled

__all__ = ["BatchObserver", "BatchResult", "BatchStats", "DynamicBatcher", "RunBatch"]

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

Arrays = dict[str, np.ndarray]
# The model call: merged inputs -> merged outputs (runs in the executor thread).
RunBatch = Callable[[Arrays], Arrays]


@dataclass(frozen=True)
class BatchStats:
    """How one request was executed."""

    batch_size: int
    batch_requests: int
    queue_wait_us: int
    compute_us: int


@dataclass(frozen=True)
class BatchResult:
    outputs: Arrays
    stats: BatchStats


class BatchObserver(Protocol):
    """Metrics sink of the batcher."""

    def queue_depth(self, depth: int) -> None: ...

    def batch_done(self, rows: int, requests: int, compute_s: float) -> None: ...

    def queue_wait(self, wait_s: float) -> None: ...


class _NoObserver:
    def queue_depth(self, depth: int) -> None:
        pass

    def batch_done(self, rows: int, requests: int, compute_s: float) -> None:
        pass

    def queue_wait(self, wait_s: float) -> None:
        pass


@dataclass(slots=True)
class _Item:
    inputs: Mapping[str, np.ndarray]
    rows: int
    deadline: float | None
    enqueued_at: float
    future: asyncio.Future[BatchResult]
    span_context: trace.SpanContext | None = None
    caller_links: Sequence[trace.Link] = ()


@dataclass(slots=True, eq=False)
class _Batch:
    """A batch handed to the executor; `done` resolves when it finished or was abandoned."""

    items: list[_Item]
    rows: int
    dispatched_at: float
    done: asyncio.Future[None]
    span: trace.Span | None = None


class DynamicBatcher:
    """Coalesces concurrent requests into session calls; see the module docstring for the rules.

    `executor` runs the batches (None: the batcher owns a pool of ``max_concurrent_batches``
    threads, shut down by `stop`).
    """

    def __init__(
        self,
        config: BatchingConfig,
        run_batch: RunBatch,
        *,
        executor: concurrent.futures.Executor | None = None,
        mergeable: bool = True,
        clock: Callable[[], float] = time.monotonic,
        observer: BatchObserver | None = None,
    ) -> None:
        self._config = config
        self._run_batch = run_batch
        self._own_executor = executor is None
        max_batches = config.max_concurrent_batches or auto_concurrent_batches(usable_cpus())
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=max_batches, thread_name_prefix="modelsvc-batch"
        )
        self._max_rows = config.max_batch_rows if mergeable else 1
        self._max_wait_s = config.max_wait_us / 1e6 if self._max_rows > 1 else 0.0
        self._max_batches = max_batches
        self._inline_max_s = config.inline_max_us / 1e6
        self._compute = _ComputeEstimate()
        self._clock = clock
        self._observer: BatchObserver = observer or _NoObserver()
        self._queue: collections.deque[_Item] = collections.deque()
        # Rows of the queued items (cancelled ones included until they are taken): lets the
        # pump see "not full yet" without walking the queue.
        self._queued_rows = 0
        self._running: set[_Batch] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def in_flight_batches(self) -> int:
        return len(self._running)

    def start(self) -> None:
        """Bind to the running event loop (idempotent; `submit` does it too)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

    async def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        deadline: float | None = None,
        span_context: trace.SpanContext | None = None,
        caller_links: Sequence[trace.Link] = (),
    ) -> BatchResult:
        """Queue one request of `rows` rows and wait for its own rows of the outputs.

        `inputs` is read, never modified or kept after the batch ran. `deadline` is on the
        batcher's clock. Raises OverloadedError when the queue is full, DeadlineExceededError
        when the deadline passes before dispatch, UnavailableError while shutting down.
        """
        if self._closing:
            raise UnavailableError("model service is shutting down; retry on another replica")
        if len(self._queue) >= self._config.queue_max:
            raise OverloadedError(
                f"model queue is full ({self._config.queue_max} requests waiting); retry later",
                retry_pushback_ms=self._config.overload_pushback_ms,
            )
        now = self._clock()
        if deadline is not None and deadline <= now:
            raise DeadlineExceededError("deadline expired before the request was queued")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        item = _Item(inputs, rows, deadline, now, loop.create_future(), span_context, caller_links)
        self._queue.append(item)
        self._queued_rows += rows
        self._schedule_pump()  # one pump per loop turn: requests queued in it share a batch
        return await item.future

    async def stop(self, timeout_s: float) -> None:
        """Refuse new requests, run queued and running ones until `timeout_s`, fail the rest."""
        self._closing = True
        deadline = self._clock() + timeout_s
        if self._loop is not None:
            self._pump()
        while (self._queue or self._running) and self._clock() < deadline:
            if not self._running:
                await asyncio.sleep(0.001)
                self._pump()
                continue
            await asyncio.wait(
                [b.done for b in self._running],
                timeout=max(0.0, deadline - self._clock()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        self._cancel_timer()
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(
                    UnavailableError("model service shut down before the request ran")
                )
        self._queued_rows = 0
        for batch in [*self._running]:  # abandoned: the executor thread's result is dropped
            self._running.discard(batch)
            self._fail(batch.items, UnavailableError("model service shut down mid-batch"))
            self._end(batch, "shut down mid-batch")
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._observer.queue_depth(0)

    # -- dispatch (event loop) --------------------------------------------------------------

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _pump(self) -> None:
        """Start every batch the rules allow now; arm the max-wait timer for the next one."""
        self._pump_scheduled = False
        self._cancel_timer()
        while self._queue and len(self._running) < self._max_batches:
            idle = not self._running
            wait_until = self._queue[0].enqueued_at + self._max_wait_s
            if (
                not idle
                and not self._closing
                and self._queued_rows < self._max_rows
                and self._clock() < wait_until
            ):
                self._arm_timer(wait_until)  # a batch runs: accumulate
                break
            items, rows, full = self._take_batch()
            if not items:
                break  # only cancelled or expired requests were queued
            if (
                full
                or idle
                or self._closing
                or self._clock() >= items[0].enqueued_at + self._max_wait_s
            ):
                self._dispatch(items, rows)
                continue
            # Cancelled requests made the queue look full: put the batch back and keep waiting.
            self._queue.extendleft(reversed(items))
            self._queued_rows += rows
            self._arm_timer(items[0].enqueued_at + self._max_wait_s)
            break
        self._observer.queue_depth(len(self._queue))

    def _arm_timer(self, at: float) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(max(0.0, at - self._clock()), self._schedule_pump)

    def _take_batch(self) -> tuple[list[_Item], int, bool]:
        """Pop live items for one batch: (items, rows, full). Cancelled ones are dropped,
        expired ones failed; a request that would overflow the batch stays at the head."""
        items: list[_Item] = []
        rows = 0
        now = self._clock()
        queue = self._queue
        while queue:
            item = queue[0]
            if item.future.done():
                queue.popleft()
                self._queued_rows -= item.rows
                continue
            if item.deadline is not None and item.deadline <= now:
                queue.popleft()
                self._queued_rows -= item.rows
                item.future.set_exception(
                    DeadlineExceededError(
                        "deadline expired while queued "
                        f"({(now - item.enqueued_at) * 1e3:.1f} ms in the queue)"
                    )
                )
                continue
            if items and rows + item.rows > self._max_rows:
                return items, rows, True  # never split: it heads the next batch
            queue.popleft()
            self._queued_rows -= item.rows
            items.append(item)
            rows += item.rows
            if rows >= self._max_rows:
                return items, rows, True
        return items, rows, False

    def _dispatch(self, items: list[_Item], rows: int) -> None:
        loop = self._loop
        assert loop is not None
        now = self._clock()
        observer = self._observer
        for item in items:
            observer.queue_wait(now - item.enqueued_at)
        span = None
        ctx = None
        if tracing_enabled():
            span = tracer.start_span(
                "modelsvc.batch",
                # Every request span, and every further caller a coalesced request carries.
                links=[
                    *(trace.Link(i.span_context) for i in items if i.span_context is not None),
                    *(link for i in items for link in i.caller_links),
                ],
                attributes={"meshserve.batch_size": rows, "meshserve.batch_requests": len(items)},
            )
            ctx = trace.set_span_in_context(span)
        batch = _Batch(items, rows, now, loop.create_future(), span)
        self._running.add(batch)
        parts = [i.inputs for i in items]
        if self._compute.expected_s(rows) <= self._inline_max_s:
            loop.call_soon(self._complete, batch, *self._execute(parts, rows, ctx))
            return
        try:
            self._executor.submit(self._work, loop, batch, parts, ctx)
        except RuntimeError:  # the executor was shut down
            self._complete(batch, None, UnavailableError("model service is shutting down"), 0.0)

    def _complete(
        self, batch: _Batch, outputs: Arrays | None, error: BaseException | None, compute_s: float
    ) -> None:
        """Event loop, once per batch: hand each request its rows, start the next batch."""
        if batch not in self._running:
            return  # abandoned by stop()
        self._running.discard(batch)
        if error is None:
            self._compute.observe(batch.rows, compute_s)
        items = batch.items
        if error is not None or outputs is None:
            if not isinstance(error, MeshError):
                log.error("batch of %d rows failed", batch.rows, exc_info=error)
                error = InternalError(f"model execution failed ({type(error).__name__})")
            self._fail(items, error)
            self._end(batch, error.message)
        else:
            self._deliver(batch, outputs, compute_s)
            self._end(batch, None)
        if self._queue:
            self._pump()  # the model is idle (or a slot is free): run what accumulated

    def _deliver(self, batch: _Batch, outputs: Arrays, compute_s: float) -> None:
        items = batch.items
        rows = batch.rows
        self._observer.batch_done(rows, len(items), compute_s)
        compute_us = int(compute_s * 1e6)
        dispatched_at = batch.dispatched_at
        if len(items) == 1:
            item = items[0]
            if not item.future.done():
                stats = BatchStats(
                    rows, 1, int((dispatched_at - item.enqueued_at) * 1e6), compute_us
                )
                item.future.set_result(BatchResult(outputs, stats))
            return
        offset = 0
        for item in items:
            end = offset + item.rows
            if not item.future.done():
                stats = BatchStats(
                    rows, len(items), int((dispatched_at - item.enqueued_at) * 1e6), compute_us
                )
                own = {name: value[offset:end] for name, value in outputs.items()}
                item.future.set_result(BatchResult(own, stats))
            offset = end

    @staticmethod
    def _end(batch: _Batch, error: str | None) -> None:
        if not batch.done.done():
            batch.done.set_result(None)
        if batch.span is not None:
            if error is not None:
                batch.span.set_status(trace.Status(trace.StatusCode.ERROR, error))
            batch.span.end()

    @staticmethod
    def _fail(items: Sequence[_Item], exc: BaseException) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(exc)

    # -- executor thread --------------------------------------------------------------------

    def _work(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: _Batch,
        parts: Sequence[Mapping[str, np.ndarray]],
        ctx: Any,
    ) -> None:
        """Executor thread: run the batch, hand the result back in one loop callback."""
        result = self._execute(parts, batch.rows, ctx)
        try:
            loop.call_soon_threadsafe(self._complete, batch, *result)
        except RuntimeError:
            pass  # the loop is closed: nobody waits for this batch any more

    def _execute(
        self, parts: Sequence[Mapping[str, np.ndarray]], rows: int, ctx: Any
    ) -> tuple[Arrays | None, BaseException | None, float]:
        """(outputs, error, compute seconds) of one batch, on whichever thread calls it."""
        started = self._clock()
        try:
            return self._run_merged(parts, rows, ctx), None, self._clock() - started
        except Exception as exc:
            return None, exc, self._clock() - started

    def _run_merged(self, parts: Sequence[Mapping[str, np.ndarray]], rows: int, ctx: Any) -> Arrays:
        """Concatenate, run, check one output row per input row."""
        if len(parts) == 1:
            merged = dict(parts[0])
        else:
            merged = {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}
        if ctx is None:
            outputs = self._run_batch(merged)
        else:
            token = otel_context.attach(ctx)
            try:
                with tracer.start_as_current_span(
                    "modelsvc.inference", attributes={"meshserve.batch_size": rows}
                ):
                    outputs = self._run_batch(merged)
            finally:
                otel_context.detach(token)
        if len(parts) > 1:
            for name, value in outputs.items():
                if value.ndim == 0 or value.shape[0] != rows:
                    raise InternalError(
                        f"output '{name}' has shape {list(value.shape)}; a merged batch of "
                        f"{rows} rows needs {rows} rows in dim 0"
                    )
        return outputs


class _ComputeEstimate:
    """EWMA of a batch's compute time per row count seen; unknown (infinite) until measured."""

    ALPHA = 0.1

    def __init__(self) -> None:
        self._batch_s = math.inf
        self._rows = 1.0

    def observe(self, rows: int, compute_s: float) -> None:
        if math.isinf(self._batch_s):
            self._batch_s, self._rows = compute_s, float(rows)
            return
        self._batch_s += self.ALPHA * (compute_s - self._batch_s)
        self._rows += self.ALPHA * (rows - self._rows)

    def expected_s(self, rows: int) -> float:
        """Expected compute of a `rows`-row batch (scaled up, never down, from the average)."""
        return self._batch_s * max(1.0, rows / self._rows)
