"""ModelRouter logic with real replica wrappers over scripted in-memory transports (no channel),
injected clock/rng. Faults go through the real FaultInjectingTransport."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshserve.errors import (
    InvalidInputError,
    MeshError,
    OverloadedError,
    UnavailableError,
    error_for_status,
)
from meshserve.orchestrator.caller import FaultSpec
from meshserve.orchestrator.datapath.config import DataPathConfig, RetryConfig
from meshserve.orchestrator.datapath.faults import FaultInjector
from meshserve.orchestrator.datapath.policy import PickerPolicy, RoundRobin
from meshserve.orchestrator.datapath.replica import Replica
from meshserve.orchestrator.datapath.router import ModelRouter, RouterCounters
from meshserve.orchestrator.datapath.transport import Transport
from meshserve.telemetry import traceparent_of
from meshserve.v1 import model_pb2
from tests.unit.datapath_fakes import FakeTransport
from tests.waiting import wait_until


@dataclass(frozen=True)
class Ep:
    instance_id: str
    version: str = "1"
    meta: Mapping[str, str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"{self.instance_id}:1"


# instance id -> list of outcomes (a MeshError to raise, or None for success), consumed in order
SCRIPT: dict[str, list[MeshError | None]] = {}
GATES: dict[str, asyncio.Event] = {}


class ScriptedTransport(FakeTransport):
    """Plays SCRIPT[instance_id]; waits on GATES[instance_id] when there is one."""

    async def answer(
        self, request: model_pb2.InferRequest, timeout_s: float
    ) -> model_pb2.InferResponse:
        if self.instance_id in GATES:
            await GATES[self.instance_id].wait()
        script = SCRIPT.get(self.instance_id, [])
        outcome = script.pop(0) if script else None
        if outcome is not None:
            raise outcome
        return model_pb2.InferResponse(id=request.id, instance_id=self.instance_id)


class FakeReplica(Replica):
    """The real replica wrapper (in-flight, totals, fault wrapper) over a ScriptedTransport."""

    def _connect(self) -> Transport:
        return ScriptedTransport(self.instance_id)

    async def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_router(
    config: DataPathConfig | None = None,
    clock: Callable[[], float] | None = None,
    tracer: trace.Tracer | None = None,
    policy: PickerPolicy | None = None,
) -> tuple[ModelRouter, RouterCounters, FaultInjector]:
    SCRIPT.clear()
    GATES.clear()
    counters = RouterCounters()
    clk = clock or Clock()
    faults = FaultInjector(clk, random.Random(1))
    router = ModelRouter(
        "m", config or DataPathConfig(), policy or RoundRobin(), faults, counters, clk,
        random.Random(2), replica_factory=FakeReplica, tracer=tracer,
    )  # fmt: skip
    return router, counters, faults


def unavailable() -> MeshError:
    return error_for_status(grpc.StatusCode.UNAVAILABLE, "connection refused")


async def call(
    router: ModelRouter, clock: Clock | None = None, routing_key: str = ""
) -> model_pb2.InferResponse:
    now = clock.now if clock else 1000.0
    return await router.call(
        model_pb2.InferRequest(id="r"), deadline=now + 5.0, routing_key=routing_key
    )


async def test_unavailable_is_retried_on_a_different_replica() -> None:
    router, counters, _ = make_router()
    router.update_endpoints([Ep("a"), Ep("b")])
    SCRIPT["a"] = [unavailable()]
    resp = await call(router)
    assert resp.instance_id == "b"
    assert counters.attempts_total == 2 and counters.retries_total == 1


async def test_errors_of_the_request_are_not_retried() -> None:
    router, counters, _ = make_router()
    router.update_endpoints([Ep("a"), Ep("b")])
    SCRIPT["a"] = [error_for_status(grpc.StatusCode.INVALID_ARGUMENT, "input 'input': bad dtype")]
    with pytest.raises(InvalidInputError, match="model 'm' replica 'a': input 'input': bad dtype"):
        await call(router)
    assert counters.attempts_total == 1


async def test_no_replica_fails_fast_and_is_counted() -> None:
    router, counters, _ = make_router()
    with pytest.raises(UnavailableError, match="no ready replica"):
        await call(router)
    assert counters.no_endpoint_failures_total == 1 and counters.attempts_total == 0


async def test_every_replica_failing_ends_with_unavailable_after_trying_each_once() -> None:
    router, counters, _ = make_router()
    router.update_endpoints([Ep("a"), Ep("b")])
    SCRIPT["a"] = [unavailable()]
    SCRIPT["b"] = [unavailable()]
    with pytest.raises(UnavailableError, match="connection refused"):
        await call(router)
    assert counters.attempts_total == 2


async def test_spent_budget_stops_retries() -> None:
    config = DataPathConfig(retry=RetryConfig(budget_ratio=0.0, budget_min_per_s=1.0))
    clock = Clock()
    router, counters, _ = make_router(config, clock)
    router.update_endpoints([Ep("a"), Ep("b"), Ep("c")])
    for _ in range(6):
        SCRIPT["a"] = [unavailable()] * 3
        SCRIPT["b"] = [unavailable()] * 3
        SCRIPT["c"] = [unavailable()] * 3
        with pytest.raises(UnavailableError):
            await call(router, clock)
    assert counters.retries_total == 1  # one token (1 s of floor), no time passed


async def test_consecutive_failures_eject_a_replica_but_never_the_majority() -> None:
    clock = Clock()
    router, counters, faults = make_router(clock=clock)
    router.update_endpoints([Ep("a"), Ep("b"), Ep("c")])
    faults.inject(FaultSpec(model="m", instance_id="a", abort_rate=1.0, duration_s=60))
    faults.inject(FaultSpec(model="m", instance_id="b", abort_rate=1.0, duration_s=60))
    for _ in range(12):
        resp = await call(router, clock)
        assert resp.instance_id == "c"
    states = {r.instance_id: r.state for r in router.replicas()}
    assert list(states.values()).count("ejected") == 1, states
    assert counters.ejections_total == 1


async def test_removed_replica_finishes_its_requests_before_closing() -> None:
    router, _, _ = make_router()
    router.update_endpoints([Ep("a")])
    GATES["a"] = asyncio.Event()
    pending = asyncio.ensure_future(call(router))
    replica = router.replicas()[0]
    await wait_until(lambda: replica.in_flight == 1, 5, "the call to reach the replica", 0)
    router.update_endpoints([])
    assert replica.state == "draining" and not getattr(replica, "closed", False)
    with pytest.raises(UnavailableError, match="no ready replica"):
        await call(router)
    GATES["a"].set()
    assert (await pending).instance_id == "a"
    await asyncio.sleep(0)
    assert getattr(replica, "closed", False) and router.replicas() == []


async def test_drain_stops_picking_and_resume_restores() -> None:
    router, _, _ = make_router()
    router.update_endpoints([Ep("a"), Ep("b")])
    assert router.drain("a") == 0
    assert {(await call(router)).instance_id for _ in range(4)} == {"b"}
    router.drain("a", drain=False)
    assert {(await call(router)).instance_id for _ in range(4)} == {"a", "b"}
    assert router.drain("zzz") == -1


async def test_retry_pushback_is_honoured_or_refused_past_the_deadline() -> None:
    router, counters, _ = make_router()
    router.update_endpoints([Ep("a"), Ep("b")])
    SCRIPT["a"] = [
        error_for_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", retry_pushback_ms=20)
    ]
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert (await call(router)).instance_id == "b"
    assert loop.time() - start >= 0.02
    # A 60 s pushback does not fit the 5 s deadline: no retry, the overload is reported.
    router, counters, _ = make_router()
    router.update_endpoints([Ep("a"), Ep("b")])
    SCRIPT["a"] = [
        error_for_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full", retry_pushback_ms=60_000)
    ]
    with pytest.raises(OverloadedError, match="queue full") as info:
        await call(router)
    assert info.value.retry_pushback_ms == 60_000
    assert counters.retries_total == 0


async def test_every_attempt_is_a_client_span_with_rpc_conventions_attempt_and_reason() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    router, _, _ = make_router(tracer=provider.get_tracer("test"))
    router.update_endpoints([Ep("a"), Ep("b")])
    SCRIPT["a"] = [unavailable()]
    await call(router)
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["meshserve.v1.ModelService/InferStream"] * 2
    assert all(s.kind == trace.SpanKind.CLIENT for s in spans)
    first, second = (dict(s.attributes or {}) for s in spans)
    rpc = {
        "rpc.system": "grpc",
        "rpc.service": "meshserve.v1.ModelService",
        "rpc.method": "InferStream",
        "server.port": 1,
        "meshserve.model": "m",
        "meshserve.batch_requests": 1,
    }
    unavailable_code = grpc.StatusCode.UNAVAILABLE.value[0]
    assert first == {
        **rpc, "server.address": "a", "meshserve.endpoint": "a", "meshserve.attempt": 1,
        "rpc.grpc.status_code": unavailable_code,
    }  # fmt: skip
    assert second == {
        **rpc, "server.address": "b", "meshserve.endpoint": "b", "meshserve.attempt": 2,
        "meshserve.retry_reason": "unavailable", "rpc.grpc.status_code": 0,
    }  # fmt: skip
    assert not spans[0].status.is_ok


async def test_a_batch_attempt_has_one_client_span_in_each_callers_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    router, _, _ = make_router(tracer=tracer)
    router.update_endpoints([Ep("a"), Ep("b")])
    SCRIPT["a"] = [unavailable()]
    callers = [tracer.start_span(f"caller {i}") for i in range(3)]
    sampled_out = trace.SpanContext(
        0xABC, 0xDEF, is_remote=True, trace_flags=trace.TraceFlags(0)
    )  # a caller whose trace is not recorded: no span, but its traceparent travels
    sent: list[list[str]] = []
    original = ScriptedTransport.answer

    async def record(self, request, timeout_s):  # type: ignore[no-untyped-def]
        sent.append(list(request.traceparents))
        return await original(self, request, timeout_s)

    ScriptedTransport.answer = record  # type: ignore[method-assign]
    try:
        await router.call(
            model_pb2.InferRequest(id="r"),
            deadline=1005.0,
            callers=[*(c.get_span_context() for c in callers), sampled_out],
        )
    finally:
        ScriptedTransport.answer = original  # type: ignore[method-assign]
    spans = exporter.get_finished_spans()
    assert len(spans) == 6  # 3 sampled callers x 2 attempts (the first failed)
    for attempt in (1, 2):
        mine = [s for s in spans if s.attributes["meshserve.attempt"] == attempt]
        parents = [s.parent.span_id for s in mine if s.parent is not None]
        assert parents == [c.get_span_context().span_id for c in callers]
        assert {s.context.trace_id for s in mine} == {
            c.get_span_context().trace_id for c in callers
        }
        assert all(s.attributes["meshserve.batch_requests"] == 4 for s in mine)
        # The attempt carried its own spans' traceparents, then the sampled-out caller's.
        expected = [traceparent_of(s.context) for s in mine]
        assert sent[attempt - 1] == [*expected, f"00-{0xABC:032x}-{0xDEF:016x}-00"]
