"""MicroBatcher with an in-memory send (logic above the replica): batches are held with events
and payloads randomised to catch reordering."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

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


class FakeModel:
    """Doubles its input; records the rows of every batch; can hold batches on an event."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, entries: list[BatchEntry]) -> None:
        request = build_request(entries)
        self.batches.append(sum(e.rows for e in entries))
        await self.gate.wait()
        x = to_numpy(request.inputs["input"])
        response = model_pb2.InferResponse(id=request.id)
        response.outputs["out"].CopyFrom(from_numpy(x * 2))
        for entry, result in zip(entries, split_response("m", response, entries), strict=True):
            if not entry.future.done():
                entry.future.set_result(result)


def make(
    fake: FakeModel, limit: int = 1, max_rows: int = 64, wait_us: int = 200_000
) -> MicroBatcher:
    return MicroBatcher(
        "m", BatchConfig(max_batch_rows=max_rows, max_wait_us=wait_us), fake.send,
        lambda: limit, lambda: None,
    )  # fmt: skip


def entry(x: np.ndarray, timeout_s: float = 5.0) -> BatchEntry:
    key, rows = entry_key({"input": x}, (), "")
    loop = asyncio.get_running_loop()
    return BatchEntry({"input": x}, rows, key, loop.time() + timeout_s, loop.create_future())


def payload(rng: np.random.Generator) -> np.ndarray:
    return rng.random((int(rng.integers(1, 5)), 3), dtype=np.float32)


async def test_a_lone_call_is_sent_at_once() -> None:
    fake = FakeModel()
    batcher = make(fake, wait_us=5_000_000)
    x = np.ones((2, 3), np.float32)
    out = await asyncio.wait_for(batcher.submit(entry(x)), 0.5)
    np.testing.assert_array_equal(out["out"], x * 2)
    assert fake.batches == [2]


async def test_calls_arriving_while_the_pipe_is_busy_merge_and_get_their_own_rows() -> None:
    fake = FakeModel()
    batcher = make(fake)
    rng = np.random.default_rng(5)
    fake.gate.clear()
    first = asyncio.ensure_future(batcher.submit(entry(payload(rng))))
    await asyncio.sleep(0.01)
    assert len(fake.batches) == 1 and batcher.in_flight == 1
    xs = [payload(rng) for _ in range(20)]
    calls = [asyncio.ensure_future(batcher.submit(entry(x))) for x in xs]
    await asyncio.sleep(0.01)
    assert len(fake.batches) == 1  # waiting for the busy pipe
    fake.gate.set()
    results = await asyncio.gather(first, *calls)
    for x, out in zip(xs, results[1:], strict=True):
        np.testing.assert_array_equal(out["out"], x * 2)
    assert fake.batches[1] == sum(len(x) for x in xs)


async def test_same_tick_arrivals_are_spread_over_free_slots() -> None:
    fake = FakeModel()
    batcher = make(fake, limit=3)
    xs = [np.full((1, 3), i, np.float32) for i in range(30)]
    results = await asyncio.gather(*(batcher.submit(entry(x)) for x in xs))
    assert fake.batches == [10, 10, 10]
    for x, out in zip(xs, results, strict=True):
        np.testing.assert_array_equal(out["out"], x * 2)


async def test_full_batches_go_without_a_free_slot_and_the_rest_after_max_wait() -> None:
    fake = FakeModel()
    batcher = make(fake, max_rows=8, wait_us=50_000)
    fake.gate.clear()
    busy = asyncio.ensure_future(batcher.submit(entry(np.ones((1, 3), np.float32))))
    await asyncio.sleep(0.01)
    calls = [
        asyncio.ensure_future(batcher.submit(entry(np.ones((1, 3), np.float32)))) for _ in range(10)
    ]
    await asyncio.sleep(0.01)
    assert fake.batches == [1, 8]  # the full one left at once
    await asyncio.sleep(0.08)
    assert fake.batches == [1, 8, 2]  # the rest after max_wait, pipe still busy
    fake.gate.set()
    await asyncio.gather(busy, *calls)


async def test_cancelled_and_timed_out_calls_are_skipped() -> None:
    fake = FakeModel()
    batcher = make(fake, wait_us=30_000)
    fake.gate.clear()
    busy = asyncio.ensure_future(batcher.submit(entry(np.ones((1, 3), np.float32))))
    await asyncio.sleep(0.01)
    doomed = asyncio.ensure_future(batcher.submit(entry(np.ones((3, 3), np.float32))))
    late = asyncio.ensure_future(batcher.submit(entry(np.ones((4, 3), np.float32), 0.01)))
    kept = asyncio.ensure_future(batcher.submit(entry(np.ones((2, 3), np.float32))))
    await asyncio.sleep(0)
    doomed.cancel()
    with pytest.raises(DeadlineExceededError, match="deadline passed"):
        await late
    fake.gate.set()
    await asyncio.gather(busy, kept)
    assert fake.batches == [1, 2]


async def test_incompatible_calls_are_not_merged() -> None:
    fake = FakeModel()
    batcher = make(fake)
    fake.gate.clear()
    busy = asyncio.ensure_future(batcher.submit(entry(np.ones((1, 3), np.float32))))
    await asyncio.sleep(0.01)
    a = asyncio.ensure_future(batcher.submit(entry(np.ones((2, 3), np.float32))))
    b = asyncio.ensure_future(batcher.submit(entry(np.ones((2, 5), np.float32))))
    c = asyncio.ensure_future(batcher.submit(entry(np.ones((2, 3), np.float64))))
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


class SlowModel(FakeModel):
    """FakeModel whose every batch takes `rtt_s`; records how long each batch's first call
    waited in the queue."""

    def __init__(self, rtt_s: float) -> None:
        super().__init__()
        self.rtt_s = rtt_s
        self.waits: list[float] = []

    async def send(self, entries: list[BatchEntry]) -> None:
        self.waits.append(time.monotonic() - min(e.enqueued for e in entries))
        await asyncio.sleep(self.rtt_s)
        await super().send(entries)


@pytest.mark.parametrize("linger", [True, False])
async def test_a_stream_of_calls_faster_than_the_round_trip_waits_for_company(linger: bool) -> None:
    model = SlowModel(rtt_s=0.04)
    batcher = MicroBatcher(
        "m", BatchConfig(max_wait_us=300_000, linger=linger), model.send, lambda: 1, lambda: None
    )
    one = np.ones((1, 3), np.float32)

    async def burst() -> list[asyncio.Future]:
        calls = []
        for _ in range(8):
            calls.append(asyncio.ensure_future(batcher.submit(entry(one))))
            await asyncio.sleep(0.002)
        return calls

    first = asyncio.ensure_future(batcher.submit(entry(one)))  # measures the round trip
    await asyncio.sleep(0.005)
    await asyncio.gather(first, *await burst())  # queued behind the busy pipe: merged anyway
    assert model.batches[:2] == [1, 8]
    await asyncio.gather(*await burst())  # the pipe is free when this burst starts
    later = model.batches[2:]
    if linger:
        assert later[0] > 1 and len(later) <= 2, later  # waited for the calls still coming
    else:
        assert later[0] == 1, later  # the free pipe took the first call alone


@pytest.mark.parametrize("callers", [1, 4])
async def test_callers_that_come_back_only_after_their_reply_never_wait(callers: int) -> None:
    model = SlowModel(rtt_s=0.005)
    batcher = MicroBatcher(
        "m", BatchConfig(max_wait_us=300_000), model.send, lambda: 1, lambda: None
    )

    async def closed_loop() -> None:
        for _ in range(12):
            await batcher.submit(entry(np.ones((1, 3), np.float32)))

    await asyncio.gather(*(closed_loop() for _ in range(callers)))
    assert sum(model.batches) == 12 * callers
    # Nobody arrives during a round trip: lingering would only delay the callers.
    assert max(model.waits) < 0.003, model.waits
