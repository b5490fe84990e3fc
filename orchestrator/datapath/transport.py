"""Transports: how a replica's attempts travel over its channel ("stream" or "unary").

The table ``TRANSPORTS`` maps a config name (``DataPathConfig.transport``, per-model
``ModelPathConfig.transport``, ``--model-transport``) to a transport class. Contract:

- ``cls(stub, target, config)`` builds the transport of one replica from the replica's stub
  (its channel is the replica's: it opens and closes it), its ``host:port`` target (for
  messages) and the data path config. Constructing does no I/O.
- ``infer(request, timeout_s, metadata)`` sends one attempt and returns an awaitable of the
  ``InferResponse``; every failure is raised as the ``MeshError`` of its status (code kept, a broken
  stream as ``reason="stream_broken"`` so the router may retry it elsewhere). `metadata` (the
  first caller's CLIENT span traceparent, or empty) goes with the call where the wire allows.
- ``close()`` releases what the transport holds (outstanding attempts fail as broken).
- Optional class attribute ``rpc_method``: the ModelService method it calls (``Infer`` when
  absent), the name of the attempt's CLIENT spans (datapath/spans.py).

Wrappers (``faults.FaultInjectingTransport``) implement the same protocol around a real one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Final, Protocol

import grpc

from meshserve.grpc_errors import from_rpc_error
from meshserve.orchestrator.datapath.stream import StreamSession
from meshserve.orchestrator.tables import Table
from meshserve.v1 import model_pb2

if TYPE_CHECKING:
    from meshserve.orchestrator.datapath.config import DataPathConfig
    from meshserve.v1.model_pb2_grpc import ModelServiceAsyncStub

__all__ = [
    "TRANSPORTS",
    "Metadata",
    "StreamTransport",
    "Transport",
    "TransportClass",
    "UnaryTransport",
    "register_transport",
]


Metadata = Sequence[tuple[str, str]]  # gRPC metadata sent with one attempt (traceparent)


class Transport(Protocol):
    def infer(
        self, request: model_pb2.InferRequest, timeout_s: float, metadata: Metadata = ()
    ) -> Awaitable[model_pb2.InferResponse]:
        """Send one attempt; the awaitable raises the MeshError of the failure."""
        ...

    async def close(self) -> None: ...


class TransportClass(Protocol):
    def __call__(
        self, stub: ModelServiceAsyncStub, target: str, config: DataPathConfig
    ) -> Transport: ...


class UnaryTransport:
    """One ``Infer`` call per attempt, with the attempt's timeout and metadata."""

    rpc_method = "Infer"

    def __init__(self, stub: ModelServiceAsyncStub, target: str, config: DataPathConfig) -> None:
        self._call = stub.Infer

    async def infer(
        self, request: model_pb2.InferRequest, timeout_s: float, metadata: Metadata = ()
    ) -> model_pb2.InferResponse:
        try:
            return await self._call(request, timeout=timeout_s, metadata=tuple(metadata))
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def close(self) -> None:
        return None


class StreamTransport:
    """Attempts multiplexed over one long-lived ``InferStream`` (``stream.StreamSession``).

    Each item carries its own budget (``timeout_ms``): the server drops it if it expires in its
    queue. Metadata is not sent per item (the stream is shared by many calls).
    """

    rpc_method = "InferStream"

    def __init__(self, stub: ModelServiceAsyncStub, target: str, config: DataPathConfig) -> None:
        self._session = StreamSession(stub, target, config.stream_max_in_flight)

    def infer(
        self, request: model_pb2.InferRequest, timeout_s: float, metadata: Metadata = ()
    ) -> Awaitable[model_pb2.InferResponse]:
        request.timeout_ms = max(1, int(timeout_s * 1000))
        return self._session.infer(request, timeout_s)

    async def close(self) -> None:
        await self._session.close()


TRANSPORTS: Final[Table[TransportClass]] = Table("transport")


def register_transport(name: str, cls: TransportClass) -> None:
    """Make `cls` the transport of config name `name` (see the module docstring's contract)."""
    TRANSPORTS.register(name, cls)


TRANSPORTS.register("stream", StreamTransport, builtin=True)
TRANSPORTS.register("unary", UnaryTransport, builtin=True)
