"""Client-side streaming batching: coalesce concurrent calls to one model into micro-batches.

Contract:
- Calls are grouped by a compatibility key (input names, dtypes and per-row shapes, requested
  outputs, version); a batch only holds calls with equal keys. Calls whose inputs do not share
  one first ("rows") dimension are sent alone.
- A batch is sent when it holds `max_batch_rows` rows, when its oldest call waited `max_wait_us`,
  or at once (end of the current event-loop turn) while fewer than `eager_limit()` batches of the
  model are in flight and no company is coming: an idle pipe gains nothing from waiting, so
  concurrency 1 pays no wait. Queued rows are spread over the free pipe slots. A single call
  larger than the limit goes alone (never split). The first call of a turn does that flush itself
  and sends a batch that holds only itself from its own task (no task, no extra wake-up).
- Lingering (``BatchConfig.linger``): when calls keep arriving during batches' round trips -
  more of them per round trip than there are free pipes (EWMAs of the rate seen while a batch
  is in flight, and of the round trip) - a free pipe still waits for company while calls keep
  coming: until the arrivals pause for two expected gaps, the batch is full, or `max_wait_us`
  passed. Under saturation this trades a wait the calls would spend queued upstream anyway for
  fewer, larger batches (less CPU per row in the orchestrator and the replicas). Callers that
  only come back when their batch replies (a closed loop, concurrency 1) never arrive during a
  round trip, so nothing waits for them.
- Inputs are stacked along the first dimension into one request; each attempt of it carries,
  for every caller, the traceparent of that caller's own CLIENT span (datapath/spans.py); each
  output's rows are sliced back so every caller gets exactly its own rows
  (an output whose first dimension is not the batch's row count fails the batch, naming it).
  The row rules are meshserve/rows.py, shared with the replica's batcher.
- Time: an injected monotonic clock and timers on it (meshserve/clock.py); the deadline of
  every call and the max-wait / linger wake-ups are timers.
- A call cancelled or timed out before its batch is sent is skipped; one failing batch fails
  exactly its callers with the same error.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from opentelemetry.trace import SpanContext

from meshserve.clock import LOOP_TIMERS, Clock, TimerHandle, Timers
from meshserve.errors import DeadlineExceededError, InternalError
from meshserve.orchestrator.datapath.config import BatchConfig
from meshserve.rows import check_rows, row_signature, split_rows, stack
from meshserve.tensors import from_numpy, to_numpy
from meshserve.v1 import model_pb2

__all__ = ["BatchEntry", "MicroBatcher", "build_request", "split_response"]

_ids = itertools.count(1)
_ID_PREFIX = f"{os.getpid():x}-{id(_ids) & 0xFFFF:x}"


def next_request_id() -> str:
    return f"{_ID_PREFIX}-{next(_ids)}"


@dataclass
class BatchEntry:
    """One caller's rows waiting for (or riding in) a batch."""

    inputs: Mapping[str, np.ndarray]
    rows: int
    key: Any
    deadline: float
    future: asyncio.Future[dict[str, np.ndarray]]
    output_names: tuple[str, ...] = ()
    version: str = ""
    parent: SpanContext | None = None  # the caller's span (None: no SDK or no span)
    enqueued: float = 0.0


def entry_key(
    inputs: Mapping[str, np.ndarray], output_names: Sequence[str], version: str
) -> tuple[Any, int]:
    """(compatibility key, rows); the key is None when the call cannot share a batch."""
    signature, rows = row_signature(inputs)
    if signature is None:
        return None, rows
    return (signature, tuple(output_names), version), rows


def build_request(entries: Sequence[BatchEntry]) -> model_pb2.InferRequest:
    """One InferRequest with every entry's rows stacked in order."""
    first = entries[0]
    request = model_pb2.InferRequest(id=next_request_id(), output_names=first.output_names)
    for name, stacked in stack(entries).items():
        request.inputs[name].CopyFrom(from_numpy(stacked))
    return request  # the router sets traceparents per attempt (datapath/spans.py)


def split_response(
    model: str, response: model_pb2.InferResponse, entries: Sequence[BatchEntry]
) -> list[dict[str, np.ndarray]]:
    """Every entry's own rows of every output, in entry order."""
    outputs = {name: to_numpy(t, name) for name, t in response.outputs.items()}
    if len(entries) > 1:
        check_rows(
            outputs,
            sum(e.rows for e in entries),
            what=f"model '{model}': ",
            hint="; disable client batching for models whose outputs are not row-aligned",
        )
    return split_rows(outputs, entries)


SendBatch = Callable[[list[BatchEntry]], Awaitable[None]]


class MicroBatcher:
    """Queues calls of one model and sends micro-batches through `send`.

    `send(entries)` must settle every entry's future (result or exception). `eager_limit()`
    says how many batches may be in flight before calls start to wait for company;
    `rows_cap()` the replicas' advertised batch_max (None when unknown).
    """

    def __init__(
        self,
        model: str,
        config: BatchConfig,
        send: SendBatch,
        eager_limit: Callable[[], int],
        rows_cap: Callable[[], int | None],
        clock: Clock = time.monotonic,
        timers: Timers = LOOP_TIMERS,
    ) -> None:
        self.model = model
        self._config = config
        self._send = send
        self._eager_limit = eager_limit
        self._rows_cap = rows_cap
        self._clock = clock
        self._timers = timers
        self._queues: dict[Any, list[BatchEntry]] = {}
        self._in_flight = 0
        self._flush_scheduled = False
        self._timer: TimerHandle | None = None
        self._timer_at = math.inf
        self._pace = _Pace()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def submit(self, entry: BatchEntry) -> dict[str, np.ndarray]:
        """Queue `entry` and await its rows of the outputs."""
        entry.enqueued = self._clock()
        self._pace.arrived(entry.enqueued)
        remaining = entry.deadline - entry.enqueued
        # A timer that fails the future at the deadline (a skipped entry from then on), rather
        # than asyncio.wait_for: one wake-up less per call.
        timer = self._timers.call_at(entry.deadline, self._expire, entry.future, remaining)
        try:
            if entry.key is None:
                self._dispatch([entry])
            else:
                self._queues.setdefault(entry.key, []).append(entry)
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    await self._lead(entry)
            return await entry.future
        except asyncio.CancelledError:
            entry.future.cancel()  # skipped by any batch not sent yet
            raise
        finally:
            timer.cancel()

    async def _lead(self, entry: BatchEntry) -> None:
        """The first call of a loop turn flushes the queues at the end of that turn (what a
        ``call_soon(_flush)`` would do) and, when it goes alone in its batch, sends that batch in
        its own task: a lone call (concurrency 1) pays no task and no extra wake-up."""
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            asyncio.get_running_loop().call_soon(self._flush)  # the others still go
            raise
        solo = self._flush(lead=entry)
        if solo is not None:
            await self._run(solo, inline=True)

    def _expire(self, future: asyncio.Future[dict[str, np.ndarray]], budget_s: float) -> None:
        if not future.done():
            future.set_exception(
                DeadlineExceededError(
                    f"model '{self.model}': deadline passed while waiting for the model "
                    f"({budget_s:.3f}s budget)"
                )
            )

    def _max_rows(self) -> int:
        cap = self._rows_cap()
        rows = self._config.max_batch_rows
        return max(1, min(rows, cap) if cap else rows)

    def _flush(
        self, *, timer: bool = False, lead: BatchEntry | None = None
    ) -> list[BatchEntry] | None:
        """Dispatch what may go now. A batch holding only `lead` is not dispatched but returned
        (counted in flight) for the leading call to send itself."""
        self._flush_scheduled = False
        solo: list[BatchEntry] | None = None
        if timer:
            self._timer, self._timer_at = None, math.inf
        max_rows = self._max_rows()
        limit = self._eager_limit()  # readiness does not change while this loop runs
        max_wait_s = self._config.max_wait_us / 1e6
        now = self._clock()
        wake_at = math.inf
        for key in list(self._queues):
            queue = [e for e in self._queues[key] if not e.future.done()]
            while queue:
                free = limit - self._in_flight
                rows = sum(e.rows for e in queue)
                deadline = queue[0].enqueued + max_wait_s
                if rows >= max_rows or now >= deadline - 1e-4:
                    take = max_rows
                elif free <= 0:
                    wake_at = min(wake_at, deadline)
                    break
                elif self._config.linger and (quiet_at := self._pace.linger_until(now, limit)):
                    wake_at = min(wake_at, deadline, quiet_at)
                    break
                else:
                    take = max(1, math.ceil(rows / free))
                batch, queue = _take(queue, take)
                if lead is not None and len(batch) == 1 and batch[0] is lead:
                    self._in_flight += 1
                    solo = batch
                else:
                    self._dispatch(batch)
            if queue:
                self._queues[key] = queue
            else:
                del self._queues[key]
        if wake_at < self._timer_at - 1e-4:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = wake_at
            self._timer = self._timers.call_at(wake_at, self._on_timer)
        return solo

    def _on_timer(self) -> None:
        self._flush(timer=True)

    def _dispatch(self, batch: list[BatchEntry]) -> None:
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[BatchEntry], inline: bool = False) -> None:
        try:
            started, arrivals = self._clock(), self._pace.arrivals
            await self._send(batch)
            self._pace.returned(arrivals, self._clock() - started)
        except BaseException as exc:  # settle every caller, whatever happened
            for entry in batch:
                if entry.future.done():
                    continue
                if isinstance(exc, Exception):
                    entry.future.set_exception(exc)
                elif inline:  # the lone caller itself was cancelled
                    entry.future.cancel()
                else:
                    entry.future.set_exception(InternalError("batch cancelled"))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._in_flight -= 1
            if self._queues and not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        for queue in self._queues.values():
            for entry in queue:
                if not entry.future.done():
                    entry.future.set_exception(InternalError("model caller closed"))
        self._queues.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class _Pace:
    """How fast calls arrive on their own, and how long a batch's round trip takes.

    The arrival rate is sampled only while a batch is in flight (calls that came during its
    round trip / the round trip): calls released by this batcher's own replies (a closed loop of
    callers) do not count, so lingering cannot feed on the waits it causes. Both EWMAs start
    from their first sample; until then nothing lingers.
    """

    ALPHA = 0.2

    def __init__(self) -> None:
        self.arrivals = 0
        self.last_arrival = -math.inf
        self.rate_per_s = 0.0
        self.rtt_s = 0.0

    def arrived(self, now: float) -> None:
        self.arrivals += 1
        self.last_arrival = now

    def returned(self, arrivals_at_send: int, rtt_s: float) -> None:
        rate = (self.arrivals - arrivals_at_send) / max(rtt_s, 1e-6)
        if self.rtt_s == 0.0:
            self.rtt_s, self.rate_per_s = rtt_s, rate
        else:
            self.rtt_s += self.ALPHA * (rtt_s - self.rtt_s)
            self.rate_per_s += self.ALPHA * (rate - self.rate_per_s)

    def linger_until(self, now: float, limit: int) -> float:
        """Until when a free pipe should wait for company (0.0: do not wait).

        Company is expected while more calls arrive per round trip than there are pipes
        (`limit`), and until the arrivals pause for two expected gaps.
        """
        if self.rate_per_s * self.rtt_s < max(limit, 1):
            return 0.0
        quiet_at = self.last_arrival + 2.0 / self.rate_per_s
        return quiet_at if quiet_at > now else 0.0


def _take(queue: list[BatchEntry], rows: int) -> tuple[list[BatchEntry], list[BatchEntry]]:
    """Split off entries from the head of `queue` up to `rows` rows (at least one entry)."""
    total = 0
    for i, entry in enumerate(queue):
        if i > 0 and total + entry.rows > rows:
            return queue[:i], queue[i:]
        total += entry.rows
    return queue, []
