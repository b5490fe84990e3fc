"""The dynamic batcher's contract on a ManualClock: batches are held open with events, time (max
wait, deadlines, the stop deadline) moves only when a test advances it; never a sleep."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from meshserve.clock import ManualClock
from meshserve.errors import (
    DeadlineExceededError,
    InternalError,
    OverloadedError,
    UnavailableError,
)
from meshserve.modelsvc.batcher import BatchResult, DynamicBatcher, RunBatch
from meshserve.modelsvc.config import BatchingConfig

LONG_WAIT_US = 30_000_000  # batches only close by filling up (or by a request that won't fit)


class Model:
    """A row-wise fake model (x -> 2x) that records batch sizes; `hold()` blocks the next call."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def hold(self) -> None:
        self.entered.clear()
        self.release.clear()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(int(inputs["x"].shape[0]))
        self.entered.set()
        assert self.release.wait(10), "test never released the held batch"
        return {"y": inputs["x"] * 2.0, "first": inputs["x"][:, 0].copy()}


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make(executor, clock: ManualClock):
    """DynamicBatcher(config, run_batch) on the test's executor and ManualClock."""

    def _make(config: BatchingConfig, run_batch: RunBatch) -> DynamicBatcher:
        return DynamicBatcher(config, run_batch, executor=executor, clock=clock, timers=clock)

    return _make


def rows(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((n, 3)).astype(np.float32)}


async def queued_up(batcher: DynamicBatcher, depth: int) -> None:
    """Yield to the loop until `depth` requests wait in the queue (no timed sleeps)."""
    for _ in range(10_000):
        if batcher.queue_depth >= depth:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"queue depth stayed at {batcher.queue_depth}, expected {depth}")


async def wait_entered(model: Model) -> None:
    assert await asyncio.to_thread(model.entered.wait, 10)


@pytest.fixture
def held(make):
    """A batcher whose first one-row batch is running in the model and held there.

    ``model, batcher, rng, first = await held(config, seed)``; ``model.release.set()`` lets it go.
    """

    async def _held(
        config: BatchingConfig, seed: int
    ) -> tuple[Model, DynamicBatcher, np.random.Generator, asyncio.Future[BatchResult]]:
        model = Model()
        batcher = make(config, model)
        rng = np.random.default_rng(seed)
        model.hold()
        first = asyncio.ensure_future(batcher.submit(rows(rng, 1), 1))
        await wait_entered(model)
        return model, batcher, rng, first

    return _held


async def test_concurrent_requests_merge_and_each_gets_its_own_rows(make) -> None:
    model = Model()
    batcher = make(BatchingConfig(max_batch_rows=8, max_wait_us=LONG_WAIT_US), model)
    rng = np.random.default_rng(7)
    sizes = [1, 3, 2, 2]  # 8 rows: the batch fills up and runs at once
    payloads = [rows(rng, n) for n in sizes]
    results = await asyncio.gather(*(batcher.submit(p, len(p["x"])) for p in payloads))
    assert model.calls == [8]
    for payload, result in zip(payloads, results, strict=True):
        np.testing.assert_array_equal(result.outputs["y"], payload["x"] * 2.0)
        np.testing.assert_array_equal(result.outputs["first"], payload["x"][:, 0])
        assert result.stats.batch_size == 8
        assert result.stats.batch_requests == 4
    await batcher.stop(1.0)


async def test_a_request_is_never_split(make) -> None:
    model = Model()
    batcher = make(BatchingConfig(max_batch_rows=4, max_wait_us=LONG_WAIT_US), model)
    rng = np.random.default_rng(1)
    a, b, c = rows(rng, 3), rows(rng, 2), rows(rng, 2)
    results = await asyncio.gather(*(batcher.submit(p, len(p["x"])) for p in (a, b, c)))
    # 3 rows, then 2 would overflow 4: it heads the next batch, which fills with c.
    assert model.calls == [3, 4]
    for payload, result in zip((a, b, c), results, strict=True):
        np.testing.assert_array_equal(result.outputs["y"], payload["x"] * 2.0)
    await batcher.stop(1.0)


async def test_oversized_request_runs_alone(make) -> None:
    model = Model()
    batcher = make(BatchingConfig(max_batch_rows=2, max_wait_us=LONG_WAIT_US), model)
    payload = rows(np.random.default_rng(2), 5)
    result = await batcher.submit(payload, 5)
    assert model.calls == [5]
    np.testing.assert_array_equal(result.outputs["y"], payload["x"] * 2.0)
    await batcher.stop(1.0)


async def test_requests_queued_behind_a_running_batch_are_merged(held) -> None:
    model, batcher, rng, first = await held(
        BatchingConfig(max_batch_rows=16, max_wait_us=0, max_concurrent_batches=1), 3
    )
    later = [rows(rng, 2) for _ in range(3)]
    tasks = [asyncio.ensure_future(batcher.submit(p, 2)) for p in later]
    await queued_up(batcher, 3)
    model.release.set()
    await first
    results = await asyncio.gather(*tasks)
    assert model.calls == [1, 6]
    for payload, result in zip(later, results, strict=True):
        np.testing.assert_array_equal(result.outputs["y"], payload["x"] * 2.0)
        assert result.stats.batch_requests == 3
    await batcher.stop(1.0)


async def test_full_queue_is_resource_exhausted_with_pushback(held) -> None:
    config = BatchingConfig(
        max_batch_rows=1, queue_max=2, max_concurrent_batches=1, overload_pushback_ms=75
    )
    model, batcher, rng, running = await held(config, 4)
    queued = [asyncio.ensure_future(batcher.submit(rows(rng, 1), 1)) for _ in range(2)]
    await queued_up(batcher, 2)
    with pytest.raises(OverloadedError) as info:
        await batcher.submit(rows(rng, 1), 1)
    assert info.value.retry_pushback_ms == 75
    assert "queue is full" in info.value.message
    model.release.set()
    await asyncio.gather(running, *queued)
    await batcher.stop(1.0)


async def test_expired_requests_are_dropped_before_inference(held, clock: ManualClock) -> None:
    model, batcher, rng, running = await held(
        BatchingConfig(max_batch_rows=1, max_concurrent_batches=1), 5
    )
    doomed = asyncio.ensure_future(batcher.submit(rows(rng, 1), 1, deadline=clock.now + 1.0))
    alive = asyncio.ensure_future(batcher.submit(rows(rng, 1), 1, deadline=clock.now + 60.0))
    await queued_up(batcher, 2)
    clock.advance(2.0)
    model.release.set()
    await running
    with pytest.raises(DeadlineExceededError):
        await doomed
    await alive
    assert model.calls == [1, 1]  # the expired one never reached the model
    with pytest.raises(DeadlineExceededError):
        await batcher.submit(rows(rng, 1), 1, deadline=clock.now - 0.1)
    await batcher.stop(1.0)


async def test_cancelled_requests_are_skipped(held) -> None:
    model, batcher, rng, running = await held(
        BatchingConfig(max_batch_rows=16, max_wait_us=0, max_concurrent_batches=1), 6
    )
    cancelled = asyncio.ensure_future(batcher.submit(rows(rng, 4), 4))
    kept = asyncio.ensure_future(batcher.submit(rows(rng, 2), 2))
    await queued_up(batcher, 2)
    cancelled.cancel()
    model.release.set()
    await running
    await kept
    assert model.calls == [1, 2]
    await batcher.stop(1.0)


async def test_batching_off_runs_one_request_per_call(make) -> None:
    model = Model()
    batcher = make(BatchingConfig(max_batch_rows=1), model)
    rng = np.random.default_rng(8)
    payloads = [rows(rng, 2) for _ in range(3)]
    results = await asyncio.gather(*(batcher.submit(p, 2) for p in payloads))
    assert model.calls == [2, 2, 2]
    assert all(r.stats.batch_size == 2 and r.stats.batch_requests == 1 for r in results)
    await batcher.stop(1.0)


async def test_output_rows_must_match_input_rows(make) -> None:
    def broken(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"][:1]}

    batcher = make(BatchingConfig(max_batch_rows=4, max_wait_us=LONG_WAIT_US), broken)
    rng = np.random.default_rng(9)
    results = await asyncio.gather(
        *(batcher.submit(rows(rng, 2), 2) for _ in range(2)), return_exceptions=True
    )
    assert all(isinstance(r, InternalError) for r in results)
    assert "needs 4 rows" in str(results[0])
    await batcher.stop(1.0)


async def test_model_exception_fails_the_batch_without_leaking_details(make) -> None:
    def boom(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("secret internal detail")

    batcher = make(BatchingConfig(max_batch_rows=1), boom)
    with pytest.raises(InternalError) as info:
        await batcher.submit(rows(np.random.default_rng(0), 1), 1)
    assert "secret" not in info.value.message
    await batcher.stop(1.0)


async def test_stop_drains_queued_work_then_refuses(held) -> None:
    model, batcher, rng, running = await held(
        BatchingConfig(max_batch_rows=1, max_concurrent_batches=1), 10
    )
    queued = asyncio.ensure_future(batcher.submit(rows(rng, 1), 1))
    await queued_up(batcher, 1)
    stopping = asyncio.ensure_future(batcher.stop(10.0))
    await asyncio.sleep(0)
    with pytest.raises(UnavailableError):
        await batcher.submit(rows(rng, 1), 1)
    model.release.set()
    await stopping
    await running
    await queued
    assert model.calls == [1, 1]


@pytest.mark.parametrize("timeout_s", [0.0, 5.0])
async def test_stop_deadline_fails_what_is_left(held, clock: ManualClock, timeout_s: float) -> None:
    model, batcher, rng, running = await held(
        BatchingConfig(max_batch_rows=1, max_concurrent_batches=1), 11
    )
    queued = asyncio.ensure_future(batcher.submit(rows(rng, 1), 1))
    await queued_up(batcher, 1)
    stopping = asyncio.ensure_future(batcher.stop(timeout_s))
    if timeout_s:
        await asyncio.sleep(0)  # stop() waits for the held batch until its deadline
        assert not stopping.done() and clock.pending() == [clock.now + timeout_s]
        clock.advance(timeout_s)
    await stopping
    with pytest.raises(UnavailableError):
        await queued
    model.release.set()
    with pytest.raises(UnavailableError):
        await running


async def test_idle_model_runs_a_lone_request_without_waiting(make) -> None:
    model = Model()
    batcher = make(BatchingConfig(max_batch_rows=32, max_wait_us=LONG_WAIT_US), model)
    payload = rows(np.random.default_rng(12), 1)
    # Nothing runs, so the request must not wait (30 s) for company: the clock never moves.
    result = await asyncio.wait_for(batcher.submit(payload, 1), 10.0)  # a hang guard only
    assert model.calls == [1]
    assert result.stats.batch_size == 1 and result.stats.queue_wait_us == 0
    np.testing.assert_array_equal(result.outputs["y"], payload["x"] * 2.0)
    await batcher.stop(1.0)


async def test_requests_accumulate_while_a_batch_runs_even_with_a_free_slot(
    held, clock: ManualClock
) -> None:
    model, batcher, rng, first = await held(
        BatchingConfig(max_batch_rows=16, max_wait_us=LONG_WAIT_US, max_concurrent_batches=2), 13
    )
    later = [rows(rng, int(n)) for n in rng.integers(1, 4, size=4)]
    tasks = [asyncio.ensure_future(batcher.submit(p, len(p["x"]))) for p in later]
    await queued_up(batcher, 4)
    for _ in range(100):  # the second slot is free, but the batch is neither full nor due
        await asyncio.sleep(0)
    assert model.calls == [1] and batcher.queue_depth == 4
    assert clock.pending() == [clock.now + LONG_WAIT_US / 1e6]  # the max-wait timer
    model.release.set()  # the model goes idle: everything that accumulated runs as one batch
    await first
    results = await asyncio.gather(*tasks)
    assert model.calls == [1, sum(len(p["x"]) for p in later)]
    for payload, result in zip(later, results, strict=True):
        np.testing.assert_array_equal(result.outputs["y"], payload["x"] * 2.0)
        assert result.stats.batch_requests == 4
    await batcher.stop(1.0)


async def test_full_batch_uses_a_free_slot_while_another_runs(held) -> None:
    model, batcher, rng, first = await held(
        BatchingConfig(max_batch_rows=4, max_wait_us=LONG_WAIT_US, max_concurrent_batches=2), 14
    )
    model.entered.clear()
    full = [rows(rng, 2), rows(rng, 2)]
    tasks = [asyncio.ensure_future(batcher.submit(p, 2)) for p in full]
    await wait_entered(model)  # 4 rows: full, so it starts beside the held batch
    assert model.calls == [1, 4] and batcher.in_flight_batches == 2
    model.release.set()
    await first
    for payload, result in zip(full, await asyncio.gather(*tasks), strict=True):
        np.testing.assert_array_equal(result.outputs["y"], payload["x"] * 2.0)
    await batcher.stop(1.0)


async def test_max_wait_starts_a_batch_beside_a_running_one(held, clock: ManualClock) -> None:
    model, batcher, rng, first = await held(
        BatchingConfig(max_batch_rows=16, max_wait_us=1000, max_concurrent_batches=2), 15
    )
    model.entered.clear()
    waiting = rows(rng, 3)
    task = asyncio.ensure_future(batcher.submit(waiting, 3))
    await queued_up(batcher, 1)
    clock.advance(0.0009)
    for _ in range(20):  # not due yet: nothing starts
        await asyncio.sleep(0)
    assert model.calls == [1] and batcher.queue_depth == 1
    clock.advance(0.0001)  # max_wait_us passed: the armed timer starts it in the free slot
    await wait_entered(model)
    assert model.calls == [1, 3]
    model.release.set()
    await first
    np.testing.assert_array_equal((await task).outputs["y"], waiting["x"] * 2.0)
    await batcher.stop(1.0)


class ThreadRecorder:
    """x -> 2x taking `compute_s` on the batcher's clock; records the thread of every call."""

    def __init__(self, clock: ManualClock, compute_s: float) -> None:
        self.clock = clock
        self.compute_s = compute_s
        self.threads: list[int] = []

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.get_ident())
        self.clock.now += self.compute_s  # time spent computing (no timer falls due in it)
        return {"y": inputs["x"] * 2.0}


@pytest.mark.parametrize(
    ("compute_s", "inline_max_us", "inline_expected"),
    [(50e-6, 150, True), (0.005, 150, False), (50e-6, 0, False)],
    ids=["tiny-model-inline", "slow-model-executor", "inline-off"],
)
async def test_batches_run_inline_only_when_measured_cheaper_than_a_thread_hand_off(
    make, clock: ManualClock, compute_s: float, inline_max_us: int, inline_expected: bool
) -> None:
    model = ThreadRecorder(clock, compute_s)
    batcher = make(BatchingConfig(max_wait_us=0, inline_max_us=inline_max_us), model)
    rng = np.random.default_rng(11)
    for _ in range(4):
        payload = rows(rng, 2)
        result = await batcher.submit(payload, 2)
        np.testing.assert_array_equal(result.outputs["y"], payload["x"] * 2.0)
    loop_thread = threading.get_ident()
    assert model.threads[0] != loop_thread  # unmeasured: the executor first
    assert all((t == loop_thread) == inline_expected for t in model.threads[1:])
    await batcher.stop(1.0)
