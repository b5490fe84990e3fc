"""Execution of the dynamic batcher's batches: inline or in the executor, and what they report.

`BatchRunner` stacks a batch's inputs (meshserve/rows.py), calls the model, enforces one output
row per input row and measures the compute. A batch whose expected compute (`ComputeEstimate`:
EWMA of past calls, scaled by rows) is at most ``inline_max_us`` runs on the event loop thread,
since a thread hand-off each way costs more than such a call; every other batch runs in the
executor, which hands the result back with one ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace

from meshserve.clock import Clock
from meshserve.errors import UnavailableError
from meshserve.rows import Arrays, Part, check_rows, stack

if TYPE_CHECKING:
    from meshserve.modelsvc.batch_queue import Batch

__all__ = [
    "BatchObserver",
    "BatchResult",
    "BatchRunner",
    "BatchStats",
    "ComputeEstimate",
    "NoObserver",
    "RunBatch",
]

tracer = trace.get_tracer("meshserve.modelsvc.batcher")

# The model call: merged inputs -> merged outputs (runs in the executor thread).
RunBatch = Callable[[Arrays], Arrays]
# (outputs, error, compute seconds) of one batch.
Outcome = tuple[Arrays | None, BaseException | None, float]
# Event loop callback that takes a batch's outcome.
Complete = Callable[["Batch", Arrays | None, BaseException | None, float], None]


@dataclass(frozen=True)
class BatchStats:
    """How one request was executed."""

    batch_size: int
    batch_requests: int
    queue_wait_us: int
    compute_us: int


@dataclass(frozen=True)
class BatchResult:
    """One request's own rows of the outputs, how its batch ran, and the batch's span (None
    while tracing is off)."""

    outputs: Arrays
    stats: BatchStats
    batch_span: trace.SpanContext | None = None


class BatchObserver(Protocol):
    """Metrics sink of the batcher."""

    def queue_depth(self, depth: int) -> None: ...

    def batch_done(self, rows: int, requests: int, compute_s: float) -> None: ...

    def queue_wait(self, wait_s: float) -> None: ...


class NoObserver:
    """A `BatchObserver` that records nothing."""

    def queue_depth(self, depth: int) -> None:
        pass

    def batch_done(self, rows: int, requests: int, compute_s: float) -> None:
        pass

    def queue_wait(self, wait_s: float) -> None:
        pass


class ComputeEstimate:
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


class BatchRunner:
    """Runs batches of merged requests and hands each outcome to `complete` on the loop.

    `executor` None: the runner owns a pool of `max_workers` threads, shut down by `shutdown`.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        complete: Complete,
        *,
        executor: concurrent.futures.Executor | None,
        max_workers: int,
        inline_max_s: float,
        clock: Clock,
    ) -> None:
        self._run_batch = run_batch
        self._complete = complete
        self._own_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="modelsvc-batch"
        )
        self._inline_max_s = inline_max_s
        self._clock = clock
        self.compute = ComputeEstimate()

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: Batch,
        ctx: Any,
    ) -> None:
        """Run `batch` inline (outcome delivered on the next loop turn) or in the executor."""
        if self.compute.expected_s(batch.rows) <= self._inline_max_s:
            loop.call_soon(self._complete, batch, *self._execute(batch.items, batch.rows, ctx))
            return
        try:
            self._executor.submit(self._work, loop, batch, ctx)
        except RuntimeError:  # the executor was shut down
            self._complete(batch, None, UnavailableError("model service is shutting down"), 0.0)

    def shutdown(self) -> None:
        """Stop the owned pool (a shared executor is left alone); running calls are dropped."""
        if self._own_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- executor thread --------------------------------------------------------------------

    def _work(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: Batch,
        ctx: Any,
    ) -> None:
        """Executor thread: run the batch, hand the result back in one loop callback."""
        result = self._execute(batch.items, batch.rows, ctx)
        try:
            loop.call_soon_threadsafe(self._complete, batch, *result)
        except RuntimeError:
            pass  # the loop is closed: nobody waits for this batch any more

    def _execute(self, parts: Sequence[Part], rows: int, ctx: Any) -> Outcome:
        """(outputs, error, compute seconds) of one batch, on whichever thread calls it."""
        started = self._clock()
        try:
            return self._run_merged(parts, rows, ctx), None, self._clock() - started
        except Exception as exc:
            return None, exc, self._clock() - started

    def _run_merged(self, parts: Sequence[Part], rows: int, ctx: Any) -> Arrays:
        """Stack, run, check one output row per input row."""
        merged = dict(stack(parts))
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
            check_rows(outputs, rows)
        return outputs
