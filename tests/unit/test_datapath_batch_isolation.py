"""A failed micro-batch fails only the callers it must (MeshCaller._send_batch): the router's
final error for the batch is replaced by one call per caller when that can help."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError, MeshError, OverloadedError, UnavailableError
from meshserve.orchestrator.datapath.batching import BatchEntry, entry_key
from meshserve.orchestrator.datapath.config import DataPathConfig, RetryConfig
from meshserve.orchestrator.datapath.mesh import MeshCaller
from meshserve.registry.config import ConsulConfig
from meshserve.tensors import from_numpy, to_numpy
from meshserve.v1 import model_pb2
from tests.unit.test_datapath_router import Ep


class FakeRouter:
    """Stands in for ModelRouter.call: doubles `x`; `fail(x)` returns the error for a request."""

    def __init__(self, fail: Any) -> None:
        self.fail = fail
        self.sent: list[int] = []  # rows per request

    async def call(
        self, request: model_pb2.InferRequest, *, deadline: float, **_: Any
    ) -> model_pb2.InferResponse:
        x = to_numpy(request.inputs["x"], "x")
        self.sent.append(len(x))
        error = self.fail(x)
        if error is not None:
            raise error
        response = model_pb2.InferResponse()
        response.outputs["y"].CopyFrom(from_numpy(x * 2))
        return response


def _entries(loop: asyncio.AbstractEventLoop, values: Sequence[float]) -> list[BatchEntry]:
    out = []
    for v in values:
        inputs = {"x": np.full((1, 2), v, dtype=np.float32)}
        key, rows = entry_key(inputs, (), "")
        out.append(BatchEntry(inputs, rows, key, loop.time() + 5.0, loop.create_future()))
    return out


def _caller(config: DataPathConfig, fake: FakeRouter) -> tuple[MeshCaller, Any]:
    caller = MeshCaller(config, ConsulConfig(address="127.0.0.1:1"))
    caller.add_static_endpoints("m", [Ep("a")])
    state = caller._models["m"]
    state.router.call = fake.call  # type: ignore[method-assign]
    return caller, state


def _outcomes(entries: list[BatchEntry]) -> list[object]:
    return [
        type(e.future.exception()) if e.future.exception() else float(e.future.result()["y"][0, 0])
        for e in entries
    ]


async def test_one_bad_row_fails_only_its_caller() -> None:
    fake = FakeRouter(lambda x: InvalidInputError("negative input") if (x < 0).any() else None)
    caller, state = _caller(DataPathConfig(), fake)
    entries = _entries(asyncio.get_running_loop(), [1.0, -1.0, 3.0])
    await caller._send_batch(state, entries)
    assert fake.sent == [3, 1, 1, 1]
    assert _outcomes(entries) == [2.0, InvalidInputError, 6.0]
    await caller.close()


async def test_batch_failing_on_a_replica_fault_is_resent_per_caller_within_the_budget() -> None:
    def fail(x: np.ndarray) -> MeshError | None:
        return UnavailableError("replica gone") if len(x) > 1 else None

    fake = FakeRouter(fail)
    caller, state = _caller(DataPathConfig(), fake)
    entries = _entries(asyncio.get_running_loop(), [1.0, 2.0])
    await caller._send_batch(state, entries)
    assert fake.sent == [2, 1, 1] and _outcomes(entries) == [2.0, 4.0]
    await caller.close()
    # No retry token left: the batch's error is every caller's.
    spent = DataPathConfig(retry=RetryConfig(budget_ratio=0.0, budget_min_per_s=0.0))
    fake = FakeRouter(fail)
    caller, state = _caller(spent, fake)
    entries = _entries(asyncio.get_running_loop(), [1.0, 2.0])
    await caller._send_batch(state, entries)
    assert fake.sent == [2] and _outcomes(entries) == [UnavailableError, UnavailableError]
    await caller.close()


async def test_overload_is_not_resent_per_caller() -> None:
    fake = FakeRouter(lambda x: OverloadedError("queue full", retry_pushback_ms=10))
    caller, state = _caller(DataPathConfig(), fake)
    entries = _entries(asyncio.get_running_loop(), [1.0, 2.0])
    await caller._send_batch(state, entries)
    assert fake.sent == [2] and _outcomes(entries) == [OverloadedError, OverloadedError]
    await caller.close()
