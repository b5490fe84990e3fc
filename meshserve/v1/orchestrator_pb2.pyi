from meshserve.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetContractRequest(_message.Message):
    __slots__ = ("plan", "model")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    plan: str
    model: str
    def __init__(self, plan: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class ContractTensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "any_shape", "optional")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    ANY_SHAPE_FIELD_NUMBER: _ClassVar[int]
    OPTIONAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: _tensor_pb2.DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    any_shape: bool
    optional: bool
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[_Union[_tensor_pb2.DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., any_shape: _Optional[bool] = ..., optional: _Optional[bool] = ...) -> None: ...

class ContractInfo(_message.Message):
    __slots__ = ("kind", "name", "schema_version", "inputs", "outputs", "fingerprint", "service", "file_name", "proto_text")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    PROTO_TEXT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    schema_version: int
    inputs: _containers.RepeatedCompositeFieldContainer[ContractTensor]
    outputs: _containers.RepeatedCompositeFieldContainer[ContractTensor]
    fingerprint: str
    service: str
    file_name: str
    proto_text: str
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., schema_version: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[ContractTensor, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[ContractTensor, _Mapping]]] = ..., fingerprint: _Optional[str] = ..., service: _Optional[str] = ..., file_name: _Optional[str] = ..., proto_text: _Optional[str] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("id", "plan", "plan_version", "inputs", "routing_key", "attributes", "timeout_ms")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    plan: str
    plan_version: int
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    routing_key: str
    attributes: _containers.ScalarMap[str, str]
    timeout_ms: int
    def __init__(self, id: _Optional[str] = ..., plan: _Optional[str] = ..., plan_version: _Optional[int] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., routing_key: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("id", "plan", "plan_version", "outputs", "status", "trace_id", "decisions", "latency_ms", "feedback_token")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    class DecisionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    PLAN_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    id: str
    plan: str
    plan_version: int
    outputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    status: _tensor_pb2.Status
    trace_id: str
    decisions: _containers.ScalarMap[str, str]
    latency_ms: float
    feedback_token: bytes
    def __init__(self, id: _Optional[str] = ..., plan: _Optional[str] = ..., plan_version: _Optional[int] = ..., outputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., status: _Optional[_Union[_tensor_pb2.Status, _Mapping]] = ..., trace_id: _Optional[str] = ..., decisions: _Optional[_Mapping[str, str]] = ..., latency_ms: _Optional[float] = ..., feedback_token: _Optional[bytes] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("request_id", "reward", "label", "token")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    reward: float
    label: int
    token: bytes
    def __init__(self, request_id: _Optional[str] = ..., reward: _Optional[float] = ..., label: _Optional[int] = ..., token: _Optional[bytes] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("accepted", "applied_to", "already_applied", "duplicate")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    APPLIED_TO_FIELD_NUMBER: _ClassVar[int]
    ALREADY_APPLIED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    applied_to: _containers.RepeatedScalarFieldContainer[str]
    already_applied: _containers.RepeatedScalarFieldContainer[str]
    duplicate: bool
    def __init__(self, accepted: _Optional[bool] = ..., applied_to: _Optional[_Iterable[str]] = ..., already_applied: _Optional[_Iterable[str]] = ..., duplicate: _Optional[bool] = ...) -> None: ...
