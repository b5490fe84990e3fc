"""Every protobuf <-> internal conversion of the orchestrator's servicers, in one place."""

from __future__ import annotations

from collections.abc import Sequence

from meshserve.errors import InvalidInputError
from meshserve.limits import DEFAULT_LIMITS, Limits, check_count, check_string, check_strings
from meshserve.messages import fill
from meshserve.orchestrator.admin import AppliedPlan, ModelView
from meshserve.orchestrator.caller import CallerCounters, EndpointSnapshot, FaultSpec
from meshserve.orchestrator.engine import ExecuteCall, ExecutionResult
from meshserve.orchestrator.learning_port import Feedback, FeedbackOutcome
from meshserve.orchestrator.shadows import Disagreement
from meshserve.orchestrator.stats import PlanStatsView, ShadowStatsView
from meshserve.orchestrator.store import PlanInfo
from meshserve.orchestrator.traffic import TrafficPolicy
from meshserve.tensors import from_numpy_map, to_numpy_map
from meshserve.v1 import admin_pb2, orchestrator_pb2

__all__ = [
    "applied_to_proto",
    "call_from_proto",
    "check_request_limits",
    "fault_from_proto",
    "item_budget_s",
    "model_to_proto",
    "plan_summary_to_proto",
    "policy_from_proto",
    "policy_to_proto",
    "result_to_proto",
    "stats_to_proto",
]


def check_request_limits(request: orchestrator_pb2.ExecuteRequest, limits: Limits) -> None:
    """Counts and string lengths of an ExecuteRequest, before any tensor is decoded."""
    check_string("plan name", request.plan, limits, "max_name_chars")
    check_count("inputs", len(request.inputs), limits, "max_inputs")
    check_strings("input name", request.inputs, limits, "max_name_chars")
    check_string("request id", request.id, limits, "max_string_chars")
    check_string("routing_key", request.routing_key, limits, "max_string_chars")
    attributes = request.attributes
    if attributes:
        check_count("attributes", len(attributes), limits, "max_attributes")
        check_strings("attribute key", attributes, limits, "max_name_chars")
        check_strings("attribute value", attributes.values(), limits, "max_string_chars")


def item_budget_s(call_timeout_s: float | None, timeout_ms: int) -> float | None:
    """The budget of one execution: the smaller of the call deadline and the item's
    `timeout_ms` (0: none)."""
    if not timeout_ms:
        return call_timeout_s
    item = timeout_ms / 1000.0
    return item if call_timeout_s is None else min(call_timeout_s, item)


def call_from_proto(
    request: orchestrator_pb2.ExecuteRequest,
    call_timeout_s: float | None,
    limits: Limits = DEFAULT_LIMITS,
) -> ExecuteCall:
    """An ExecuteCall; the budget is the smaller of the call deadline and `timeout_ms`.
    Counts, strings and shapes are checked against `limits` before anything is decoded."""
    if not request.plan:
        raise InvalidInputError("ExecuteRequest: 'plan' (the plan name) is required")
    check_request_limits(request, limits)
    timeout_s = item_budget_s(call_timeout_s, request.timeout_ms)
    return ExecuteCall(
        plan=request.plan,
        inputs=to_numpy_map(request.inputs, limits.max_elements),
        request_id=request.id,
        plan_version=request.plan_version,
        routing_key=request.routing_key,
        attributes=dict(request.attributes),
        timeout_s=timeout_s,
    )


def result_to_proto(result: ExecutionResult) -> orchestrator_pb2.ExecuteResponse:
    return orchestrator_pb2.ExecuteResponse(
        id=result.request_id,
        plan=result.plan,
        plan_version=result.plan_version,
        outputs=from_numpy_map(result.outputs),
        trace_id=result.trace_id,
        decisions=result.decisions,
        latency_ms=result.latency_ms,
    )


def applied_to_proto(applied: AppliedPlan) -> admin_pb2.ApplyPlanResponse:
    contract = applied.typed.contract
    return admin_pb2.ApplyPlanResponse(
        name=applied.name,
        version=applied.version,
        typed_service=contract.service,
        schema_version=contract.schema_version,
        contract_fingerprint=contract.fingerprint,
        typed_notes=list(applied.typed.notes),
    )


def feedback_from_proto(request: orchestrator_pb2.FeedbackRequest, limits: Limits) -> Feedback:
    """A Feedback value (validated: id, exactly one signal, reward range, bounded sizes)."""
    if not request.request_id:
        raise InvalidInputError("Feedback: 'request_id' is required")
    check_string("Feedback request_id", request.request_id, limits, "max_string_chars")
    signal = request.WhichOneof("signal")
    if signal is None:
        raise InvalidInputError("Feedback: set one of 'reward' (in [0, 1]) or 'label'")
    return Feedback(
        request.request_id,
        reward=request.reward if signal == "reward" else None,
        label=request.label if signal == "label" else None,
        token=bytes(request.token),
    )


def feedback_outcome_to_proto(outcome: FeedbackOutcome) -> orchestrator_pb2.FeedbackResponse:
    return orchestrator_pb2.FeedbackResponse(
        accepted=True,
        applied_to=list(outcome.applied),
        already_applied=list(outcome.already_applied),
        duplicate=outcome.duplicate,
    )


def plan_summary_to_proto(info: PlanInfo) -> admin_pb2.PlanSummary:
    active = info.active_plan()
    return admin_pb2.PlanSummary(
        name=info.name,
        active_version=info.active,
        versions=sorted(info.versions),
        description=active.description,
        kind="python" if active.python else "declarative",
    )


def endpoint_to_proto(e: EndpointSnapshot) -> admin_pb2.Endpoint:
    return fill(admin_pb2.Endpoint, e)


def model_to_proto(view: ModelView) -> admin_pb2.ModelInfo:
    return admin_pb2.ModelInfo(
        name=view.name,
        versions=list(view.versions),
        endpoints=[endpoint_to_proto(e) for e in view.endpoints],
    )


def policy_from_proto(policy: admin_pb2.TrafficPolicy) -> TrafficPolicy:
    return TrafficPolicy(
        model=policy.model, version_weights=dict(policy.version_weights), sticky=policy.sticky
    )


def policy_to_proto(policy: TrafficPolicy) -> admin_pb2.TrafficPolicy:
    return admin_pb2.TrafficPolicy(
        model=policy.model, version_weights=dict(policy.version_weights), sticky=policy.sticky
    )


def fault_from_proto(request: admin_pb2.InjectFaultRequest) -> FaultSpec:
    if not request.duration_ms:
        raise InvalidInputError("InjectFault: 'duration_ms' is required (at most 3600000)")
    return FaultSpec(
        model=request.model,
        duration_s=request.duration_ms / 1000.0,
        instance_id=request.instance_id,
        delay_ms=request.delay_ms,
        delay_rate=request.delay_rate or 1.0,
        abort_rate=request.abort_rate,
        abort_code=request.abort_code or 14,
    )


def _plan_stats(view: PlanStatsView) -> admin_pb2.PlanStats:
    latency = fill(admin_pb2.LatencySummary, view)
    return fill(admin_pb2.PlanStats, view, latency=latency, decisions=view.decisions)


def _shadow_stats(view: ShadowStatsView) -> admin_pb2.ShadowStats:
    return fill(admin_pb2.ShadowStats, view)


def disagreements_to_proto(
    found: Sequence[Disagreement],
) -> admin_pb2.ListShadowDisagreementsResponse:
    return admin_pb2.ListShadowDisagreementsResponse(
        disagreements=[fill(admin_pb2.ShadowDisagreement, d) for d in found]
    )


def stats_to_proto(
    *,
    plans: Sequence[PlanStatsView],
    shadows: Sequence[ShadowStatsView],
    models: Sequence[ModelView],
    counters: CallerCounters,
    bandits: Sequence[admin_pb2.BanditStats],
    learners: Sequence[admin_pb2.LearnerStats],
    instance_id: str,
    leader: bool,
    learning: admin_pb2.Stats | None = None,
) -> admin_pb2.Stats:
    """`learning`: a Stats holding only the learning digest and feedback counters."""
    return admin_pb2.Stats(
        plans=[_plan_stats(p) for p in plans],
        shadows=[_shadow_stats(s) for s in shadows],
        models=[model_to_proto(m) for m in models],
        bandits=list(bandits),
        learners=list(learners),
        retries_total=counters.retries_total,
        ejections_total=counters.ejections_total,
        no_endpoint_failures_total=counters.no_endpoint_failures_total,
        instance_id=instance_id,
        leader=leader,
        learning_digest=learning.learning_digest if learning else "",
        feedback_applied_total=learning.feedback_applied_total if learning else 0,
        feedback_duplicates_total=learning.feedback_duplicates_total if learning else 0,
    )
