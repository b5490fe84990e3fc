"""The interface between the execution engine and the models: ``ModelCaller``.

The engine never touches a channel; it awaits ``caller.infer(model, inputs, ...)``.
``meshserve.orchestrator.datapath`` provides the production implementation (client-side load
balancing over Consul-discovered replicas, streaming batching, retries, fault injection).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from meshserve.v1 import model_pb2

__all__ = ["CallerCounters", "EndpointSnapshot", "FaultSpec", "ModelCaller"]


@dataclass(frozen=True)
class EndpointSnapshot:
    """What the caller knows about one replica right now."""

    model: str
    instance_id: str
    address: str
    version: str
    state: str  # "passing" | "draining" | "ejected" | "faulted"
    in_flight: int = 0
    latency_ewma_ms: float = 0.0
    requests_total: int = 0
    failures_total: int = 0
    retries_total: int = 0  # attempts that were retries or hedges of a call


@dataclass(frozen=True)
class FaultSpec:
    """A bounded fault toward a model (or one endpoint of it), like a mesh's fault filter."""

    model: str
    duration_s: float
    instance_id: str = ""
    delay_ms: int = 0
    delay_rate: float = 1.0
    abort_rate: float = 0.0
    abort_code: int = 14  # grpc UNAVAILABLE


@dataclass(frozen=True)
class CallerCounters:
    retries_total: int = 0
    hedges_total: int = 0
    ejections_total: int = 0
    no_endpoint_failures_total: int = 0
    attempts_total: int = 0
    calls_total: int = 0
    batch_sizes: Mapping[str, float] = field(default_factory=dict)  # model -> mean rows per call


class ModelCaller(Protocol):
    """Calls models by Consul service name; every method is safe to call concurrently."""

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: str = "",
        routing_key: str = "",
        timeout_s: float | None = None,
        output_names: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Run the model on `inputs` (first dim = rows) and return its outputs.

        Raises meshserve.errors.MeshError subclasses: UnavailableError when no replica is ready,
        DeadlineExceededError, InvalidInputError (the model's INVALID_ARGUMENT), OverloadedError.
        """
        ...

    async def metadata(self, model: str, version: str = "") -> model_pb2.ModelMetadata:
        """GetMetadata of one ready replica (NotFoundError when the model has no replica)."""
        ...

    def models(self) -> Sequence[str]:
        """Models the caller currently tracks."""
        ...

    def retain(self, models: Collection[str]) -> None:
        """Only `models` (those of the active plans) need to stay tracked: the caller may stop
        watching any other model once no call to it is in progress."""
        ...

    def snapshot(self, model: str = "") -> list[EndpointSnapshot]:
        """Every tracked endpoint (of `model`, or all)."""
        ...

    def drain(self, model: str, instance_id: str, drain: bool = True) -> int:
        """Stop (or resume) picking an endpoint; returns its in-flight count."""
        ...

    def inject_fault(self, fault: FaultSpec) -> str:
        """Install a fault; returns its id. It expires after fault.duration_s."""
        ...

    def clear_faults(self, model: str = "") -> int:
        """Remove faults (of `model`, or all); returns how many."""
        ...

    def counters(self) -> CallerCounters: ...

    async def close(self) -> None: ...
