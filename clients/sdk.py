"""The meshserve SDK: numpy in, numpy out, over the Orchestrator and Admin gRPC services.

    async with MeshServeClient("127.0.0.1:7000", token="s3cret") as client:
        result = await client.execute("digits-pipeline", {"input": x})
        result.outputs["label"]
        await client.feedback(result.request_id, reward=1.0)

A client reaches a group of orchestrators, not one process: the target may list several
(``"h1:7000,h2:7000"``) or name Consul (``"consul://127.0.0.1:8500"``); calls are balanced
round robin and an orchestrator that answers UNAVAILABLE (dead, draining, unreachable) is
skipped while the call moves on to the next one within the same deadline (clients/group.py).
Unary calls fail over; a stream stays on the orchestrator it started on. Feedback carries the
request's feedback token (remembered from the response, or pass ``token=``), so whichever
orchestrator receives it applies it, exactly once.

Every failed call raises the ``meshserve.errors`` class for its status (``InvalidInputError``
for INVALID_ARGUMENT, ``OverloadedError`` with ``retry_pushback_ms``...; all are
``MeshError``, alias ``MeshServeError``) with ``code`` and the server's ``message``.
TLS: pass ``tls_ca_file`` (PEM of the CA that signed the server).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np

from meshserve.clients.group import GroupEndpoint, OrchestratorGroup
from meshserve.errors import DeadlineExceededError, MeshError
from meshserve.grpc_errors import error_from_status, from_rpc_error
from meshserve.telemetry import client_interceptors
from meshserve.tensors import from_numpy_map, to_numpy_map
from meshserve.tls import ClientTLS
from meshserve.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    orchestrator_pb2,
    plan_pb2,
)

if TYPE_CHECKING:
    from meshserve.clients.typed import TypedPlan

__all__ = ["ExecuteResult", "FeedbackResult", "MeshServeClient"]

T = TypeVar("T")
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Statuses after which a call is tried on the next orchestrator: it did not run (or, for
# Execute, running it again is acceptable; Feedback is idempotent by request id and step).
_FAIL_OVER = frozenset({grpc.StatusCode.UNAVAILABLE})


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
    feedback_token: bytes = b""
    served_by: str = ""  # the orchestrator (address) that answered


@dataclass(frozen=True)
class FeedbackResult:
    """What a Feedback call did: `applied` now, `already_applied` before (nothing twice)."""

    request_id: str
    applied: tuple[str, ...]
    already_applied: tuple[str, ...]
    duplicate: bool
    served_by: str = ""


def _result(response: orchestrator_pb2.ExecuteResponse) -> ExecuteResult:
    return ExecuteResult(
        request_id=response.id,
        plan=response.plan,
        plan_version=response.plan_version,
        outputs=to_numpy_map(response.outputs),
        decisions=dict(response.decisions),
        trace_id=response.trace_id,
        latency_ms=response.latency_ms,
        feedback_token=response.feedback_token,
    )


class MeshServeClient:
    """Async client of a group of orchestrators (Orchestrator + Admin services)."""

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        token: str = "",
        data_token: str = "",
        tls_ca_file: str = "",
        tls_server_name: str = "",
        timeout_s: float | None = 30.0,
        remembered_tokens: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`target`: one address, several (list or comma-separated) or ``consul://HOST:PORT``;
        `remembered_tokens`: feedback tokens of recent responses kept for `feedback`."""
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ]
        tls = ClientTLS(ca_file=tls_ca_file, server_name=tls_server_name) if tls_ca_file else None
        # Continue the caller's trace on the orchestrator when the application traces (an SDK
        # tracer provider is installed, ours or the app's: see telemetry.tracing_enabled).
        self.group = OrchestratorGroup(
            target, tls=tls, options=options, interceptors=client_interceptors(), clock=clock
        )
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        # Execute, ExecuteStream and Feedback present the data-plane token (orchestrator/auth.py).
        self._data_metadata = (("authorization", f"Bearer {data_token}"),) if data_token else ()
        self.timeout_s = timeout_s
        self._clock = clock
        self._tokens: OrderedDict[str, bytes] = OrderedDict()
        self._tokens_max = remembered_tokens

    async def __aenter__(self) -> MeshServeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.group.close()

    async def plan(self, name: str) -> TypedPlan:
        """Plan `name`'s typed service as an async callable (meshserve.clients.typed):
        ``pipeline = await client.plan("digits-pipeline"); await pipeline(input=x)``."""
        from meshserve.clients.typed import TypedPlan

        return await TypedPlan.connect(self, name)

    async def contract_info(
        self, *, plan: str = "", model: str = ""
    ) -> orchestrator_pb2.ContractInfo:
        """``Orchestrator.GetContract`` of a plan or a model (its `.proto` text included)."""
        request = (  # a oneof: set only the one that is asked for
            orchestrator_pb2.GetContractRequest(plan=plan)
            if plan
            else orchestrator_pb2.GetContractRequest(model=model)
        )
        return await self._invoke(
            lambda ep, t: ep.orchestrator.GetContract(
                request, timeout=t, metadata=self._data_metadata
            ),
            self.timeout_s,
        )

    async def call_typed(
        self,
        method_on: Callable[[grpc.aio.Channel], grpc.aio.UnaryUnaryMultiCallable[Any, T]],
        request: Any,
        timeout_s: float | None,
    ) -> T:
        """One typed unary call (`method_on(channel)` is the method on an orchestrator's
        channel) with the data token, balanced and failed over like every other call."""
        timeout = timeout_s if timeout_s is not None else self.timeout_s
        return await self._invoke(
            lambda ep, t: method_on(ep.channel)(request, timeout=t, metadata=self._data_metadata),
            timeout,
        )

    async def _invoke(
        self,
        attempt: Callable[[GroupEndpoint, float | None], Awaitable[T]],
        timeout_s: float | None,
    ) -> T:
        return (await self._invoke_on(attempt, timeout_s))[0]

    async def _invoke_on(
        self,
        attempt: Callable[[GroupEndpoint, float | None], Awaitable[T]],
        timeout_s: float | None,
    ) -> tuple[T, str]:
        """Run `attempt` on the group's endpoints in order until one answers with anything but
        a fail-over status, all within `timeout_s`; (its answer, its address), else raises the
        last error."""
        deadline = None if timeout_s is None else self._clock() + timeout_s
        last: grpc.aio.AioRpcError | None = None
        for endpoint in await self.group.order():
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                break
            try:
                result = await attempt(endpoint, remaining)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _FAIL_OVER:
                    raise from_rpc_error(exc) from None
                self.group.mark_down(endpoint)
                last = exc
                continue
            self.group.mark_up(endpoint)
            return result, endpoint.target
        if last is not None:
            raise from_rpc_error(last) from None
        raise DeadlineExceededError(f"no orchestrator answered within {timeout_s}s")

    def _admin_call(
        self,
        method: Callable[[admin_pb2_grpc.AdminAsyncStub], Callable[..., Awaitable[T]]],
        request: Any,
    ) -> Awaitable[T]:
        return self._invoke(
            lambda ep, t: method(ep.admin)(request, metadata=self._metadata, timeout=t),
            self.timeout_s,
        )

    def _remember(self, result: ExecuteResult) -> ExecuteResult:
        if result.feedback_token and self._tokens_max > 0:
            self._tokens[result.request_id] = result.feedback_token
            self._tokens.move_to_end(result.request_id)
            while len(self._tokens) > self._tokens_max:
                self._tokens.popitem(last=False)
        return result

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
        response, served_by = await self._invoke_on(
            lambda ep, t: ep.orchestrator.Execute(request, timeout=t, metadata=self._data_metadata),
            timeout,
        )
        return self._remember(replace(_result(response), served_by=served_by))

    async def execute_stream(
        self, requests: AsyncIterable[orchestrator_pb2.ExecuteRequest]
    ) -> AsyncIterator[ExecuteResult | MeshError]:
        """Many executions over one stream; yields results (or per-item errors) as they finish.

        Build requests with `request()`; every one needs a unique `id` to correlate. The stream
        runs on one orchestrator of the group (the next in turn).
        """
        endpoint = (await self.group.order())[0]
        call = endpoint.orchestrator.ExecuteStream(aiter(requests), metadata=self._data_metadata)
        try:
            async for response in call:
                if response.HasField("status") and response.status.code != 0:
                    err = error_from_status(response.status)
                    err.request_id = response.id
                    yield err
                else:
                    yield self._remember(replace(_result(response), served_by=endpoint.target))
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
        self,
        request_id: str,
        *,
        reward: float | None = None,
        label: int | None = None,
        token: bytes | None = None,
    ) -> list[str]:
        """Rate an earlier execution; returns the steps that consumed it now (`rate` says more).

        Sends the request's feedback token (`token`, else the one remembered from its response)
        so any orchestrator of the group applies it. A retry is safe: nothing is applied twice.
        """
        return list((await self.rate(request_id, reward=reward, label=label, token=token)).applied)

    async def rate(
        self,
        request_id: str,
        *,
        reward: float | None = None,
        label: int | None = None,
        token: bytes | None = None,
    ) -> FeedbackResult:
        """`feedback`, returning what was applied now and what had been applied already."""
        request = orchestrator_pb2.FeedbackRequest(request_id=request_id)
        if reward is not None:
            request.reward = reward
        if label is not None:
            request.label = label
        request.token = self._tokens.get(request_id, b"") if token is None else token
        response, served_by = await self._invoke_on(
            lambda ep, t: ep.orchestrator.Feedback(
                request, timeout=t, metadata=self._data_metadata
            ),
            self.timeout_s,
        )
        return FeedbackResult(
            request_id,
            tuple(response.applied_to),
            tuple(response.already_applied),
            response.duplicate,
            served_by,
        )

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
        response = await self._admin_call(lambda a: a.ApplyPlan, request)
        return response.name, response.version

    async def get_plan(self, name: str, version: int = 0) -> plan_pb2.Plan:
        return await self._admin_call(
            lambda a: a.GetPlan, admin_pb2.GetPlanRequest(name=name, version=version)
        )

    async def list_plans(self) -> list[admin_pb2.PlanSummary]:
        response = await self._admin_call(lambda a: a.ListPlans, admin_pb2.ListPlansRequest())
        return list(response.plans)

    async def delete_plan(self, name: str) -> int:
        response = await self._admin_call(
            lambda a: a.DeletePlan, admin_pb2.DeletePlanRequest(name=name)
        )
        return int(response.versions_deleted)

    async def rollback_plan(self, name: str, to_version: int) -> int:
        response = await self._admin_call(
            lambda a: a.RollbackPlan,
            admin_pb2.RollbackPlanRequest(name=name, to_version=to_version),
        )
        return int(response.version)

    async def list_models(self, model: str = "") -> list[admin_pb2.ModelInfo]:
        response = await self._admin_call(
            lambda a: a.ListModels, admin_pb2.ListModelsRequest(model=model)
        )
        return list(response.models)

    async def set_traffic_split(
        self, model: str, version_weights: Mapping[str, float], *, sticky: bool = False
    ) -> None:
        policy = admin_pb2.TrafficPolicy(
            model=model, version_weights=dict(version_weights), sticky=sticky
        )
        await self._admin_call(
            lambda a: a.SetTrafficSplit, admin_pb2.SetTrafficSplitRequest(policy=policy)
        )

    async def list_traffic_policies(self) -> list[admin_pb2.TrafficPolicy]:
        response = await self._admin_call(
            lambda a: a.ListTrafficPolicies, admin_pb2.ListTrafficPoliciesRequest()
        )
        return list(response.policies)

    async def drain_endpoint(self, model: str, instance_id: str, drain: bool = True) -> int:
        response = await self._admin_call(
            lambda a: a.DrainEndpoint,
            admin_pb2.DrainEndpointRequest(model=model, instance_id=instance_id, drain=drain),
        )
        return int(response.in_flight)

    async def stats(self) -> admin_pb2.Stats:
        return await self._admin_call(lambda a: a.GetStats, admin_pb2.GetStatsRequest())

    async def reset_learning(self, *, plan: str = "", step: str = "", learner: str = "") -> bool:
        """Forget what a bandit step (plan + step) or a learner learned; False: nothing stored."""
        response = await self._admin_call(
            lambda a: a.ResetLearning,
            admin_pb2.ResetLearningRequest(plan=plan, step=step, learner=learner),
        )
        return bool(response.existed)

    async def rollback_learner(self, learner: str) -> str:
        """Send a learner's traffic back to its standby version; returns the deployed one."""
        response = await self._admin_call(
            lambda a: a.RollbackLearner, admin_pb2.RollbackLearnerRequest(learner=learner)
        )
        return str(response.deployed_version)

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
            lambda a: a.InjectFault,
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
            lambda a: a.ClearFaults, admin_pb2.ClearFaultsRequest(model=model)
        )
        return int(response.cleared)

    async def get_trace(self, trace_id: str) -> admin_pb2.Trace:
        return await self._admin_call(
            lambda a: a.GetTrace, admin_pb2.GetTraceRequest(trace_id=trace_id)
        )

    async def shadow_disagreements(
        self, plan: str = "", step: str = "", candidate: str = "", limit: int = 0
    ) -> list[admin_pb2.ShadowDisagreement]:
        """Kept rows where a shadow candidate disagreed with its primary, newest first."""
        response = await self._admin_call(
            lambda a: a.ListShadowDisagreements,
            admin_pb2.ListShadowDisagreementsRequest(
                plan=plan, step=step, candidate=candidate, limit=limit
            ),
        )
        return list(response.disagreements)

    async def list_traces(self, slowest: int = 10) -> admin_pb2.ListTracesResponse:
        return await self._admin_call(
            lambda a: a.ListTraces, admin_pb2.ListTracesRequest(slowest=slowest)
        )
