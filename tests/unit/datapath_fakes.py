"""In-memory stand-ins below the Transport interface, for unit tests of the router, the replica
wrapper and fault injection (integration tests use real replicas over real channels)."""

from __future__ import annotations

from meshserve.orchestrator.datapath.transport import Metadata
from meshserve.v1 import model_pb2


class FakeTransport:
    """A Transport whose every attempt goes to `answer` (override it); records `closed`."""

    def __init__(self, instance_id: str = "") -> None:
        self.instance_id = instance_id
        self.closed = False

    def infer(
        self, request: model_pb2.InferRequest, timeout_s: float, metadata: Metadata = ()
    ) -> object:
        return self.answer(request, timeout_s)

    async def answer(
        self, request: model_pb2.InferRequest, timeout_s: float
    ) -> model_pb2.InferResponse:
        return model_pb2.InferResponse(id=request.id, instance_id=self.instance_id)

    async def close(self) -> None:
        self.closed = True
