from meshserve.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InferRequest(_message.Message):
    __slots__ = ("id", "inputs", "output_names", "timeout_ms", "traceparents")
    class InputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAMES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    inputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    output_names: _containers.RepeatedScalarFieldContainer[str]
    timeout_ms: int
    traceparents: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., inputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., output_names: _Optional[_Iterable[str]] = ..., timeout_ms: _Optional[int] = ..., traceparents: _Optional[_Iterable[str]] = ...) -> None: ...

class InferStats(_message.Message):
    __slots__ = ("batch_size", "batch_requests", "queue_wait_us", "compute_us")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_WAIT_US_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_US_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    batch_requests: int
    queue_wait_us: int
    compute_us: int
    def __init__(self, batch_size: _Optional[int] = ..., batch_requests: _Optional[int] = ..., queue_wait_us: _Optional[int] = ..., compute_us: _Optional[int] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("id", "outputs", "status", "stats", "instance_id")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _tensor_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    outputs: _containers.MessageMap[str, _tensor_pb2.Tensor]
    status: _tensor_pb2.Status
    stats: InferStats
    instance_id: str
    def __init__(self, id: _Optional[str] = ..., outputs: _Optional[_Mapping[str, _tensor_pb2.Tensor]] = ..., status: _Optional[_Union[_tensor_pb2.Status, _Mapping]] = ..., stats: _Optional[_Union[InferStats, _Mapping]] = ..., instance_id: _Optional[str] = ...) -> None: ...

class GetMetadataRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BatchingSettings(_message.Message):
    __slots__ = ("enabled", "max_batch_size", "max_wait_us", "queue_max")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_US_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MAX_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    max_batch_size: int
    max_wait_us: int
    queue_max: int
    def __init__(self, enabled: _Optional[bool] = ..., max_batch_size: _Optional[int] = ..., max_wait_us: _Optional[int] = ..., queue_max: _Optional[int] = ...) -> None: ...

class ModelMetadata(_message.Message):
    __slots__ = ("name", "version", "platform", "inputs", "outputs", "batching", "signature_sha256", "model_sha256", "instance_id", "typed_service", "schema_version", "contract_fingerprint")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPED_SERVICE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTRACT_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    platform: str
    inputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.TensorSpec]
    batching: BatchingSettings
    signature_sha256: str
    model_sha256: str
    instance_id: str
    typed_service: str
    schema_version: int
    contract_fingerprint: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., platform: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[_tensor_pb2.TensorSpec, _Mapping]]] = ..., batching: _Optional[_Union[BatchingSettings, _Mapping]] = ..., signature_sha256: _Optional[str] = ..., model_sha256: _Optional[str] = ..., instance_id: _Optional[str] = ..., typed_service: _Optional[str] = ..., schema_version: _Optional[int] = ..., contract_fingerprint: _Optional[str] = ...) -> None: ...
