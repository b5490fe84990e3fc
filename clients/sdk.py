"""The meshserve SDK: numpy in, numpy out, over the Orchestrator and Admin gRPC services.

    async with MeshServeClient("127.0.0.1:7000", token="s3cret") as client:
        result = await client.execute("digits-pipeline", {"input": x})
        result.outputs["label"]

Every failed call raises the ``meshserve.errors`` class for its status (``InvalidInputError``
for INVALID_ARGUMENT, ``OverloadedError`` with ``retry_pushback_ms``...; all are
``MeshError``, alias ``MeshServeError``) with ``code`` and the server's ``message``.
TLS: pass ``tls_ca_file`` (PEM of the CA that signed the server).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np

from meshserve.errors import MeshError
from meshserve.grpc_errors import error_from_status, from_rpc_error
from meshserve.telemetry import client_interceptors
from meshserve.tensors import from_numpy_map, to_numpy_map
from meshserve.tls import ClientTLS, open_channel
from meshserve.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    plan_pb2,
)

if TYPE_CHECKING:
    from meshserve.clients.typed import TypedPlan

__all__ = ["ExecuteResult", "MeshServeClient"]

T = TypeVar("T")
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ExecuteResult:
    """Outputs of one plan execution and how it was served."""

    request_id: str
    plan: str
    plan_version: int
    outputs: dict[str, np.ndarray]
    decisions: dict[str, str] = field(default_factory=dict)
    trace_id: str = ""
    latency_ms: float = 0.0


def _result(response: orchestrator_pb2.ExecuteResponse) -> ExecuteResult:
    return ExecuteResult(
        request_id=response.id,
        plan=response.plan,
        plan_version=response.plan_version,
        outputs=to_numpy_map(response.outputs),
        decisions=dict(response.decisions),
        trace_id=response.trace_id,
        latency_ms=response.latency_ms,
    )


class MeshServeClient:
    """Async client of one orchestrator (Orchestrator + Admin services)."""

    def __init__(
        self,
        target: str,
        *,
        token: str = "",
        data_token: str = "",
        tls_ca_file: str = "",
        tls_server_name: str = "",
        timeout_s: float | None = 30.0,
    ) -> None:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ]
        tls = ClientTLS(ca_file=tls_ca_file, server_name=tls_server_name) if tls_ca_file else None
        # Continue the caller's trace on the orchestrator when the application traces (an SDK
        # tracer provider is installed, ours or the app's: see telemetry.tracing_enabled).
        interceptors = client_interceptors()
        self._channel = open_channel(target, tls, options=options, interceptors=interceptors)
        self._orchestrator = orchestrator_pb2_grpc.OrchestratorStub(self._channel)
        self._admin = admin_pb2_grpc.AdminStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        # Execute, ExecuteStream and Feedback present the data-plane token (orchestrator/auth.py).
        self._data_metadata = (("authorization", f"Bearer {data_token}"),) if data_token else ()
        self.timeout_s = timeout_s

    async def __aenter__(self) -> MeshServeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel to the orchestrator (typed calls share it)."""
        return self._channel

    async def plan(self, name: str) -> TypedPlan:
        """Plan `name`'s typed service as an async callable (meshserve.clients.typed):
        ``pipeline = await client.plan("digits-pipeline"); await pipeline(input=x)``."""
        from meshserve.clients.typed import TypedPlan

        return await TypedPlan.connect(self, name)

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    def _admin_call(self, method: Callable[..., Awaitable[T]], request: object) -> Awaitable[T]:
        return self._call(method(request, metadata=self._metadata, timeout=self.timeout_s))

    # ---- Orchestrator -----------------------------------------------------------------------
    async def execute(
        self,
        plan: str,
        inputs: Mapping[str, np.ndarray],
        *,
        routing_key: str = "",
        attributes: Mapping[str, str] | None = None,
        request_id: str = "",
        plan_version: int = 0,
        timeout_s: float | None = None,
    ) -> ExecuteResult:
        """Run `plan` once on named arrays (first dimension = rows)."""
        request = orchestrator_pb2.ExecuteRequest(
            id=request_id,
            plan=plan,
            plan_version=plan_version,
            inputs=from_numpy_map(inputs),
            routing_key=routing_key,
            attributes=dict(attributes or {}),
        )
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        return _result(
            await self._call(
                self._orchestrator.Execute(request, timeout=timeout, metadata=self._data_metadata)
            )
        )

    async def execute_stream(
        self, requests: AsyncIterable[orchestrator_pb2.ExecuteRequest]
    ) -> AsyncIterator[ExecuteResult | MeshError]:
        """Many executions over one stream; yields results (or per-item errors) as they finish.

        Build requests with `request()`; every one needs a unique `id` to correlate.
        """
        call = self._orchestrator.ExecuteStream(aiter(requests), metadata=self._data_metadata)
        try:
            async for response in call:
                if response.HasField("status") and response.status.code != 0:
                    err = error_from_status(response.status)
                    err.request_id = response.id
                    yield err
                else:
                    yield _result(response)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    @staticmethod
    def request(
        request_id: str,
        plan: str,
        inputs: Mapping[str, np.ndarray],
        *,
        routing_key: str = "",
        attributes: Mapping[str, str] | None = None,
        timeout_ms: int = 0,
    ) -> orchestrator_pb2.ExecuteRequest:
        """An ExecuteRequest for `execute_stream`."""
        return orchestrator_pb2.ExecuteRequest(
            id=request_id,
            plan=plan,
            inputs=from_numpy_map(inputs),
            routing_key=routing_key,
            attributes=dict(attributes or {}),
            timeout_ms=timeout_ms,
        )

    async def feedback(
        self, request_id: str, *, reward: float | None = None, label: int | None = None
    ) -> list[str]:
        """Rate an earlier execution; returns the steps that consumed the feedback."""
        request = orchestrator_pb2.FeedbackRequest(request_id=request_id)
        if reward is not None:
            request.reward = reward
        if label is not None:
            request.label = label
        response = await self._call(
            self._orchestrator.Feedback(
                request, timeout=self.timeout_s, metadata=self._data_metadata
            )
        )
        return list(response.applied_to)

    # ---- Admin ------------------------------------------------------------------------------
    async def apply_plan(
        self,
        plan: plan_pb2.Plan | str,
        *,
        expected_version: int = 0,
        dry_run: bool = False,
        breaking_change: bool = False,
    ) -> tuple[str, int]:
        """Store a plan (proto, or YAML/JSON text); returns (name, version). `breaking_change`
        accepts a typed contract incompatible with the active one (docs/TYPED.md)."""
        request = admin_pb2.ApplyPlanRequest(
            expected_version=expected_version, dry_run=dry_run, breaking_change=breaking_change
        )
        if isinstance(plan, plan_pb2.Plan):
            request.plan.CopyFrom(plan)
        else:
            request.plan_text = plan
        response = await self._admin_call(self._admin.ApplyPlan, request)
        return response.name, response.version

    async def get_plan(self, name: str, version: int = 0) -> plan_pb2.Plan:
        return await self._admin_call(
            self._admin.GetPlan, admin_pb2.GetPlanRequest(name=name, version=version)
        )

    async def list_plans(self) -> list[admin_pb2.PlanSummary]:
        response = await self._admin_call(self._admin.ListPlans, admin_pb2.ListPlansRequest())
        return list(response.plans)

    async def delete_plan(self, name: str) -> int:
        response = await self._admin_call(
            self._admin.DeletePlan, admin_pb2.DeletePlanRequest(name=name)
        )
        return int(response.versions_deleted)

    async def rollback_plan(self, name: str, to_version: int) -> int:
        response = await self._admin_call(
            self._admin.RollbackPlan,
            admin_pb2.RollbackPlanRequest(name=name, to_version=to_version),
        )
        return int(response.version)

    async def list_models(self, model: str = "") -> list[admin_pb2.ModelInfo]:
        response = await self._admin_call(
            self._admin.ListModels, admin_pb2.ListModelsRequest(model=model)
        )
        return list(response.models)

    async def set_traffic_split(
        self, model: str, version_weights: Mapping[str, float], *, sticky: bool = False
    ) -> None:
        policy = admin_pb2.TrafficPolicy(
            model=model, version_weights=dict(version_weights), sticky=sticky
        )
        await self._admin_call(
            self._admin.SetTrafficSplit, admin_pb2.SetTrafficSplitRequest(policy=policy)
        )

    async def list_traffic_policies(self) -> list[admin_pb2.TrafficPolicy]:
        response = await self._admin_call(
            self._admin.ListTrafficPolicies, admin_pb2.ListTrafficPoliciesRequest()
        )
        return list(response.policies)

    async def drain_endpoint(self, model: str, instance_id: str, drain: bool = True) -> int:
        response = await self._admin_call(
            self._admin.DrainEndpoint,
            admin_pb2.DrainEndpointRequest(model=model, instance_id=instance_id, drain=drain),
        )
        return int(response.in_flight)

    async def stats(self) -> admin_pb2.Stats:
        return await self._admin_call(self._admin.GetStats, admin_pb2.GetStatsRequest())

    async def inject_fault(
        self,
        model: str,
        *,
        duration_ms: int,
        delay_ms: int = 0,
        delay_rate: float = 0.0,
        abort_rate: float = 0.0,
        abort_code: int = 0,
        instance_id: str = "",
    ) -> str:
        response = await self._admin_call(
            self._admin.InjectFault,
            admin_pb2.InjectFaultRequest(
                model=model,
                instance_id=instance_id,
                delay_ms=delay_ms,
                delay_rate=delay_rate,
                abort_rate=abort_rate,
                abort_code=abort_code,
                duration_ms=duration_ms,
            ),
        )
        return str(response.fault_id)

    async def clear_faults(self, model: str = "") -> int:
        response = await self._admin_call(
            self._admin.ClearFaults, admin_pb2.ClearFaultsRequest(model=model)
        )
        return int(response.cleared)

    async def get_trace(self, trace_id: str) -> admin_pb2.Trace:
        return await self._admin_call(
            self._admin.GetTrace, admin_pb2.GetTraceRequest(trace_id=trace_id)
        )

    async def shadow_disagreements(
        self, plan: str = "", step: str = "", candidate: str = "", limit: int = 0
    ) -> list[admin_pb2.ShadowDisagreement]:
        """Kept rows where a shadow candidate disagreed with its primary, newest first."""
        response = await self._admin_call(
            self._admin.ListShadowDisagreements,
            admin_pb2.ListShadowDisagreementsRequest(
                plan=plan, step=step, candidate=candidate, limit=limit
            ),
        )
        return list(response.disagreements)

    async def list_traces(self, slowest: int = 10) -> admin_pb2.ListTracesResponse:
        return await self._admin_call(
            self._admin.ListTraces, admin_pb2.ListTracesRequest(slowest=slowest)
        )
