from google.protobuf import struct_pb2 as _struct_pb2
from meshserve.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Aggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_UNSPECIFIED: _ClassVar[Aggregation]
    AGGREGATION_MEAN: _ClassVar[Aggregation]
    AGGREGATION_WEIGHTED_MEAN: _ClassVar[Aggregation]
    AGGREGATION_MAJORITY_VOTE: _ClassVar[Aggregation]
    AGGREGATION_MAX_PROBABILITY: _ClassVar[Aggregation]
    AGGREGATION_CUSTOM: _ClassVar[Aggregation]

class ShadowComparison(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHADOW_COMPARISON_UNSPECIFIED: _ClassVar[ShadowComparison]
    SHADOW_COMPARISON_LABEL: _ClassVar[ShadowComparison]
    SHADOW_COMPARISON_PROBABILITY: _ClassVar[ShadowComparison]
    SHADOW_COMPARISON_REGRESSION: _ClassVar[ShadowComparison]

class BanditPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BANDIT_POLICY_UNSPECIFIED: _ClassVar[BanditPolicy]
    BANDIT_POLICY_THOMPSON: _ClassVar[BanditPolicy]
    BANDIT_POLICY_EPSILON_GREEDY: _ClassVar[BanditPolicy]
    BANDIT_POLICY_LINUCB: _ClassVar[BanditPolicy]
AGGREGATION_UNSPECIFIED: Aggregation
AGGREGATION_MEAN: Aggregation
AGGREGATION_WEIGHTED_MEAN: Aggregation
AGGREGATION_MAJORITY_VOTE: Aggregation
AGGREGATION_MAX_PROBABILITY: Aggregation
AGGREGATION_CUSTOM: Aggregation
SHADOW_COMPARISON_UNSPECIFIED: ShadowComparison
SHADOW_COMPARISON_LABEL: ShadowComparison
SHADOW_COMPARISON_PROBABILITY: ShadowComparison
SHADOW_COMPARISON_REGRESSION: ShadowComparison
BANDIT_POLICY_UNSPECIFIED: BanditPolicy
BANDIT_POLICY_THOMPSON: BanditPolicy
BANDIT_POLICY_EPSILON_GREEDY: BanditPolicy
BANDIT_POLICY_LINUCB: BanditPolicy

class Plan(_message.Message):
    __slots__ = ("name", "version", "description", "inputs", "steps", "outputs", "python", "created_unix_ms", "output_specs", "typed")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PYTHON_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SPECS_FIELD_NUMBER: _ClassVar[int]
    TYPED_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    description: str
    inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    steps: _containers.RepeatedCompositeFieldContainer[Step]
    outputs: _containers.ScalarMap[str, str]
    python: str
    created_unix_ms: int
    output_specs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    typed: TypedContract
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., description: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., steps: _Optional[_Iterable[_Union[Step, _Mapping]]] = ..., outputs: _Optional[_Mapping[str, str]] = ..., python: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., output_specs: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., typed: _Optional[_Union[TypedContract, _Mapping]] = ...) -> None: ...

class TypedContract(_message.Message):
    __slots__ = ("schema_version", "outputs", "fingerprint", "service")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    outputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    fingerprint: str
    service: str
    def __init__(self, schema_version: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., fingerprint: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class Step(_message.Message):
    __slots__ = ("name", "inputs", "model", "logic", "ensemble", "select", "split", "shadow", "bandit", "custom")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LOGIC_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLE_FIELD_NUMBER: _ClassVar[int]
    SELECT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    BANDIT_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    name: str
    inputs: _containers.ScalarMap[str, str]
    model: ModelStep
    logic: LogicStep
    ensemble: EnsembleStep
    select: SelectStep
    split: SplitStep
    shadow: ShadowStep
    bandit: BanditStep
    custom: CustomStep
    def __init__(self, name: _Optional[str] = ..., inputs: _Optional[_Mapping[str, str]] = ..., model: _Optional[_Union[ModelStep, _Mapping]] = ..., logic: _Optional[_Union[LogicStep, _Mapping]] = ..., ensemble: _Optional[_Union[EnsembleStep, _Mapping]] = ..., select: _Optional[_Union[SelectStep, _Mapping]] = ..., split: _Optional[_Union[SplitStep, _Mapping]] = ..., shadow: _Optional[_Union[ShadowStep, _Mapping]] = ..., bandit: _Optional[_Union[BanditStep, _Mapping]] = ..., custom: _Optional[_Union[CustomStep, _Mapping]] = ...) -> None: ...

class CustomStep(_message.Message):
    __slots__ = ("kind", "params")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    params: _struct_pb2.Struct
    def __init__(self, kind: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ModelStep(_message.Message):
    __slots__ = ("model", "version", "timeout_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    timeout_ms: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class LogicStep(_message.Message):
    __slots__ = ("function", "params")
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    function: str
    params: _struct_pb2.Struct
    def __init__(self, function: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("model", "logic", "plan")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LOGIC_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    model: ModelStep
    logic: LogicStep
    plan: str
    def __init__(self, model: _Optional[_Union[ModelStep, _Mapping]] = ..., logic: _Optional[_Union[LogicStep, _Mapping]] = ..., plan: _Optional[str] = ...) -> None: ...

class Branch(_message.Message):
    __slots__ = ("name", "target", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    target: Target
    weight: float
    def __init__(self, name: _Optional[str] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., weight: _Optional[float] = ...) -> None: ...

class EnsembleStep(_message.Message):
    __slots__ = ("members", "aggregation", "output", "aggregator")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    AGGREGATOR_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Branch]
    aggregation: Aggregation
    output: str
    aggregator: str
    def __init__(self, members: _Optional[_Iterable[_Union[Branch, _Mapping]]] = ..., aggregation: _Optional[_Union[Aggregation, str]] = ..., output: _Optional[str] = ..., aggregator: _Optional[str] = ...) -> None: ...

class SelectCase(_message.Message):
    __slots__ = ("when", "branch")
    WHEN_FIELD_NUMBER: _ClassVar[int]
    BRANCH_FIELD_NUMBER: _ClassVar[int]
    when: str
    branch: Branch
    def __init__(self, when: _Optional[str] = ..., branch: _Optional[_Union[Branch, _Mapping]] = ...) -> None: ...

class SelectStep(_message.Message):
    __slots__ = ("cases", "default_branch", "router", "branches")
    CASES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BRANCH_FIELD_NUMBER: _ClassVar[int]
    ROUTER_FIELD_NUMBER: _ClassVar[int]
    BRANCHES_FIELD_NUMBER: _ClassVar[int]
    cases: _containers.RepeatedCompositeFieldContainer[SelectCase]
    default_branch: Branch
    router: str
    branches: _containers.RepeatedCompositeFieldContainer[Branch]
    def __init__(self, cases: _Optional[_Iterable[_Union[SelectCase, _Mapping]]] = ..., default_branch: _Optional[_Union[Branch, _Mapping]] = ..., router: _Optional[str] = ..., branches: _Optional[_Iterable[_Union[Branch, _Mapping]]] = ...) -> None: ...

class SplitStep(_message.Message):
    __slots__ = ("branches", "sticky")
    BRANCHES_FIELD_NUMBER: _ClassVar[int]
    STICKY_FIELD_NUMBER: _ClassVar[int]
    branches: _containers.RepeatedCompositeFieldContainer[Branch]
    sticky: bool
    def __init__(self, branches: _Optional[_Iterable[_Union[Branch, _Mapping]]] = ..., sticky: _Optional[bool] = ...) -> None: ...

class ShadowStep(_message.Message):
    __slots__ = ("primary", "candidate", "sample_rate", "compare_output", "comparison", "tolerance")
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    COMPARE_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    primary: Branch
    candidate: Branch
    sample_rate: float
    compare_output: str
    comparison: ShadowComparison
    tolerance: float
    def __init__(self, primary: _Optional[_Union[Branch, _Mapping]] = ..., candidate: _Optional[_Union[Branch, _Mapping]] = ..., sample_rate: _Optional[float] = ..., compare_output: _Optional[str] = ..., comparison: _Optional[_Union[ShadowComparison, str]] = ..., tolerance: _Optional[float] = ...) -> None: ...

class BanditStep(_message.Message):
    __slots__ = ("arms", "policy", "epsilon", "context_attribute", "seed", "feature_attributes", "features_input", "exploration", "personalize_by")
    ARMS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FEATURE_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    FEATURES_INPUT_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    PERSONALIZE_BY_FIELD_NUMBER: _ClassVar[int]
    arms: _containers.RepeatedCompositeFieldContainer[Branch]
    policy: BanditPolicy
    epsilon: float
    context_attribute: str
    seed: int
    feature_attributes: _containers.RepeatedScalarFieldContainer[str]
    features_input: str
    exploration: float
    personalize_by: str
    def __init__(self, arms: _Optional[_Iterable[_Union[Branch, _Mapping]]] = ..., policy: _Optional[_Union[BanditPolicy, str]] = ..., epsilon: _Optional[float] = ..., context_attribute: _Optional[str] = ..., seed: _Optional[int] = ..., feature_attributes: _Optional[_Iterable[str]] = ..., features_input: _Optional[str] = ..., exploration: _Optional[float] = ..., personalize_by: _Optional[str] = ...) -> None: ...
