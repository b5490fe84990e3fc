from meshserve.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
