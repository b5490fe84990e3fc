"""Thin gRPC servicers: protobuf in, the transport-free cores, protobuf out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from meshserve.contracts.live import ContractSet
from meshserve.contracts.wire import contract_to_info, model_contract_from_metadata
from meshserve.errors import FailedPreconditionError, InvalidInputError, NotFoundError
from meshserve.grpc_errors import error_to_status, map_errors, map_stream_errors
from meshserve.limits import DEFAULT_LIMITS, Limits
from meshserve.names import check_name, quote
from meshserve.orchestrator import converters
from meshserve.orchestrator.admin import AdminCore
from meshserve.orchestrator.engine import Engine, ExecutionResult
from meshserve.orchestrator.learning_port import Learning
from meshserve.orchestrator.plans.validate import MetadataLookup
from meshserve.streams import fan_out
from meshserve.telemetry import trace_to_proto, traces_to_proto
from meshserve.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    plan_pb2,
)

__all__ = ["AdminServicer", "OrchestratorServicer", "give_feedback"]

log = logging.getLogger(__name__)


def call_remaining_s(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    """Seconds left of the call's deadline (None: no deadline)."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e8 else max(0.0, remaining)


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServicer):
    """Execute, ExecuteStream (bidirectional, in-band statuses) and Feedback."""

    def __init__(
        self,
        engine: Engine,
        learning: Learning,
        stream_max_in_flight: int = 256,
        limits: Limits = DEFAULT_LIMITS,
        contracts: ContractSet | None = None,
        model_metadata: MetadataLookup | None = None,
    ) -> None:
        self.engine = engine
        self.learning = learning
        self.stream_max_in_flight = stream_max_in_flight
        self.limits = limits
        self.contracts = contracts or ContractSet()
        self.model_metadata = model_metadata

    @map_errors
    async def Execute(
        self, request: orchestrator_pb2.ExecuteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> orchestrator_pb2.ExecuteResponse:
        call = converters.call_from_proto(request, call_remaining_s(context), self.limits)
        return self._respond(await self.engine.execute(call))

    def _respond(self, result: ExecutionResult) -> orchestrator_pb2.ExecuteResponse:
        response = converters.result_to_proto(result)
        response.feedback_token = self.learning.token_for(result.request_id)
        return response

    @map_stream_errors
    async def ExecuteStream(
        self,
        request_iterator: AsyncIterator[orchestrator_pb2.ExecuteRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[orchestrator_pb2.ExecuteResponse]:
        """One plan run per item, concurrently through ``meshserve.streams.fan_out``; a failed
        run is answered with the item's id, its plan and an in-band Status."""

        async def one(request: orchestrator_pb2.ExecuteRequest) -> orchestrator_pb2.ExecuteResponse:
            if not request.id:
                raise InvalidInputError("ExecuteStream items need an 'id' to correlate")
            call = converters.call_from_proto(request, call_remaining_s(context), self.limits)
            return self._respond(await self.engine.execute(call))

        def failed(
            request: orchestrator_pb2.ExecuteRequest, exc: Exception
        ) -> orchestrator_pb2.ExecuteResponse:
            return orchestrator_pb2.ExecuteResponse(
                id=request.id, plan=request.plan, status=error_to_status(exc)
            )

        async for response in fan_out(
            request_iterator, one, max_in_flight=self.stream_max_in_flight, on_error=failed
        ):
            yield response

    @map_errors
    async def Feedback(
        self, request: orchestrator_pb2.FeedbackRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> orchestrator_pb2.FeedbackResponse:
        return await give_feedback(self.learning, request, self.limits)

    @map_errors
    async def GetContract(
        self,
        request: orchestrator_pb2.GetContractRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> orchestrator_pb2.ContractInfo:
        target = request.WhichOneof("target")
        if target == "plan":
            name = check_name("plan", request.plan)
            contract = self.contracts.get(name)
            if contract is None:
                raise NotFoundError(
                    f"plan {quote(name)} has no typed contract here (plans: "
                    f"{', '.join(c.name for c in self.contracts.contracts()) or 'none'})"
                )
            return contract_to_info(contract)
        if target == "model" and self.model_metadata is not None:
            name = check_name("model", request.model)
            metadata = await self.model_metadata(name, "")
            return contract_to_info(model_contract_from_metadata(metadata))
        raise InvalidInputError("GetContract: set 'plan' or 'model' (a name)")


async def give_feedback(
    learning: Learning, request: orchestrator_pb2.FeedbackRequest, limits: Limits
) -> orchestrator_pb2.FeedbackResponse:
    """Feedback, transport-free (gRPC Feedback and HTTP ``POST /v1/feedback`` both call it):
    validated, then applied once through `Learning.apply_feedback`."""
    outcome = await learning.apply_feedback(converters.feedback_from_proto(request, limits))
    return converters.feedback_outcome_to_proto(outcome)


class AdminServicer(admin_pb2_grpc.AdminServicer):
    """The control plane; authentication happens in orchestrator/auth.py."""

    def __init__(
        self,
        core: AdminCore,
        *,
        instance_id: str,
        is_leader: Callable[[], bool],
        learning: Learning,
    ) -> None:
        self.core = core
        self.instance_id = instance_id
        self.is_leader = is_leader
        self.learning = learning

    @map_errors
    async def ApplyPlan(
        self, request: admin_pb2.ApplyPlanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ApplyPlanResponse:
        source = request.WhichOneof("source")
        applied = await self.core.apply_plan(
            request.plan if source == "plan" else None,
            request.plan_text if source == "plan_text" else "",
            expected_version=request.expected_version,
            dry_run=request.dry_run,
            breaking_change=request.breaking_change,
        )
        return converters.applied_to_proto(applied)

    @map_errors
    async def GetPlan(
        self, request: admin_pb2.GetPlanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> plan_pb2.Plan:
        return self.core.get_plan(request.name, request.version)

    @map_errors
    async def ListPlans(
        self, request: admin_pb2.ListPlansRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ListPlansResponse:
        return admin_pb2.ListPlansResponse(
            plans=[converters.plan_summary_to_proto(i) for i in self.core.list_plans()]
        )

    @map_errors
    async def DeletePlan(
        self, request: admin_pb2.DeletePlanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.DeletePlanResponse:
        return admin_pb2.DeletePlanResponse(
            versions_deleted=await self.core.delete_plan(request.name)
        )

    @map_errors
    async def RollbackPlan(
        self, request: admin_pb2.RollbackPlanRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ApplyPlanResponse:
        applied = await self.core.rollback_plan(request.name, request.to_version)
        return converters.applied_to_proto(applied)

    @map_errors
    async def ListModels(
        self, request: admin_pb2.ListModelsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ListModelsResponse:
        views = await self.core.list_models(request.model)
        return admin_pb2.ListModelsResponse(models=[converters.model_to_proto(v) for v in views])

    @map_errors
    async def SetTrafficSplit(
        self, request: admin_pb2.SetTrafficSplitRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.SetTrafficSplitResponse:
        await self.core.set_traffic(converters.policy_from_proto(request.policy))
        return admin_pb2.SetTrafficSplitResponse()

    @map_errors
    async def ListTrafficPolicies(
        self,
        request: admin_pb2.ListTrafficPoliciesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> admin_pb2.ListTrafficPoliciesResponse:
        return admin_pb2.ListTrafficPoliciesResponse(
            policies=[converters.policy_to_proto(p) for p in self.core.traffic_policies()]
        )

    @map_errors
    async def DrainEndpoint(
        self, request: admin_pb2.DrainEndpointRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.DrainEndpointResponse:
        in_flight = self.core.drain(request.model, request.instance_id, request.drain)
        return admin_pb2.DrainEndpointResponse(in_flight=in_flight)

    @map_errors
    async def GetStats(
        self, request: admin_pb2.GetStatsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.Stats:
        engine = self.core.engine
        stats_of = getattr(self.learning, "stats", None)
        bandits, learners = stats_of() if callable(stats_of) else ([], [])
        summary_of = getattr(self.learning, "summary", None)
        summary = summary_of() if callable(summary_of) else None
        models = await self.core.list_models(discover=False)
        return converters.stats_to_proto(
            plans=engine.stats.plans(),
            shadows=engine.stats.shadows(),
            models=models,
            counters=self.core.caller.counters(),
            bandits=bandits,
            learners=learners,
            instance_id=self.instance_id,
            leader=self.is_leader(),
            learning=summary,
        )

    def _hub_method(self, name: str) -> Callable[..., Any]:
        method = getattr(self.learning, name, None)
        if method is None:
            raise FailedPreconditionError(f"{name}: no learning is configured on this orchestrator")
        return method  # type: ignore[no-any-return]

    @map_errors
    async def ResetLearning(
        self, request: admin_pb2.ResetLearningRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ResetLearningResponse:
        existed = await self._hub_method("reset")(
            plan=request.plan, step=request.step, learner=request.learner
        )
        return admin_pb2.ResetLearningResponse(existed=bool(existed))

    @map_errors
    async def RollbackLearner(
        self,
        request: admin_pb2.RollbackLearnerRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> admin_pb2.RollbackLearnerResponse:
        if not request.learner:
            raise InvalidInputError("RollbackLearner: 'learner' is required")
        version = await self._hub_method("rollback_learner")(request.learner)
        return admin_pb2.RollbackLearnerResponse(deployed_version=str(version))

    @map_errors
    async def ListShadowDisagreements(
        self,
        request: admin_pb2.ListShadowDisagreementsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> admin_pb2.ListShadowDisagreementsResponse:
        found = self.core.engine.stats.shadow_results.disagreements(
            request.plan, request.step, request.candidate, request.limit
        )
        return converters.disagreements_to_proto(found)

    @map_errors
    async def InjectFault(
        self, request: admin_pb2.InjectFaultRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.InjectFaultResponse:
        fault_id = self.core.inject_fault(converters.fault_from_proto(request))
        return admin_pb2.InjectFaultResponse(fault_id=fault_id)

    @map_errors
    async def ClearFaults(
        self, request: admin_pb2.ClearFaultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ClearFaultsResponse:
        return admin_pb2.ClearFaultsResponse(cleared=self.core.clear_faults(request.model))

    @map_errors
    async def GetTrace(
        self, request: admin_pb2.GetTraceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.Trace:
        if not request.trace_id:
            raise InvalidInputError("GetTrace: 'trace_id' (32 hex digits) is required")
        return trace_to_proto(request.trace_id, self.core.trace_spans(request.trace_id))

    @map_errors
    async def ListTraces(
        self, request: admin_pb2.ListTracesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ListTracesResponse:
        return traces_to_proto(self.core.slowest_traces(request.slowest))
