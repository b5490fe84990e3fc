"""Typed calls from Python: a plan's or a model's own gRPC service, numpy in and numpy out.

    async with MeshServeClient("127.0.0.1:7000") as client:
        pipeline = await client.plan("digits-pipeline")     # fetches the live contract
        result = await pipeline(input=x)                      # or pipeline({"input:0": x})
        result.outputs["label"], result.decisions

    mlp = await TypedModel.connect("127.0.0.1:50051")       # a replica, directly
    (await mlp(input=x)).outputs["probabilities"]

No bytes are packed by hand: arrays go into the contract's typed fields (docs/TYPED.md) and
come back reshaped to their rows. The contract is fetched once (``Orchestrator.GetContract`` /
``ModelService.GetMetadata``, fingerprint checked); after a breaking plan change the server
answers FAILED_PRECONDITION and ``await pipeline.refresh()`` fetches the new one. Failures raise
the ``meshserve.errors`` class of the status, like the rest of the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from meshserve.contracts import Contract
from meshserve.contracts.wire import contract_from_info, model_contract_from_metadata
from meshserve.grpc_errors import from_rpc_error
from meshserve.tls import ClientTLS, open_channel
from meshserve.v1 import model_pb2, model_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc

if TYPE_CHECKING:
    from meshserve.clients.sdk import MeshServeClient

__all__ = ["TypedModel", "TypedPlan", "TypedResult", "fetch_contract_info"]


@dataclass(frozen=True)
class TypedResult:
    """Outputs of one typed call (plans also: decisions, version, trace id)."""

    outputs: dict[str, np.ndarray]
    request_id: str = ""
    decisions: dict[str, str] = field(default_factory=dict)
    plan_version: int = 0
    trace_id: str = ""


class _TypedCall:
    """One contract's unary method; subclasses say how a request travels (`_send`)."""

    def __init__(self, contract: Contract, timeout_s: float | None):
        self.timeout_s = timeout_s
        self._use(contract)

    def _use(self, contract: Contract) -> None:
        self.contract = contract

    def _method_on(self, channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        return channel.unary_unary(
            self.contract.method_path(),
            request_serializer=self.contract.request_class.SerializeToString,
            response_deserializer=self.contract.response_class.FromString,
        )

    async def _send(self, request: Any, timeout_s: float | None) -> Any:
        raise NotImplementedError

    @property
    def inputs(self) -> dict[str, str]:
        """Input tensor name -> what its field holds (dtype and rows)."""
        return {f.name: f.expected() for f in self.contract.inputs}

    @property
    def outputs(self) -> dict[str, str]:
        return {f.name: f.expected() for f in self.contract.outputs}

    async def _invoke(
        self,
        arrays: Mapping[str, Any] | None,
        named: Mapping[str, Any],
        timeout_s: float | None,
        **fixed: Any,
    ) -> TypedResult:
        request = self.contract.encode_request({**(arrays or {}), **named}, **fixed)
        response = await self._send(request, timeout_s if timeout_s is not None else self.timeout_s)
        typed = self.contract.decode_response(response)
        return TypedResult(
            outputs=typed.arrays,
            request_id=typed.request_id,
            decisions=typed.decisions,
            plan_version=typed.plan_version,
            trace_id=typed.trace_id,
        )


class TypedPlan(_TypedCall):
    """A plan's typed ``Execute`` as an async callable (see the module docstring). Calls go
    through the client: its data token, and balance and fail-over across its orchestrators."""

    def __init__(self, client: MeshServeClient, contract: Contract) -> None:
        self._client = client
        self._methods: dict[int, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        super().__init__(contract, client.timeout_s)

    def _use(self, contract: Contract) -> None:
        super()._use(contract)
        self._methods = {}  # per channel: the method of the contract in use

    def _cached_method(
        self, channel: grpc.aio.Channel
    ) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        method = self._methods.get(id(channel))
        if method is None:
            method = self._methods[id(channel)] = self._method_on(channel)
        return method

    async def _send(self, request: Any, timeout_s: float | None) -> Any:
        return await self._client.call_typed(self._cached_method, request, timeout_s)

    @classmethod
    async def connect(cls, client: MeshServeClient, name: str) -> TypedPlan:
        return cls(client, contract_from_info(await client.contract_info(plan=name)))

    async def refresh(self) -> Contract:
        """Fetch the plan's live contract again (after a breaking change); returns it."""
        self._use(contract_from_info(await self._client.contract_info(plan=self.contract.name)))
        return self.contract

    async def __call__(
        self,
        arrays: Mapping[str, Any] | None = None,
        /,
        *,
        routing_key: str = "",
        attributes: Mapping[str, str] | None = None,
        request_id: str = "",
        timeout_s: float | None = None,
        **inputs: Any,
    ) -> TypedResult:
        """Run the plan on its inputs by name (keywords, or a mapping for any tensor name)."""
        return await self._invoke(
            arrays,
            inputs,
            timeout_s,
            routing_key=routing_key,
            attributes=dict(attributes or {}),
            request_id=request_id,
        )


async def fetch_contract_info(
    channel: grpc.aio.Channel, *, plan: str = "", model: str = "", timeout_s: float | None = 30.0
) -> orchestrator_pb2.ContractInfo:
    """``Orchestrator.GetContract`` of a plan or a model over one channel (tools, benches; the
    SDK's `MeshServeClient.contract_info` asks its group)."""
    request = (
        orchestrator_pb2.GetContractRequest(plan=plan)
        if plan
        else (orchestrator_pb2.GetContractRequest(model=model))
    )
    try:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        return await stub.GetContract(request, timeout=timeout_s)
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None


class TypedModel(_TypedCall):
    """A replica's typed ``Predict`` as an async callable; owns its channel (``close()`` or
    ``async with``)."""

    @classmethod
    async def connect(
        cls, target: str, *, tls_ca_file: str = "", timeout_s: float | None = 30.0
    ) -> TypedModel:
        tls = ClientTLS(ca_file=tls_ca_file) if tls_ca_file else None
        channel = open_channel(target, tls)
        try:
            metadata = await model_pb2_grpc.ModelServiceStub(channel).GetMetadata(
                model_pb2.GetMetadataRequest(), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            await channel.close()
            raise from_rpc_error(exc) from None
        return cls(channel, model_contract_from_metadata(metadata), timeout_s)

    def __init__(self, channel: grpc.aio.Channel, contract: Contract, timeout_s: float | None):
        self._channel = channel
        super().__init__(contract, timeout_s)

    def _use(self, contract: Contract) -> None:
        super()._use(contract)
        self._method = self._method_on(self._channel)

    async def _send(self, request: Any, timeout_s: float | None) -> Any:
        try:
            return await self._method(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> TypedModel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def __call__(
        self,
        arrays: Mapping[str, Any] | None = None,
        /,
        *,
        request_id: str = "",
        timeout_s: float | None = None,
        **inputs: Any,
    ) -> TypedResult:
        """Run the model on its inputs by name (keywords, or a mapping for any tensor name)."""
        return await self._invoke(arrays, inputs, timeout_s, request_id=request_id)
