from meshserve.v1 import plan_pb2 as _plan_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResetLearningRequest(_message.Message):
    __slots__ = ("plan", "step", "learner")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    LEARNER_FIELD_NUMBER: _ClassVar[int]
    plan: str
    step: str
    learner: str
    def __init__(self, plan: _Optional[str] = ..., step: _Optional[str] = ..., learner: _Optional[str] = ...) -> None: ...

class ResetLearningResponse(_message.Message):
    __slots__ = ("existed",)
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: _Optional[bool] = ...) -> None: ...

class RollbackLearnerRequest(_message.Message):
    __slots__ = ("learner",)
    LEARNER_FIELD_NUMBER: _ClassVar[int]
    learner: str
    def __init__(self, learner: _Optional[str] = ...) -> None: ...

class RollbackLearnerResponse(_message.Message):
    __slots__ = ("deployed_version",)
    DEPLOYED_VERSION_FIELD_NUMBER: _ClassVar[int]
    deployed_version: str
    def __init__(self, deployed_version: _Optional[str] = ...) -> None: ...

class ApplyPlanRequest(_message.Message):
    __slots__ = ("plan", "plan_text", "expected_version", "dry_run", "breaking_change")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PLAN_TEXT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    BREAKING_CHANGE_FIELD_NUMBER: _ClassVar[int]
    plan: _plan_pb2.Plan
    plan_text: str
    expected_version: int
    dry_run: bool
    breaking_change: bool
    def __init__(self, plan: _Optional[_Union[_plan_pb2.Plan, _Mapping]] = ..., plan_text: _Optional[str] = ..., expected_version: _Optional[int] = ..., dry_run: _Optional[bool] = ..., breaking_change: _Optional[bool] = ...) -> None: ...

class ApplyPlanResponse(_message.Message):
    __slots__ = ("name", "version", "typed_service", "schema_version", "contract_fingerprint", "typed_notes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPED_SERVICE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    TYPED_NOTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    typed_service: str
    schema_version: int
    contract_fingerprint: str
    typed_notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., typed_service: _Optional[str] = ..., schema_version: _Optional[int] = ..., contract_fingerprint: _Optional[str] = ..., typed_notes: _Optional[_Iterable[str]] = ...) -> None: ...

class GetPlanRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ListPlansRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PlanSummary(_message.Message):
    __slots__ = ("name", "active_version", "versions", "description", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    active_version: int
    versions: _containers.RepeatedScalarFieldContainer[int]
    description: str
    kind: str
    def __init__(self, name: _Optional[str] = ..., active_version: _Optional[int] = ..., versions: _Optional[_Iterable[int]] = ..., description: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class ListPlansResponse(_message.Message):
    __slots__ = ("plans",)
    PLANS_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[PlanSummary]
    def __init__(self, plans: _Optional[_Iterable[_Union[PlanSummary, _Mapping]]] = ...) -> None: ...

class DeletePlanRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePlanResponse(_message.Message):
    __slots__ = ("versions_deleted",)
    VERSIONS_DELETED_FIELD_NUMBER: _ClassVar[int]
    versions_deleted: int
    def __init__(self, versions_deleted: _Optional[int] = ...) -> None: ...

class RollbackPlanRequest(_message.Message):
    __slots__ = ("name", "to_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    to_version: int
    def __init__(self, name: _Optional[str] = ..., to_version: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("instance_id", "address", "version", "state", "in_flight", "latency_ewma_ms", "requests_total", "failures_total")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_EWMA_MS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FAILURES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    address: str
    version: str
    state: str
    in_flight: int
    latency_ewma_ms: float
    requests_total: int
    failures_total: int
    def __init__(self, instance_id: _Optional[str] = ..., address: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[str] = ..., in_flight: _Optional[int] = ..., latency_ewma_ms: _Optional[float] = ..., requests_total: _Optional[int] = ..., failures_total: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "endpoints", "versions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., versions: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class TrafficPolicy(_message.Message):
    __slots__ = ("model", "version_weights", "sticky")
    class VersionWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    STICKY_FIELD_NUMBER: _ClassVar[int]
    model: str
    version_weights: _containers.ScalarMap[str, float]
    sticky: bool
    def __init__(self, model: _Optional[str] = ..., version_weights: _Optional[_Mapping[str, float]] = ..., sticky: _Optional[bool] = ...) -> None: ...

class SetTrafficSplitRequest(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: TrafficPolicy
    def __init__(self, policy: _Optional[_Union[TrafficPolicy, _Mapping]] = ...) -> None: ...

class SetTrafficSplitResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTrafficPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTrafficPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[TrafficPolicy]
    def __init__(self, policies: _Optional[_Iterable[_Union[TrafficPolicy, _Mapping]]] = ...) -> None: ...

class DrainEndpointRequest(_message.Message):
    __slots__ = ("model", "instance_id", "drain")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    model: str
    instance_id: str
    drain: bool
    def __init__(self, model: _Optional[str] = ..., instance_id: _Optional[str] = ..., drain: _Optional[bool] = ...) -> None: ...

class DrainEndpointResponse(_message.Message):
    __slots__ = ("in_flight",)
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    in_flight: int
    def __init__(self, in_flight: _Optional[int] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LatencySummary(_message.Message):
    __slots__ = ("count", "errors", "p50_ms", "p99_ms", "mean_ms")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    count: int
    errors: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    def __init__(self, count: _Optional[int] = ..., errors: _Optional[int] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., mean_ms: _Optional[float] = ...) -> None: ...

class PlanStats(_message.Message):
    __slots__ = ("plan", "latency", "decisions")
    class DecisionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PLAN_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    plan: str
    latency: LatencySummary
    decisions: _containers.ScalarMap[str, int]
    def __init__(self, plan: _Optional[str] = ..., latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., decisions: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ShadowStats(_message.Message):
    __slots__ = ("plan", "step", "compared", "agreed", "candidate_errors", "candidate_latency_p50_ms", "primary_latency_p50_ms", "candidate", "candidate_latency_p99_ms", "primary_latency_p99_ms", "agreement_rate", "comparison", "tolerance", "runs")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    AGREED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_RATE_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    plan: str
    step: str
    compared: int
    agreed: int
    candidate_errors: int
    candidate_latency_p50_ms: float
    primary_latency_p50_ms: float
    candidate: str
    candidate_latency_p99_ms: float
    primary_latency_p99_ms: float
    agreement_rate: float
    comparison: str
    tolerance: float
    runs: int
    def __init__(self, plan: _Optional[str] = ..., step: _Optional[str] = ..., compared: _Optional[int] = ..., agreed: _Optional[int] = ..., candidate_errors: _Optional[int] = ..., candidate_latency_p50_ms: _Optional[float] = ..., primary_latency_p50_ms: _Optional[float] = ..., candidate: _Optional[str] = ..., candidate_latency_p99_ms: _Optional[float] = ..., primary_latency_p99_ms: _Optional[float] = ..., agreement_rate: _Optional[float] = ..., comparison: _Optional[str] = ..., tolerance: _Optional[float] = ..., runs: _Optional[int] = ...) -> None: ...

class ListShadowDisagreementsRequest(_message.Message):
    __slots__ = ("plan", "step", "candidate", "limit")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    plan: str
    step: str
    candidate: str
    limit: int
    def __init__(self, plan: _Optional[str] = ..., step: _Optional[str] = ..., candidate: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ShadowDisagreement(_message.Message):
    __slots__ = ("plan", "step", "candidate", "request_id", "row", "primary_value", "candidate_value", "distance", "unix_ms")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_VALUE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_VALUE_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    plan: str
    step: str
    candidate: str
    request_id: str
    row: int
    primary_value: str
    candidate_value: str
    distance: float
    unix_ms: int
    def __init__(self, plan: _Optional[str] = ..., step: _Optional[str] = ..., candidate: _Optional[str] = ..., request_id: _Optional[str] = ..., row: _Optional[int] = ..., primary_value: _Optional[str] = ..., candidate_value: _Optional[str] = ..., distance: _Optional[float] = ..., unix_ms: _Optional[int] = ...) -> None: ...

class ListShadowDisagreementsResponse(_message.Message):
    __slots__ = ("disagreements",)
    DISAGREEMENTS_FIELD_NUMBER: _ClassVar[int]
    disagreements: _containers.RepeatedCompositeFieldContainer[ShadowDisagreement]
    def __init__(self, disagreements: _Optional[_Iterable[_Union[ShadowDisagreement, _Mapping]]] = ...) -> None: ...

class ArmStats(_message.Message):
    __slots__ = ("arm", "context", "pulls", "reward_sum", "alpha", "beta")
    ARM_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PULLS_FIELD_NUMBER: _ClassVar[int]
    REWARD_SUM_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    arm: str
    context: str
    pulls: int
    reward_sum: float
    alpha: float
    beta: float
    def __init__(self, arm: _Optional[str] = ..., context: _Optional[str] = ..., pulls: _Optional[int] = ..., reward_sum: _Optional[float] = ..., alpha: _Optional[float] = ..., beta: _Optional[float] = ...) -> None: ...

class BanditStats(_message.Message):
    __slots__ = ("plan", "step", "arms")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    plan: str
    step: str
    arms: _containers.RepeatedCompositeFieldContainer[ArmStats]
    def __init__(self, plan: _Optional[str] = ..., step: _Optional[str] = ..., arms: _Optional[_Iterable[_Union[ArmStats, _Mapping]]] = ...) -> None: ...

class LearnerStats(_message.Message):
    __slots__ = ("name", "updates", "deployed_version", "holdout_accuracy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    DEPLOYED_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    name: str
    updates: int
    deployed_version: str
    holdout_accuracy: float
    def __init__(self, name: _Optional[str] = ..., updates: _Optional[int] = ..., deployed_version: _Optional[str] = ..., holdout_accuracy: _Optional[float] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("plans", "models", "shadows", "bandits", "learners", "retries_total", "ejections_total", "no_endpoint_failures_total", "instance_id", "leader", "learning_digest", "feedback_applied_total", "feedback_duplicates_total")
    PLANS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SHADOWS_FIELD_NUMBER: _ClassVar[int]
    BANDITS_FIELD_NUMBER: _ClassVar[int]
    LEARNERS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    EJECTIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    NO_ENDPOINT_FAILURES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEARNING_DIGEST_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_APPLIED_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_DUPLICATES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[PlanStats]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    shadows: _containers.RepeatedCompositeFieldContainer[ShadowStats]
    bandits: _containers.RepeatedCompositeFieldContainer[BanditStats]
    learners: _containers.RepeatedCompositeFieldContainer[LearnerStats]
    retries_total: int
    ejections_total: int
    no_endpoint_failures_total: int
    instance_id: str
    leader: bool
    learning_digest: str
    feedback_applied_total: int
    feedback_duplicates_total: int
    def __init__(self, plans: _Optional[_Iterable[_Union[PlanStats, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., shadows: _Optional[_Iterable[_Union[ShadowStats, _Mapping]]] = ..., bandits: _Optional[_Iterable[_Union[BanditStats, _Mapping]]] = ..., learners: _Optional[_Iterable[_Union[LearnerStats, _Mapping]]] = ..., retries_total: _Optional[int] = ..., ejections_total: _Optional[int] = ..., no_endpoint_failures_total: _Optional[int] = ..., instance_id: _Optional[str] = ..., leader: _Optional[bool] = ..., learning_digest: _Optional[str] = ..., feedback_applied_total: _Optional[int] = ..., feedback_duplicates_total: _Optional[int] = ...) -> None: ...

class InjectFaultRequest(_message.Message):
    __slots__ = ("model", "instance_id", "delay_ms", "delay_rate", "abort_rate", "abort_code", "duration_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    DELAY_RATE_FIELD_NUMBER: _ClassVar[int]
    ABORT_RATE_FIELD_NUMBER: _ClassVar[int]
    ABORT_CODE_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    instance_id: str
    delay_ms: int
    delay_rate: float
    abort_rate: float
    abort_code: int
    duration_ms: int
    def __init__(self, model: _Optional[str] = ..., instance_id: _Optional[str] = ..., delay_ms: _Optional[int] = ..., delay_rate: _Optional[float] = ..., abort_rate: _Optional[float] = ..., abort_code: _Optional[int] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class InjectFaultResponse(_message.Message):
    __slots__ = ("fault_id",)
    FAULT_ID_FIELD_NUMBER: _ClassVar[int]
    fault_id: str
    def __init__(self, fault_id: _Optional[str] = ...) -> None: ...

class ClearFaultsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ClearFaultsResponse(_message.Message):
    __slots__ = ("cleared",)
    CLEARED_FIELD_NUMBER: _ClassVar[int]
    cleared: int
    def __init__(self, cleared: _Optional[int] = ...) -> None: ...

class GetTraceRequest(_message.Message):
    __slots__ = ("trace_id",)
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    def __init__(self, trace_id: _Optional[str] = ...) -> None: ...

class SpanRecord(_message.Message):
    __slots__ = ("span_id", "parent_span_id", "name", "service", "start_unix_nano", "end_unix_nano", "status", "status_message", "attributes", "linked_span_ids")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    LINKED_SPAN_IDS_FIELD_NUMBER: _ClassVar[int]
    span_id: str
    parent_span_id: str
    name: str
    service: str
    start_unix_nano: int
    end_unix_nano: int
    status: str
    status_message: str
    attributes: _containers.ScalarMap[str, str]
    linked_span_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, span_id: _Optional[str] = ..., parent_span_id: _Optional[str] = ..., name: _Optional[str] = ..., service: _Optional[str] = ..., start_unix_nano: _Optional[int] = ..., end_unix_nano: _Optional[int] = ..., status: _Optional[str] = ..., status_message: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., linked_span_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Trace(_message.Message):
    __slots__ = ("trace_id", "spans")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    spans: _containers.RepeatedCompositeFieldContainer[SpanRecord]
    def __init__(self, trace_id: _Optional[str] = ..., spans: _Optional[_Iterable[_Union[SpanRecord, _Mapping]]] = ...) -> None: ...

class ListTracesRequest(_message.Message):
    __slots__ = ("slowest",)
    SLOWEST_FIELD_NUMBER: _ClassVar[int]
    slowest: int
    def __init__(self, slowest: _Optional[int] = ...) -> None: ...

class TraceSummary(_message.Message):
    __slots__ = ("trace_id", "root_name", "duration_ms", "start_unix_nano", "status")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    ROOT_NAME_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    root_name: str
    duration_ms: float
    start_unix_nano: int
    status: str
    def __init__(self, trace_id: _Optional[str] = ..., root_name: _Optional[str] = ..., duration_ms: _Optional[float] = ..., start_unix_nano: _Optional[int] = ..., status: _Optional[str] = ...) -> None: ...

class ListTracesResponse(_message.Message):
    __slots__ = ("traces",)
    TRACES_FIELD_NUMBER: _ClassVar[int]
    traces: _containers.RepeatedCompositeFieldContainer[TraceSummary]
    def __init__(self, traces: _Optional[_Iterable[_Union[TraceSummary, _Mapping]]] = ...) -> None: ...
