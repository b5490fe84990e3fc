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
- **Runs off the loop.** Concatenation along dim 0, the model call and nothing else run in the
  executor; each caller gets zero-copy views of its own rows back. At most
  ``max_concurrent_batches`` batches run at once.
- **One result per input, enforced.** Every output of a merged call must have exactly the batch's
  rows in dim 0; otherwise every request in it fails with InternalError.
- **Shutdown with a deadline.** ``stop(timeout_s)`` refuses new requests (UnavailableError), runs
  what is queued, waits for running batches until the deadline, then fails what is left.
- **Metrics** through a `BatchObserver` (sizes, queue wait, compute, queue depth).

Dispatch is event driven (no dispatcher task): a submit or a finished batch schedules one
``_pump`` on the loop, and a timer covers ``max_wait_us``. Time comes from an injectable
monotonic clock.
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


