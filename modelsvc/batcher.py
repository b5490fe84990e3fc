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
- **Runs off the loop, unless tiny.** Stacking along dim 0, the model call and nothing else
  run in the executor; each caller gets zero-copy views of its own rows back (meshserve/rows.py).
  At most ``max_concurrent_batches`` batches run at once. A batch whose expected compute (EWMA of
  past calls, scaled by rows) is at most ``inline_max_us`` runs on the event loop thread instead:
  a thread hand-off each way costs more than such a call (modelsvc/batch_exec.py).
- **One result per input, enforced.** Every output of a merged call must have exactly the batch's
  rows in dim 0; otherwise every request in it fails with InternalError.
- **Shutdown with a deadline.** ``stop(timeout_s)`` refuses new requests (UnavailableError), runs
  what is queued, waits for running batches until the deadline, then fails what is left.
- **Metrics** through a `BatchObserver` (sizes, queue wait, compute, queue depth).

Dispatch is event driven, with as few event-loop turns per batch as possible (this is the
per-request overhead of a replica): a submit schedules one ``_pump`` per loop turn, a timer
covers ``max_wait_us``, the executor thread hands the outputs back with one
``call_soon_threadsafe`` and the next batch is started in that same callback. Time comes from
an injectable monotonic clock and timers on it (meshserve/clock.py; tests use a ManualClock).
Admission and the queue live in modelsvc/batch_queue.py, execution in modelsvc/batch_exec.py;
this module holds the scheduling.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
from opentelemetry import trace

from meshserve.clock import LOOP_TIMERS, Clock, TimerHandle, Timers
from meshserve.errors import InternalError, MeshError, UnavailableError
from meshserve.modelsvc.batch_exec import (
    BatchObserver,
    BatchResult,
    BatchRunner,
    BatchStats,
    NoObserver,
    RunBatch,
)
from meshserve.modelsvc.batch_queue import Batch, QueuedRequest, RequestQueue, fail
from meshserve.modelsvc.config import BatchingConfig, auto_concurrent_batches, usable_cpus
from meshserve.rows import Arrays, split_rows
from meshserve.telemetry import tracing_enabled

__all__ = ["BatchObserver", "BatchResult", "BatchStats", "DynamicBatcher", "RunBatch"]

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)


class DynamicBatcher:
    """Coalesces concurrent requests into session calls; see the module docstring for the rules.

    `executor` runs the batches (None: the batcher owns a pool of ``max_concurrent_batches``
    threads, shut down by `stop`). `clock` and `timers` must share one monotonic time base.
    """

    def __init__(
        self,
        config: BatchingConfig,
        run_batch: RunBatch,
        *,
        executor: concurrent.futures.Executor | None = None,
        mergeable: bool = True,
        clock: Clock = time.monotonic,
        timers: Timers = LOOP_TIMERS,
        observer: BatchObserver | None = None,
    ) -> None:
        max_batches = config.max_concurrent_batches or auto_concurrent_batches(usable_cpus())
        self._runner = BatchRunner(
            run_batch,
            self._complete,
            executor=executor,
            max_workers=max_batches,
            inline_max_s=config.inline_max_us / 1e6,
            clock=clock,
        )
        self._max_rows = config.max_batch_rows if mergeable else 1
        self._max_wait_s = config.max_wait_us / 1e6 if self._max_rows > 1 else 0.0
        self._max_batches = max_batches
        self._clock = clock
        self._timers = timers
        self._observer: BatchObserver = observer or NoObserver()
        self._queue = RequestQueue(config.queue_max, config.overload_pushback_ms, clock)
        self._running: set[Batch] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_scheduled = False
        self._timer: TimerHandle | None = None
        self._closing = False

    @property
    def queue_depth(self) -> int:
        return len(self._queue.items)

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
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        item = self._queue.admit(loop, inputs, rows, deadline, span_context, caller_links)
        self._schedule_pump()  # one pump per loop turn: requests queued in it share a batch
        return await item.future

    async def stop(self, timeout_s: float) -> None:
        """Refuse new requests, run queued and running ones until `timeout_s`, fail the rest."""
        self._closing = True
        deadline = self._clock() + timeout_s
        loop = self._loop
        if loop is not None:
            self._pump()  # closing: everything queued is dispatched as slots free up
        if loop is not None and self._running and self._clock() < deadline:
            expired: asyncio.Future[None] = loop.create_future()
            timer = self._timers.call_at(deadline, expired.set_result, None)
            try:
                while self._running and not expired.done():
                    await asyncio.wait(
                        [expired, *(b.done for b in self._running)],
                        return_when=asyncio.FIRST_COMPLETED,
                    )
            finally:
                timer.cancel()
        self._cancel_timer()
        self._queue.fail_all(UnavailableError("model service shut down before the request ran"))
        for batch in [*self._running]:  # abandoned: the executor thread's result is dropped
            self._running.discard(batch)
            fail(batch.items, UnavailableError("model service shut down mid-batch"))
            self._end(batch, "shut down mid-batch")
        self._runner.shutdown()
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
        queue = self._queue
        while queue.items and len(self._running) < self._max_batches:
            idle = not self._running
            wait_until = queue.items[0].enqueued_at + self._max_wait_s
            if (
                not idle
                and not self._closing
                and queue.rows < self._max_rows
                and self._clock() < wait_until
            ):
                self._arm_timer(wait_until)  # a batch runs: accumulate
                break
            items, rows, full = queue.take(self._max_rows)
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
            queue.put_back(items, rows)
            self._arm_timer(items[0].enqueued_at + self._max_wait_s)
            break
        self._observer.queue_depth(len(queue.items))

    def _arm_timer(self, at: float) -> None:
        self._timer = self._timers.call_at(at, self._schedule_pump)

    def _dispatch(self, items: list[QueuedRequest], rows: int) -> None:
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
        batch = Batch(items, rows, now, loop.create_future(), span)
        self._running.add(batch)
        self._runner.start(loop, batch, ctx)

    def _complete(
        self, batch: Batch, outputs: Arrays | None, error: BaseException | None, compute_s: float
    ) -> None:
        """Event loop, once per batch: hand each request its rows, start the next batch."""
        if batch not in self._running:
            return  # abandoned by stop()
        self._running.discard(batch)
        if error is None:
            self._runner.compute.observe(batch.rows, compute_s)
        if error is not None or outputs is None:
            if not isinstance(error, MeshError):
                log.error("batch of %d rows failed", batch.rows, exc_info=error)
                error = InternalError(f"model execution failed ({type(error).__name__})")
            fail(batch.items, error)
            self._end(batch, error.message)
        else:
            self._deliver(batch, outputs, compute_s)
            self._end(batch, None)
        if self._queue.items:
            self._pump()  # the model is idle (or a slot is free): run what accumulated

    def _deliver(self, batch: Batch, outputs: Arrays, compute_s: float) -> None:
        items = batch.items
        rows = batch.rows
        requests = len(items)
        self._observer.batch_done(rows, requests, compute_s)
        compute_us = int(compute_s * 1e6)
        dispatched_at = batch.dispatched_at
        batch_span = None if batch.span is None else batch.span.get_span_context()
        for item, own in zip(items, split_rows(outputs, items), strict=True):
            if not item.future.done():
                stats = BatchStats(
                    rows, requests, int((dispatched_at - item.enqueued_at) * 1e6), compute_us
                )
                item.future.set_result(BatchResult(own, stats, batch_span))

    @staticmethod
    def _end(batch: Batch, error: str | None) -> None:
        if not batch.done.done():
            batch.done.set_result(None)
        if batch.span is not None:
            if error is not None:
                batch.span.set_status(trace.Status(trace.StatusCode.ERROR, error))
            batch.span.end()
