"""meshserve.streams.fan_out: the bidi fan-out behind InferStream and ExecuteStream.

Handlers are held on events and released by the test, so every ordering is decided by the
test, never by timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest

from meshserve.streams import fan_out


class Held:
    """Handlers that announce their start and wait until the test releases them."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.started = {i: asyncio.Event() for i in ids}
        self.release = {i: asyncio.Event() for i in ids}
        self.cancelled: set[str] = set()
        self.finished: set[str] = set()
        self.running = 0
        self.peak = 0

    async def all_started(self) -> None:
        for event in self.started.values():
            await event.wait()

    async def handle(self, item: str) -> str:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.started[item].set()
        try:
            await self.release[item].wait()
            if item.startswith("bad"):
                raise ValueError(f"{item} is bad")
            return f"ok {item}"
        except asyncio.CancelledError:
            self.cancelled.add(item)
            raise
        finally:
            self.running -= 1
            self.finished.add(item)


def failed(item: str, exc: Exception) -> str:
    return f"error {item}: {exc}"


async def items(ids: Iterable[str], exhausted: asyncio.Event | None = None) -> AsyncIterator[str]:
    for i in ids:
        yield i
    if exhausted is not None:
        exhausted.set()


def other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_replies_come_in_completion_order() -> None:
    held = Held("abc")
    stream = fan_out(items("abc"), held.handle, max_in_flight=8, on_error=failed)
    first = asyncio.ensure_future(anext(stream))
    await held.all_started()
    held.release["c"].set()
    got = [await first]
    for i in "ab":
        held.release[i].set()
        got.append(await anext(stream))
    assert got == ["ok c", "ok a", "ok b"]
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert not other_tasks()


async def test_no_more_than_max_in_flight_handlers_run() -> None:
    ids = [f"r{i}" for i in range(6)]
    held = Held(ids)
    stream = fan_out(items(ids), held.handle, max_in_flight=2, on_error=failed)
    collect = asyncio.ensure_future(_collect(stream))
    for i in ids:  # release one at a time: the next one starts only once a slot is free
        await held.started[i].wait()
        assert held.running <= 2
        held.release[i].set()
    assert sorted(await collect) == sorted(f"ok {i}" for i in ids)
    assert held.peak == 2
    assert not other_tasks()


async def test_an_item_starts_only_when_a_slot_is_free() -> None:
    held = Held(["a", "b", "c"])
    started_with_a_done: list[bool] = []

    async def handle(item: str) -> str:
        if item == "c":
            started_with_a_done.append("a" in held.finished)
        return await held.handle(item)

    stream = fan_out(items("abc"), handle, max_in_flight=2, on_error=failed)
    first = asyncio.ensure_future(anext(stream))
    await held.started["a"].wait()
    await held.started["b"].wait()
    held.release["a"].set()
    assert await first == "ok a"
    await held.started["c"].wait()
    assert started_with_a_done == [True]
    held.release["b"].set()
    held.release["c"].set()
    assert sorted([await anext(stream), await anext(stream)]) == ["ok b", "ok c"]
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_end_of_stream_drains_the_items_in_flight() -> None:
    held = Held("ab")
    exhausted = asyncio.Event()
    stream = fan_out(items("ab", exhausted), held.handle, max_in_flight=8, on_error=failed)
    first = asyncio.ensure_future(anext(stream))
    await exhausted.wait()  # the client closed its side while both items still run
    await held.started["a"].wait()
    await held.started["b"].wait()
    held.release["b"].set()
    assert await first == "ok b"
    held.release["a"].set()
    assert await anext(stream) == "ok a"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert held.cancelled == set()
    assert not other_tasks()


async def test_a_failing_item_is_answered_in_band_and_the_stream_goes_on() -> None:
    held = Held(["bad1", "x", "y"])
    for event in held.release.values():
        event.set()
    stream = fan_out(items(["bad1", "x", "y"]), held.handle, max_in_flight=1, on_error=failed)
    got = await _collect(stream)
    assert got == ["error bad1: bad1 is bad", "ok x", "ok y"]


async def test_cancelling_the_call_cancels_every_item_and_leaks_no_task() -> None:
    held = Held("abc")
    stream = fan_out(items("abc"), held.handle, max_in_flight=8, on_error=failed)
    consumer = asyncio.ensure_future(_collect(stream))
    await held.all_started()
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert held.cancelled == {"a", "b", "c"}
    assert not other_tasks()


async def test_closing_the_iterator_early_cancels_the_rest() -> None:
    held = Held("ab")
    stream = fan_out(items("ab"), held.handle, max_in_flight=8, on_error=failed)
    first = asyncio.ensure_future(anext(stream))
    await held.started["b"].wait()
    held.release["a"].set()
    assert await first == "ok a"
    await stream.aclose()
    assert held.cancelled == {"b"}
    assert not other_tasks()


async def test_a_read_error_ends_the_stream_after_the_finished_replies() -> None:
    held = Held("ab")
    a_answered = asyncio.Event()

    async def broken() -> AsyncIterator[str]:
        yield "a"
        yield "b"
        await a_answered.wait()
        raise RuntimeError("connection reset")

    stream = fan_out(broken(), held.handle, max_in_flight=8, on_error=failed)
    first = asyncio.ensure_future(anext(stream))
    await held.started["b"].wait()
    held.release["a"].set()
    assert await first == "ok a"
    a_answered.set()
    with pytest.raises(RuntimeError, match="connection reset"):
        await anext(stream)
    assert held.cancelled == {"b"}
    assert not other_tasks()


async def test_a_bug_in_on_error_ends_the_stream_instead_of_losing_the_reply() -> None:
    held = Held(["bad"])
    held.release["bad"].set()

    def broken(item: str, exc: Exception) -> str:
        raise KeyError(item)

    with pytest.raises(KeyError):
        await _collect(fan_out(items(["bad"]), held.handle, max_in_flight=1, on_error=broken))
    assert not other_tasks()


async def test_max_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_in_flight must be >= 1, got 0"):
        await _collect(fan_out(items("a"), Held("a").handle, max_in_flight=0, on_error=failed))


async def _collect(stream: AsyncIterator[str]) -> list[str]:
    return [reply async for reply in stream]
