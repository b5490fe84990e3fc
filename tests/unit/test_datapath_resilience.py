"""Attempt timeouts, hedging, INTERNAL retried once and pushback in ModelRouter, over scripted
in-memory transports with the injected clock (a hung replica advances it by its timeout)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import replace

import grpc
import pytest

from meshserve.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidInputError,
    MeshError,
    OverloadedError,
    error_for_status,
)
from meshserve.orchestrator.datapath.config import (
    AttemptTimeoutConfig,
    DataPathConfig,
    EjectionConfig,
    HedgeConfig,
)
from meshserve.orchestrator.datapath.ejection import OutlierState
from meshserve.orchestrator.datapath.faults import FaultInjector
from meshserve.orchestrator.datapath.latency import LatencyWindow
from meshserve.orchestrator.datapath.policy import C, CallInfo
from meshserve.orchestrator.datapath.replica import Replica
from meshserve.orchestrator.datapath.router import ModelRouter, RouterCounters
from meshserve.orchestrator.datapath.transport import Transport
from meshserve.v1 import model_pb2
from tests.unit.datapath_fakes import FakeTransport
from tests.unit.test_datapath_router import Clock, Ep

CLOCK = Clock()
HUNG: set[str] = set()  # replicas that never answer: the attempt uses its whole timeout
GATES: dict[str, asyncio.Event] = {}  # replicas that answer once their event is set
SCRIPT: dict[str, list[MeshError | None]] = {}
TIMEOUTS: list[tuple[str, float]] = []  # (replica, timeout_s) of every attempt
ENTERED: dict[str, asyncio.Event] = {}  # set when an attempt reaches that replica


class TimedTransport(FakeTransport):
    """Answers after `step_ms` of fake time; a HUNG replica consumes its timeout and fails."""

    step_ms = 10.0

    async def answer(
        self, request: model_pb2.InferRequest, timeout_s: float
    ) -> model_pb2.InferResponse:
        TIMEOUTS.append((self.instance_id, timeout_s))
        ENTERED.setdefault(self.instance_id, asyncio.Event()).set()
        if self.instance_id in HUNG:
            CLOCK.now += timeout_s
            raise DeadlineExceededError("no answer within the deadline")
        if self.instance_id in GATES:
            await GATES[self.instance_id].wait()
        script = SCRIPT.get(self.instance_id, [])
        outcome = script.pop(0) if script else None
        CLOCK.now += self.step_ms / 1000.0
        if outcome is not None:
            raise outcome
        return model_pb2.InferResponse(id=request.id, instance_id=self.instance_id)


class TimedReplica(Replica):
    def _connect(self) -> Transport:
        return TimedTransport(self.instance_id)

    async def close(self) -> None:
        return None


class Prefer:
    """The candidate earliest in `order` (then registry order): attempts are predictable."""

    order: list[str] = []

    def pick(self, candidates: Sequence[C], call: CallInfo) -> C:
        rank = {rid: i for i, rid in enumerate(self.order)}
        return min(candidates, key=lambda c: rank.get(c.instance_id, len(rank)))


NO_HEDGE = HedgeConfig(enabled=False)


def router_for(config: DataPathConfig, *ids: str) -> tuple[ModelRouter, RouterCounters]:
    HUNG.clear()
    GATES.clear()
    SCRIPT.clear()
    TIMEOUTS.clear()
    ENTERED.clear()
    Prefer.order = []
    counters = RouterCounters()
    router = ModelRouter(
        "m", config, Prefer(), FaultInjector(CLOCK, random.Random(1)), counters, CLOCK,
        random.Random(2), replica_factory=TimedReplica,
    )  # fmt: skip
    router.update_endpoints([Ep(i) for i in ids])
    return router, counters


async def call(router: ModelRouter) -> model_pb2.InferResponse:
    return await router.call(model_pb2.InferRequest(id="r"), deadline=CLOCK.now + 5.0)


async def warm_up(router: ModelRouter, n: int = 20) -> None:
    """`n` successful calls of 10 ms: p99 = 10 ms, so the attempt timeout is its 250 ms floor."""
    for _ in range(n):
        await call(router)
    TIMEOUTS.clear()


def test_latency_window_quantiles_appear_once_warm_and_follow_the_samples() -> None:
    window = LatencyWindow(size=100, min_samples=10, refresh_every=10)
    assert not any(window.record(1.0) for _ in range(9)) and not window.warm
    assert window.record(1.0) and window.warm and window.p99_ms == 1.0
    for ms in range(1, 101):
        window.record(float(ms))
    assert window.p95_ms == 95.0 and window.p99_ms == 99.0 and len(window) == 100


async def test_cold_history_gives_each_attempt_the_whole_deadline() -> None:
    router, _ = router_for(DataPathConfig(hedge=NO_HEDGE), "a", "b")
    HUNG.add("a")
    with pytest.raises(DeadlineExceededError):
        await call(router)
    assert [("a", pytest.approx(5.0))] == TIMEOUTS


async def test_hung_replica_costs_the_attempt_timeout_then_is_retried_and_ejected() -> None:
    router, counters = router_for(DataPathConfig(hedge=NO_HEDGE), "a", "b")
    await warm_up(router)
    HUNG.add("a")
    start = CLOCK.now
    assert (await call(router)).instance_id == "b"
    # 250 ms (floor over 3 x p99) on a; b, the last candidate, gets what remains.
    assert TIMEOUTS[0] == ("a", pytest.approx(0.25))
    assert TIMEOUTS[1][0] == "b" and TIMEOUTS[1][1] == pytest.approx(4.75)
    assert CLOCK.now - start == pytest.approx(0.26)
    assert counters.retries_total == 1
    for _ in range(2):
        await call(router)
    states = {r.instance_id: r.state for r in router.replicas()}
    assert states == {"a": "ejected", "b": "passing"}, states


async def test_attempt_timeout_follows_the_p99() -> None:
    config = DataPathConfig(
        hedge=NO_HEDGE, attempt_timeout=AttemptTimeoutConfig(p99_multiplier=2.0, floor_ms=1.0)
    )
    router, _ = router_for(config, "a", "b")
    await warm_up(router)
    HUNG.add("a")
    await call(router)
    assert TIMEOUTS[0] == ("a", pytest.approx(0.02))  # 2 x p99 of 10 ms


async def test_attempt_timeout_off_or_no_retry_possible_gives_the_deadline() -> None:
    off = DataPathConfig(hedge=NO_HEDGE, attempt_timeout=AttemptTimeoutConfig(enabled=False))
    router, _ = router_for(off, "a", "b")
    await warm_up(router)
    HUNG.add("a")
    with pytest.raises(DeadlineExceededError):
        await call(router)
    assert [("a", pytest.approx(5.0))] == TIMEOUTS
    router, _ = router_for(DataPathConfig(hedge=NO_HEDGE), "a")  # nowhere to retry
    await warm_up(router)
    HUNG.add("a")
    with pytest.raises(DeadlineExceededError):
        await call(router)
    assert TIMEOUTS[0][1] == pytest.approx(5.0)


async def test_hedge_after_the_delay_goes_elsewhere_first_answer_wins_loser_cancelled() -> None:
    config = DataPathConfig(hedge=HedgeConfig(delay_ms=1.0))
    router, counters = router_for(config, "a", "b")
    GATES["a"] = asyncio.Event()  # a never answers
    assert (await call(router)).instance_id == "b"
    assert counters.hedges_total == 1 and counters.attempts_total == 2
    await asyncio.sleep(0)  # the cancelled primary unwinds
    assert {r.instance_id: r.in_flight for r in router.replicas()} == {"a": 0, "b": 0}
    assert router.replicas()[1].retries_total == 1


async def test_primary_answering_first_cancels_the_hedge() -> None:
    config = DataPathConfig(hedge=HedgeConfig(delay_ms=1.0))
    router, counters = router_for(config, "a", "b")
    GATES["a"], GATES["b"] = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    pending = loop.create_task(call(router))
    await ENTERED.setdefault("b", asyncio.Event()).wait()  # the hedge timer fired
    assert counters.hedges_total == 1
    GATES["a"].set()
    assert (await pending).instance_id == "a"
    await asyncio.sleep(0)
    assert {r.instance_id: r.in_flight for r in router.replicas()} == {"a": 0, "b": 0}


async def test_primary_failing_while_the_hedge_runs_takes_the_hedge_answer() -> None:
    config = DataPathConfig(hedge=HedgeConfig(delay_ms=1.0))
    router, counters = router_for(config, "a", "b", "c")
    GATES["a"], GATES["b"] = asyncio.Event(), asyncio.Event()
    SCRIPT["a"] = [error_for_status(grpc.StatusCode.UNAVAILABLE, "gone")]
    pending = asyncio.get_running_loop().create_task(call(router))
    await ENTERED.setdefault("b", asyncio.Event()).wait()  # the hedge timer fired
    GATES["a"].set()  # a fails; b (the hedge) still carries the call
    await asyncio.sleep(0)
    GATES["b"].set()
    assert (await pending).instance_id == "b"
    assert counters.attempts_total == 2


async def test_no_hedge_without_a_second_candidate_or_a_token() -> None:
    for config, ids in [
        (DataPathConfig(hedge=HedgeConfig(delay_ms=1.0)), ("a",)),
        (
            DataPathConfig(hedge=HedgeConfig(delay_ms=1.0, budget_ratio=0.0, budget_min_per_s=0.0)),
            ("a", "b"),
        ),
    ]:
        router, counters = router_for(config, *ids)
        GATES["a"] = asyncio.Event()
        asyncio.get_running_loop().call_later(0.02, GATES["a"].set)
        assert (await call(router)).instance_id == "a"
        assert counters.hedges_total == 0


async def test_internal_is_retried_once_elsewhere_and_counted_against_the_replica() -> None:
    router, counters = router_for(DataPathConfig(hedge=NO_HEDGE), "a", "b", "c")
    SCRIPT["a"] = [error_for_status(grpc.StatusCode.INTERNAL, "boom")]
    assert (await call(router)).instance_id == "b"
    assert router.replicas()[0].outlier.consecutive_failures == 1
    SCRIPT["a"] = [error_for_status(grpc.StatusCode.UNKNOWN, "boom")]
    SCRIPT["b"] = [error_for_status(grpc.StatusCode.INTERNAL, "boom again")]
    with pytest.raises(InternalError, match="boom again"):
        await call(router)  # once, not twice: c is not tried
    assert counters.attempts_total == 4
    SCRIPT["a"] = [error_for_status(grpc.StatusCode.INVALID_ARGUMENT, "bad row")]
    with pytest.raises(InvalidInputError):
        await call(router)
    assert counters.attempts_total == 5


async def test_replica_that_pushed_back_gets_no_attempt_until_its_pushback_ends() -> None:
    router, _ = router_for(DataPathConfig(hedge=NO_HEDGE), "a", "b")
    SCRIPT["a"] = [
        error_for_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", retry_pushback_ms=1)
    ]
    assert (await call(router)).instance_id == "b"
    CLOCK.now -= 0.0105  # fake time back to within a's 1 ms pushback
    await call(router)
    assert [r for r, _ in TIMEOUTS] == ["a", "b", "b"]
    CLOCK.now += 0.1
    assert (await call(router)).instance_id == "a"  # pushback (and overload penalty) over


async def test_every_replica_pushing_back_fails_fast_with_the_pushback() -> None:
    router, counters = router_for(DataPathConfig(hedge=NO_HEDGE), "a", "b")
    for rid in ("a", "b"):
        SCRIPT[rid] = [
            error_for_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", retry_pushback_ms=500)
        ]
    router.replicas()[0].pushback_until = CLOCK.now + 0.5
    router.replicas()[1].pushback_until = CLOCK.now + 0.2
    with pytest.raises(OverloadedError, match="every ready replica pushed back") as info:
        await call(router)
    assert info.value.retry_pushback_ms == 200
    assert counters.attempts_total == 0 and counters.no_endpoint_failures_total == 0


async def test_overload_without_pushback_keeps_retries_away_from_that_replica() -> None:
    router, _ = router_for(DataPathConfig(hedge=NO_HEDGE), "a", "b", "c")
    SCRIPT["a"] = [error_for_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "full")]
    assert (await call(router)).instance_id == "b"
    # Another call fails on b: its retry skips a (overloaded, no pushback given) for c.
    Prefer.order = ["b", "a", "c"]
    SCRIPT["b"] = [error_for_status(grpc.StatusCode.UNAVAILABLE, "gone")]
    TIMEOUTS.clear()
    assert (await call(router)).instance_id == "c"
    assert [r for r, _ in TIMEOUTS] == ["b", "c"]
    assert router.replicas()[0].retries_total == 0
    # First attempts go elsewhere while another replica can take them, else still to a (no
    # explicit pushback: it is not held).
    Prefer.order = ["a"]
    assert (await call(router)).instance_id != "a"
    router.drain("b")
    router.drain("c")
    assert (await call(router)).instance_id == "a"


def test_resilience_settings_are_validated() -> None:
    with pytest.raises(ValueError, match=r"attempt_timeout\.floor_ms=0"):
        DataPathConfig(attempt_timeout=AttemptTimeoutConfig(floor_ms=0.0))
    with pytest.raises(ValueError, match=r"hedge\.budget_ratio=-1"):
        DataPathConfig(hedge=HedgeConfig(budget_ratio=-1.0))
    with pytest.raises(ValueError, match="retry_once_codes: 'BOOM'"):
        DataPathConfig(retry=replace(DataPathConfig().retry, retry_once_codes=("BOOM",)))
    with pytest.raises(ValueError, match="latency_min_samples=0"):
        DataPathConfig(latency_min_samples=0)


def test_abandoned_probe_lets_the_next_probe_through() -> None:
    state = OutlierState(EjectionConfig(consecutive_failures=1, base_ejection_s=1.0), CLOCK)
    assert state.on_failure()
    CLOCK.now += 2.0
    state.on_start()  # the probe...
    assert not state.may_take()
    state.on_abandon()  # ...lost a hedge race: it proved nothing
    assert state.may_take() and state.state == "probing"
