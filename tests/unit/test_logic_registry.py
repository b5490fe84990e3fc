"""The @logic registry: registration, lookup errors, sync functions off the loop, deadlines."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from meshserve.errors import DeadlineExceededError, InvalidInputError, NotFoundError
from meshserve.orchestrator.logic import (
    LogicContext,
    get_logic,
    known_logic,
    logic,
    run_logic,
    unregister_logic,
)


@pytest.fixture
def names():
    made: list[str] = []
    yield made
    for name in made:
        unregister_logic(name)


async def test_async_function_registered_and_called(names):
    names.append("t.double")

    @logic("t.double")
    async def double(inputs: dict[str, Any], ctx: LogicContext) -> dict[str, Any]:
        return {"y": inputs["x"] * 2, "step": ctx.step}

    assert "t.double" in known_logic()
    out = await run_logic("t.double", {"x": 21}, LogicContext(step="s1"))
    assert out == {"y": 42, "step": "s1"}


async def test_unknown_function_names_it_and_lists_known(names):
    names.append("t.known")
    logic("t.known")(lambda inputs, ctx: {})
    with pytest.raises(NotFoundError) as err:
        get_logic("t.nope")
    assert "'t.nope'" in err.value.message and "t.known" in err.value.message


async def test_sync_function_runs_in_a_thread(names):
    names.append("t.sync")
    seen: list[int] = []

    entered = threading.Event()
    release = threading.Event()

    @logic("t.sync")
    def blocking(inputs, ctx):
        seen.append(threading.get_ident())
        entered.set()
        assert release.wait(10), "the event loop never released the blocked function"
        return {"ok": True}

    call = asyncio.ensure_future(run_logic("t.sync", {}, LogicContext()))
    assert await asyncio.to_thread(entered.wait, 10)
    assert not call.done()
    release.set()  # the loop keeps running while the function blocks: it can release it
    assert await call == {"ok": True}
    assert seen[0] != threading.get_ident()


async def test_class_with_async_call_is_instantiated_once(names):
    names.append("t.counter")

    @logic("t.counter")
    class Counter:
        def __init__(self) -> None:
            self.calls = 0

        async def __call__(self, inputs, ctx):
            self.calls += 1
            return {"calls": self.calls}

    assert (await run_logic("t.counter", {}, LogicContext()))["calls"] == 1
    assert (await run_logic("t.counter", {}, LogicContext()))["calls"] == 2


async def test_deadline_bounds_the_call(names):
    names.append("t.slow")

    @logic("t.slow")
    async def slow(inputs, ctx):
        await asyncio.sleep(5)
        return {}

    ctx = LogicContext(step="slowstep", deadline=time.monotonic() + 0.05)
    with pytest.raises(DeadlineExceededError, match="slowstep"):
        await run_logic("t.slow", {}, ctx)


async def test_non_mapping_result_is_rejected(names):
    names.append("t.bad")
    logic("t.bad")(lambda inputs, ctx: [1, 2])
    with pytest.raises(InvalidInputError, match="returned list; expected a dict"):
        await run_logic("t.bad", {}, LogicContext())


def test_missing_param_names_it():
    ctx = LogicContext(params={"a": 1}, plan="p", step="s")
    assert ctx.param("a") == 1
    assert ctx.param("b", 3) == 3
    with pytest.raises(InvalidInputError, match="missing param 'b'"):
        ctx.param("b")
