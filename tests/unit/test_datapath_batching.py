"""MicroBatcher with an in-memory send (logic above the replica) on a ManualClock: batches are
held with events, payloads randomised to catch reordering, and time (max wait, lingering,
deadlines, round trips) moves only when a test advances it; never a sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import numpy as np
import pytest

from meshserve.clock import ManualClock
from meshserve.errors import DeadlineExceededError, InternalError
from meshserve.orchestrator.datapath.batching import (
    BatchEntry,
    MicroBatcher,
    build_request,
    entry_key,
    split_response,
)
from meshserve.orchestrator.datapath.config import BatchConfig
from meshserve.tensors import from_numpy, to_numpy
from meshserve.v1 import model_pb2

T = TypeVar("T")


class FakeModel:
    """Doubles its input; records the rows of every batch; can hold batches on an event.

    A batch takes `rtt_s` on the clock; `waits` records how long each batch's first call waited.
    """

    def __init__(self, clock: ManualClock, rtt_s: float = 0.0) -> None:
        self.clock = clock
        self.rtt_s = rtt_s
        self.batches: list[int] = []
        self.waits: list[float] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self._sent = asyncio.Condition()

    async def send(self, entries: list[BatchEntry]) -> None:
        request = build_request(entries)
        self.waits.append(self.clock() - min(e.enqueued for e in entries))
        self.batches.append(sum(e.rows for e in entries))
        async with self._sent:
            self._sent.notify_all()
        if self.rtt_s:
            await self.clock.sleep(self.rtt_s)
        await self.gate.wait()
        x = to_numpy(request.inputs["input"])
        response = model_pb2.InferResponse(id=request.id)
        response.outputs["out"].CopyFrom(from_numpy(x * 2))
        for entry, result in zip(entries, split_response("m", response, entries), strict=True):
            if not entry.future.done():
                entry.future.set_result(result)

    async def sent(self, n: int) -> None:
        """Wait until `n` batches were sent."""
        async with self._sent:
            await self._sent.wait_for(lambda: len(self.batches) >= n)


async def settle() -> None:
    """Let every callback and task that is ready run (the clock stands still)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def drive(clock: ManualClock, aw: Awaitable[T], step_s: float = 0.001) -> T:
    """Await `aw` while moving the clock on in steps of `step_s` (fakes' round trips, timers)."""
    task = asyncio.ensure_future(aw)
    for _ in range(100_000):
        await settle()
        if task.done():
            return task.result()
        clock.advance(step_s)
    raise AssertionError(f"still pending after {100_000 * step_s:.0f} s on the clock")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make(
    fake: FakeModel,
    limit: int = 1,
    max_rows: int = 64,
    wait_us: int = 200_000,
    linger: bool = True,
) -> MicroBatcher:
    config = BatchConfig(max_batch_rows=max_rows, max_wait_us=wait_us, linger=linger)
    return MicroBatcher(
        "m", config, fake.send, lambda: limit, lambda: None, clock=fake.clock, timers=fake.clock
    )


def entry(clock: ManualClock, x: np.ndarray, timeout_s: float = 5.0) -> BatchEntry:
    key, rows = entry_key({"input": x}, (), "")
    loop = asyncio.get_running_loop()
    return BatchEntry({"input": x}, rows, key, clock() + timeout_s, loop.create_future())


def payload(rng: np.random.Generator, rows: int = 0) -> np.ndarray:
    return rng.random((rows or int(rng.integers(1, 5)), 3), dtype=np.float32)


async def test_a_lone_call_is_sent_at_once(clock: ManualClock) -> None:
    fake = FakeModel(clock)
    batcher = make(fake, wait_us=5_000_000)
    x = payload(np.random.default_rng(1), 2)
    out = await batcher.submit(entry(clock, x))  # the clock never moves: nothing waited
    np.testing.assert_array_equal(out["out"], x * 2)
    assert fake.batches == [2] and fake.waits == [0.0]


async def test_calls_arriving_while_the_pipe_is_busy_merge_and_get_their_own_rows(
    clock: ManualClock,
) -> None:
    fake = FakeModel(clock)
    batcher = make(fake)
    rng = np.random.default_rng(5)
    fake.gate.clear()
    first = asyncio.ensure_future(batcher.submit(entry(clock, payload(rng))))
    await fake.sent(1)
    assert batcher.in_flight == 1
    xs = [payload(rng) for _ in range(20)]
    calls = [asyncio.ensure_future(batcher.submit(entry(clock, x))) for x in xs]
    await settle()
    assert len(fake.batches) == 1  # waiting for the busy pipe
    fake.gate.set()
    results = await asyncio.gather(first, *calls)
    for x, out in zip(xs, results[1:], strict=True):
        np.testing.assert_array_equal(out["out"], x * 2)
    assert fake.batches[1] == sum(len(x) for x in xs)


async def test_same_tick_arrivals_are_spread_over_free_slots(clock: ManualClock) -> None:
    fake = FakeModel(clock)
    batcher = make(fake, limit=3)
    rng = np.random.default_rng(2)
    xs = [payload(rng, 1) for _ in range(30)]
    results = await asyncio.gather(*(batcher.submit(entry(clock, x)) for x in xs))
    assert fake.batches == [10, 10, 10]
    for x, out in zip(xs, results, strict=True):
        np.testing.assert_array_equal(out["out"], x * 2)


async def test_full_batches_go_without_a_free_slot_and_the_rest_after_max_wait(
    clock: ManualClock,
) -> None:
    fake = FakeModel(clock)
    batcher = make(fake, max_rows=8, wait_us=50_000)
    rng = np.random.default_rng(3)
    fake.gate.clear()
    busy = asyncio.ensure_future(batcher.submit(entry(clock, payload(rng, 1))))
    await fake.sent(1)
    xs = [payload(rng, 1) for _ in range(10)]
    calls = [asyncio.ensure_future(batcher.submit(entry(clock, x))) for x in xs]
    await fake.sent(2)
    await settle()
    assert fake.batches == [1, 8]  # the full one left at once
    clock.advance(0.0499)
    await settle()
    assert fake.batches == [1, 8]  # not yet: max_wait_us has not passed
    clock.advance(0.0001)
    await fake.sent(3)
    assert fake.batches == [1, 8, 2]  # the rest after max_wait, pipe still busy
    fake.gate.set()
    results = await asyncio.gather(busy, *calls)
    for x, out in zip(xs, results[1:], strict=True):
        np.testing.assert_array_equal(out["out"], x * 2)


async def test_cancelled_and_timed_out_calls_are_skipped(clock: ManualClock) -> None:
    fake = FakeModel(clock)
    batcher = make(fake, wait_us=30_000)
    rng = np.random.default_rng(4)
    fake.gate.clear()
    busy = asyncio.ensure_future(batcher.submit(entry(clock, payload(rng, 1))))
    await fake.sent(1)
    doomed = asyncio.ensure_future(batcher.submit(entry(clock, payload(rng, 3))))
    late = asyncio.ensure_future(batcher.submit(entry(clock, payload(rng, 4), timeout_s=0.01)))
    x = payload(rng, 2)
    kept = asyncio.ensure_future(batcher.submit(entry(clock, x)))
    await asyncio.sleep(0)
    doomed.cancel()
    clock.advance(0.01)  # late's deadline; max_wait_us (30 ms) is still to come
    with pytest.raises(DeadlineExceededError, match="deadline passed"):
        await late
    fake.gate.set()
    _, out = await drive(clock, asyncio.gather(busy, kept))
    np.testing.assert_array_equal(out["out"], x * 2)
    assert fake.batches == [1, 2]


async def test_incompatible_calls_are_not_merged(clock: ManualClock) -> None:
    fake = FakeModel(clock)
    batcher = make(fake)
    fake.gate.clear()
    busy = asyncio.ensure_future(batcher.submit(entry(clock, np.ones((1, 3), np.float32))))
    await fake.sent(1)
    a = asyncio.ensure_future(batcher.submit(entry(clock, np.ones((2, 3), np.float32))))
    b = asyncio.ensure_future(batcher.submit(entry(clock, np.ones((2, 5), np.float32))))
    c = asyncio.ensure_future(batcher.submit(entry(clock, np.ones((2, 3), np.float64))))
    fake.gate.set()
    await asyncio.gather(busy, a, b, c)
    assert sorted(fake.batches) == [1, 2, 2, 2]


def test_misaligned_outputs_fail_the_batch_naming_the_output() -> None:
    loop = asyncio.new_event_loop()
    try:
        entries = [
            BatchEntry({"input": np.ones((1, 3))}, 1, None, 0.0, loop.create_future()),
            BatchEntry({"input": np.ones((2, 3))}, 2, None, 0.0, loop.create_future()),
        ]
        response = model_pb2.InferResponse()
        response.outputs["total"].CopyFrom(from_numpy(np.ones((1,), np.float32)))
        with pytest.raises(InternalError, match="output 'total' has shape \\[1\\]"):
            split_response("m", response, entries)
    finally:
        loop.close()


@pytest.mark.parametrize(
    ("inputs", "batchable"),
    [
        ({"a": np.ones((2, 3)), "b": np.ones((2,))}, True),
        ({"a": np.ones((2, 3)), "b": np.ones((3,))}, False),
        ({"a": np.float32(1.0)}, False),
        ({"a": np.ones((0, 3))}, False),
    ],
)
def test_entry_key_only_batches_row_aligned_inputs(
    inputs: dict[str, np.ndarray], batchable: bool
) -> None:
    key, _ = entry_key({k: np.asarray(v) for k, v in inputs.items()}, (), "")
    assert (key is not None) == batchable


@pytest.mark.parametrize("linger", [True, False])
async def test_a_stream_of_calls_faster_than_the_round_trip_waits_for_company(
    clock: ManualClock, linger: bool
) -> None:
    model = FakeModel(clock, rtt_s=0.04)
    batcher = make(model, wait_us=300_000, linger=linger)
    rng = np.random.default_rng(6)

    async def burst() -> list[tuple[np.ndarray, asyncio.Future[dict[str, np.ndarray]]]]:
        calls = []
        for _ in range(8):
            x = payload(rng, 1)
            calls.append((x, asyncio.ensure_future(batcher.submit(entry(clock, x)))))
            await settle()
            clock.advance(0.002)
        return calls

    async def replies(
        calls: list[tuple[np.ndarray, asyncio.Future[dict[str, np.ndarray]]]],
    ) -> None:
        results = await drive(clock, asyncio.gather(*(call for _, call in calls)))
        for (x, _), out in zip(calls, results, strict=True):
            np.testing.assert_array_equal(out["out"], x * 2)

    first = asyncio.ensure_future(batcher.submit(entry(clock, payload(rng, 1))))  # measures the rtt
    await settle()
    clock.advance(0.005)
    calls = await burst()
    await replies(calls)  # queued behind the busy pipe: merged anyway
    await first
    assert model.batches[:2] == [1, 8]
    await replies(await burst())  # the pipe is free when this burst starts
    later = model.batches[2:]
    if linger:
        assert later[0] > 1 and len(later) <= 2, later  # waited for the calls still coming
    else:
        assert later[0] == 1, later  # the free pipe took the first call alone


@pytest.mark.parametrize("callers", [1, 4])
async def test_callers_that_come_back_only_after_their_reply_never_wait(
    clock: ManualClock, callers: int
) -> None:
    model = FakeModel(clock, rtt_s=0.005)
    batcher = make(model, wait_us=300_000)
    rng = np.random.default_rng(callers)

    async def closed_loop() -> None:
        for _ in range(12):
            x = payload(rng)
            np.testing.assert_array_equal((await batcher.submit(entry(clock, x)))["out"], x * 2)

    await drive(clock, asyncio.gather(*(closed_loop() for _ in range(callers))))
    assert len(model.waits) >= 12
    # Nobody arrives during a round trip: lingering would only delay the callers.
    assert max(model.waits) == 0.0, model.waits
