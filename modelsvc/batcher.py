"""The dynamic batcher shared by every caller of a model replica (unary, stream items, V2).

Contract (STYLE.md #10):

- **Bounded.** At most ``queue_max`` requests wait; one more fails at once with
  OverloadedError (RESOURCE_EXHAUSTED) carrying ``overload_pushback_ms``.
- **Batches.** A batch starts when a concurrency slot is free and a request is queued. It takes
  queued requests in arrival order until ``max_batch_rows`` rows, or until ``max_wait_us`` after
  its *first* request was queued. A request is never split: one that would overflow the batch
  waits at the head of the queue for the next batch. A single request larger than
  ``max_batch_rows`` runs alone. ``max_batch_rows == 1`` (or ``mergeable=False``) turns merging
  off: one request per session call.
- **Skips.** Cancelled requests are dropped when taken; expired ones (deadline before dispatch)
  fail with DeadlineExceededError and never reach the model.
- **Runs off the loop.** Concatenation along dim 0, the model call and nothing else run in the
  executor; each caller gets zero-copy views of its own rows back. At most
  ``max_concurrent_batches`` batches run at once.
- **One result per input, enforced.** Every output of a merged call must have exactly the batch's
  rows in dim 0; otherwise every request in it fails with InternalError.
- **Shutdown with a deadline.** ``stop(timeout_s)`` refuses new requests (UnavailableError), runs
  what is queued, waits for running batches until the deadline, then fails what is left.
- **Metrics** through a `BatchObserver` (sizes, queue wait, compute, queue depth).

Time comes from an injectable monotonic clock.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
from meshserve.modelsvc.config import BatchingConfig

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


@dataclass
class _Item:
    inputs: Arrays
    rows: int
    deadline: float | None
    enqueued_at: float
    future: asyncio.Future[BatchResult]
    span_context: trace.SpanContext | None = None
    dispatched_at: float = field(default=0.0)


class DynamicBatcher:
    """Coalesces concurrent requests into session calls; see the module docstring for the rules."""

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
        self._executor = executor
        self._max_rows = config.max_batch_rows if mergeable else 1
        self._max_wait_s = config.max_wait_us / 1e6 if self._max_rows > 1 else 0.0
        self._clock = clock
        self._observer: BatchObserver = observer or _NoObserver()
        self._queue: collections.deque[_Item] = collections.deque()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_concurrent_batches)
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def in_flight_batches(self) -> int:
        return len(self._running)

    def start(self) -> None:
        """Start the dispatch loop on the running event loop."""
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(
                self._dispatch_loop(), name="modelsvc-batcher"
            )

    async def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        deadline: float | None = None,
        span_context: trace.SpanContext | None = None,
    ) -> BatchResult:
        """Queue one request of `rows` rows and wait for its own rows of the outputs.

        `deadline` is on the batcher's clock. Raises OverloadedError when the queue is full,
        DeadlineExceededError when the deadline passes before dispatch, UnavailableError while
        shutting down.
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
        self.start()
        item = _Item(
            dict(inputs),
            rows,
            deadline,
            now,
            asyncio.get_running_loop().create_future(),
            span_context,
        )
        self._queue.append(item)
        self._observer.queue_depth(len(self._queue))
        self._wakeup.set()
        return await item.future

    async def stop(self, timeout_s: float) -> None:
        """Refuse new requests, run queued and running ones until `timeout_s`, fail the rest."""
        self._closing = True
        self._wakeup.set()
        deadline = self._clock() + timeout_s
        while (self._queue or self._running) and self._clock() < deadline:
            pending = [*self._running]
            if not pending:
                await asyncio.sleep(0.001)
                continue
            await asyncio.wait(pending, timeout=max(0.0, deadline - self._clock()))
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(
                    UnavailableError("model service shut down before the request ran")
                )
        for task in [*self._running]:
            task.cancel()
        self._observer.queue_depth(0)

    # -- dispatch ---------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                batch = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take(self) -> _Item | None:
        """Pop the next live item (cancelled ones dropped, expired ones failed)."""
        while self._queue:
            item = self._queue.popleft()
            if item.future.done():
                continue
            if item.deadline is not None and item.deadline <= self._clock():
                item.future.set_exception(
                    DeadlineExceededError(
                        "deadline expired while queued "
                        f"({(self._clock() - item.enqueued_at) * 1e3:.1f} ms in the queue)"
                    )
                )
                continue
            return item
        return None

    async def _wait_for_item(self, timeout_s: float | None) -> bool:
        """Wait until something is queued (True) or `timeout_s` passes (False)."""
        if self._queue:
            return True
        self._wakeup.clear()
        if timeout_s is None:
            await self._wakeup.wait()
            return True
        if timeout_s <= 0:
            return False
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout_s)
        except TimeoutError:
            return bool(self._queue)
        return True

    async def _collect(self) -> list[_Item]:
        first: _Item | None = None
        while first is None:
            await self._wait_for_item(None)
            first = self._take()
        batch = [first]
        rows = first.rows
        wait_until = first.enqueued_at + self._max_wait_s
        while rows < self._max_rows:
            if not self._queue:
                if self._closing:
                    break
                if not await self._wait_for_item(wait_until - self._clock()):
                    break
            item = self._take()
            if item is None:
                continue
            if rows + item.rows > self._max_rows:
                self._queue.appendleft(item)  # never split: it heads the next batch
                break
            batch.append(item)
            rows += item.rows
        self._observer.queue_depth(len(self._queue))
        return batch

    async def _execute(self, batch: list[_Item]) -> None:
        try:
            now = self._clock()
            for item in batch:
                item.dispatched_at = now
                self._observer.queue_wait(now - item.enqueued_at)
            rows = sum(item.rows for item in batch)
            links = [trace.Link(i.span_context) for i in batch if i.span_context is not None]
            with tracer.start_as_current_span(
                "modelsvc.batch",
                links=links,
                attributes={"meshserve.batch_size": rows, "meshserve.batch_requests": len(batch)},
            ):
                ctx = otel_context.get_current()
                loop = asyncio.get_running_loop()
                started = self._clock()
                try:
                    outputs = await loop.run_in_executor(
                        self._executor, self._run_merged, [i.inputs for i in batch], rows, ctx
                    )
                except asyncio.CancelledError:
                    self._fail(batch, UnavailableError("model service shut down mid-batch"))
                    raise
                except MeshError as exc:
                    self._fail(batch, exc)
                    return
                except Exception as exc:
                    log.exception("batch of %d rows failed", rows)
                    failure = InternalError(f"model execution failed ({type(exc).__name__})")
                    self._fail(batch, failure)
                    return
                compute_s = self._clock() - started
            self._observer.batch_done(rows, len(batch), compute_s)
            offset = 0
            for item in batch:
                if len(batch) == 1:
                    own = outputs
                else:
                    end = offset + item.rows
                    own = {name: value[offset:end] for name, value in outputs.items()}
                offset += item.rows
                stats = BatchStats(
                    batch_size=rows,
                    batch_requests=len(batch),
                    queue_wait_us=int((item.dispatched_at - item.enqueued_at) * 1e6),
                    compute_us=int(compute_s * 1e6),
                )
                if not item.future.done():
                    item.future.set_result(BatchResult(own, stats))
        finally:
            self._slots.release()

    def _run_merged(self, parts: Sequence[Arrays], rows: int, ctx: Any) -> Arrays:
        """Executor thread: concatenate, run, check one output row per input row."""
        token = otel_context.attach(ctx)
        try:
            if len(parts) == 1:
                merged = parts[0]
            else:
                merged = {
                    name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]
                }
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

    @staticmethod
    def _fail(batch: Sequence[_Item], exc: BaseException) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)
