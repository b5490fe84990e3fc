"""Fault injector: targeting, rates with an injected rng, expiry with an injected clock; the
fault-injecting transport wrapper around a recording inner transport."""

from __future__ import annotations

import random

import grpc
import pytest

from meshserve.errors import DeadlineExceededError, InvalidInputError, OverloadedError
from meshserve.orchestrator.caller import FaultSpec
from meshserve.orchestrator.datapath.faults import FaultInjectingTransport, FaultInjector
from meshserve.v1 import model_pb2
from tests.unit.datapath_fakes import FakeTransport


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_endpoint_fault_hits_only_that_endpoint_and_expires() -> None:
    clock = Clock()
    faults = FaultInjector(clock, random.Random(1))
    faults.inject(FaultSpec(model="m", instance_id="a", abort_rate=1.0, duration_s=2.0))
    hit = faults.decide("m", "a")
    assert hit.abort is not None and hit.abort.code == grpc.StatusCode.UNAVAILABLE
    assert faults.decide("m", "b").abort is None
    assert faults.decide("other", "a").abort is None
    assert faults.faulted("m", "a") and not faults.faulted("m", "b")
    clock.now = 2.0
    assert faults.decide("m", "a").abort is None
    assert faults.active() == []


def test_model_fault_delays_every_endpoint_at_its_rate() -> None:
    faults = FaultInjector(Clock(), random.Random(2))
    faults.inject(FaultSpec(model="m", delay_ms=50, delay_rate=0.25, duration_s=10))
    delays = [faults.decide("m", f"e{i % 3}").delay_s for i in range(4000)]
    assert set(delays) == {0.0, 0.05}
    assert delays.count(0.05) == pytest.approx(1000, rel=0.1)


def test_abort_code_and_clear() -> None:
    faults = FaultInjector(Clock(), random.Random(3))
    faults.inject(FaultSpec(model="m", abort_rate=1.0, abort_code=8, duration_s=10))
    faults.inject(FaultSpec(model="n", abort_rate=1.0, duration_s=10))
    err = faults.decide("m", "x").abort
    assert err is not None and err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert faults.clear("m") == 1
    assert faults.decide("m", "x").abort is None
    assert faults.clear() == 1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (FaultSpec(model="", duration_s=1), "model is empty"),
        (FaultSpec(model="m", duration_s=0), "duration_s=0"),
        (FaultSpec(model="m", duration_s=1, abort_rate=2.0), "abort_rate=2.0"),
        (FaultSpec(model="m", duration_s=1, abort_rate=1.0, abort_code=99), "abort_code=99"),
    ],
)
def test_bad_fault_specs_are_rejected_with_a_precise_message(spec: FaultSpec, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        FaultInjector(Clock()).inject(spec)


class Inner(FakeTransport):
    """A transport that records what reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, float]] = []

    async def answer(
        self, request: model_pb2.InferRequest, timeout_s: float
    ) -> model_pb2.InferResponse:
        self.sent.append((request.id, timeout_s))
        return model_pb2.InferResponse(id=request.id)


async def test_the_wrapper_passes_unfaulted_attempts_straight_to_the_inner_transport() -> None:
    inner = Inner()
    faults = FaultInjector(Clock(), random.Random(4))
    wrapped = FaultInjectingTransport(inner, faults, "m", "a")
    faults.inject(FaultSpec(model="m", instance_id="b", abort_rate=1.0, duration_s=10))
    pending = wrapped.infer(model_pb2.InferRequest(id="r1"), 1.0)
    assert getattr(pending, "__qualname__", "") == "Inner.answer"  # no wrapper coroutine
    assert (await pending).id == "r1"
    await wrapped.close()
    assert inner.sent == [("r1", 1.0)] and inner.closed


async def test_the_wrapper_aborts_without_sending_and_delays_within_the_timeout() -> None:
    inner = Inner()
    faults = FaultInjector(Clock(), random.Random(5))
    wrapped = FaultInjectingTransport(inner, faults, "m", "a")
    faults.inject(FaultSpec(model="m", abort_rate=1.0, abort_code=8, duration_s=10))
    with pytest.raises(OverloadedError) as aborted:
        await wrapped.infer(model_pb2.InferRequest(id="r1"), 1.0)
    assert aborted.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert aborted.value.reason == "fault_injected"
    faults.clear()
    faults.inject(FaultSpec(model="m", instance_id="a", delay_ms=2, duration_s=10))
    assert (await wrapped.infer(model_pb2.InferRequest(id="r2"), 1.0)).id == "r2"
    with pytest.raises(DeadlineExceededError) as late:
        await wrapped.infer(model_pb2.InferRequest(id="r3"), 0.001)
    assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert inner.sent == [("r2", 1.0)]
