"""Fault injection toward a model or one of its endpoints, like a service mesh's fault filter.

A fault delays (`delay_ms` with probability `delay_rate`) and/or aborts (with probability
`abort_rate`, status `abort_code`) attempts toward its target for `duration_s`, then expires by
itself (judged with the injected clock on every lookup; no timers). An injected abort is seen by
the router exactly like the replica failing with that status.

Faults act in one place: ``FaultInjectingTransport`` wraps each replica's real transport, asks
the injector for every attempt and delays or aborts it before (instead of) sending it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshserve.errors import DeadlineExceededError, InvalidInputError, MeshError, error_for_status
from meshserve.grpc_errors import code_from_int
from meshserve.orchestrator.caller import FaultSpec
from meshserve.orchestrator.datapath.transport import Metadata
from meshserve.v1 import model_pb2

if TYPE_CHECKING:
    from meshserve.orchestrator.datapath.transport import Transport

__all__ = ["FaultDecision", "FaultInjectingTransport", "FaultInjector"]


@dataclass(frozen=True)
class FaultDecision:
    delay_s: float = 0.0
    abort: MeshError | None = None


NO_FAULT = FaultDecision()


class FaultInjector:
    """Holds active faults; `decide()` says what to do to one attempt."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._faults: dict[str, tuple[FaultSpec, float]] = {}
        self._ids = itertools.count(1)

    def inject(self, fault: FaultSpec) -> str:
        """Install `fault`; returns its id."""
        _validate(fault)
        fault_id = f"fault-{next(self._ids)}"
        self._faults[fault_id] = (fault, self._clock() + fault.duration_s)
        return fault_id

    def clear(self, model: str = "") -> int:
        """Remove the faults of `model` (all when empty); returns how many were active."""
        self._expire()
        doomed = [fid for fid, (f, _) in self._faults.items() if not model or f.model == model]
        for fid in doomed:
            del self._faults[fid]
        return len(doomed)

    def active(self, model: str = "") -> list[FaultSpec]:
        self._expire()
        return [f for f, _ in self._faults.values() if not model or f.model == model]

    def faulted(self, model: str, instance_id: str) -> bool:
        """Is any active fault aimed at this endpoint (directly or via its model)?"""
        return bool(self._matching(model, instance_id))

    def decide(self, model: str, instance_id: str) -> FaultDecision:
        """Delay and/or abort for one attempt toward `instance_id` of `model`."""
        if not self._faults:
            return NO_FAULT
        delay_s = 0.0
        abort: MeshError | None = None
        for fault in self._matching(model, instance_id):
            if fault.delay_ms and self._rng.random() < fault.delay_rate:
                delay_s = max(delay_s, fault.delay_ms / 1000.0)
            if abort is None and fault.abort_rate and self._rng.random() < fault.abort_rate:
                abort = error_for_status(
                    code_from_int(fault.abort_code),
                    f"fault injected toward {model}/{instance_id or '*'}",
                    reason="fault_injected",
                )
        if not delay_s and abort is None:
            return NO_FAULT
        return FaultDecision(delay_s, abort)

    def _matching(self, model: str, instance_id: str) -> list[FaultSpec]:
        self._expire()
        return [
            f
            for f, _ in self._faults.values()
            if f.model == model and (not f.instance_id or f.instance_id == instance_id)
        ]

    def _expire(self) -> None:
        now = self._clock()
        for fid in [fid for fid, (_, until) in self._faults.items() if until <= now]:
            del self._faults[fid]


class FaultInjectingTransport:
    """A transport applying the injector's faults toward `model`/`instance_id` around `inner`.

    Per attempt: no matching fault -> the inner transport's own awaitable (no extra coroutine);
    a delay sleeps min(delay, timeout) and fails with DEADLINE_EXCEEDED when it used the whole
    timeout; an abort raises its MeshError (after the delay, if both) without sending.
    """

    def __init__(
        self, inner: Transport, faults: FaultInjector, model: str, instance_id: str
    ) -> None:
        self.inner = inner
        self._faults = faults
        self._model = model
        self._instance_id = instance_id

    def infer(
        self, request: model_pb2.InferRequest, timeout_s: float, metadata: Metadata = ()
    ) -> Awaitable[model_pb2.InferResponse]:
        fault = self._faults.decide(self._model, self._instance_id)
        if fault is NO_FAULT:
            return self.inner.infer(request, timeout_s, metadata)
        return self._faulted(fault, request, timeout_s, metadata)

    async def _faulted(
        self,
        fault: FaultDecision,
        request: model_pb2.InferRequest,
        timeout_s: float,
        metadata: Sequence[tuple[str, str]],
    ) -> model_pb2.InferResponse:
        if fault.delay_s:
            await asyncio.sleep(min(fault.delay_s, timeout_s))
            if fault.delay_s >= timeout_s:
                raise DeadlineExceededError("deadline passed in injected delay")
        if fault.abort is not None:
            raise fault.abort
        return await self.inner.infer(request, timeout_s, metadata)

    async def close(self) -> None:
        await self.inner.close()


def _validate(fault: FaultSpec) -> None:
    if not fault.model:
        raise InvalidInputError("fault: model is empty (expected a model service name)")
    if not fault.duration_s > 0:
        raise InvalidInputError(f"fault: duration_s={fault.duration_s} (expected > 0)")
    for name in ("delay_rate", "abort_rate"):
        value = getattr(fault, name)
        if not 0.0 <= value <= 1.0:
            raise InvalidInputError(f"fault: {name}={value} (expected 0..1)")
    if fault.delay_ms < 0:
        raise InvalidInputError(f"fault: delay_ms={fault.delay_ms} (expected >= 0)")
    if fault.abort_rate and not 1 <= fault.abort_code <= 16:
        raise InvalidInputError(
            f"fault: abort_code={fault.abort_code} (expected a grpc status code 1..16)"
        )
