"""Typed gRPC contracts of models and plans: descriptors, message classes and converters.

Pure: no servers, no I/O. The mapping is written down for users in docs/TYPED.md.

Public API (stable; HTTP/JSON and OpenAPI are derived from the same descriptors)::

    contract = build_contract(
        "model" | "plan", name, inputs: Sequence[FieldSpec], outputs: Sequence[FieldSpec],
        schema_version=1,
    )
    contract.package          # "meshserve.models.mlp.v1" / "meshserve.plans.digits_pipeline.v1"
    contract.service          # "meshserve.models.mlp.v1.Mlp"
    contract.unary_method     # "Predict" (models) / "Execute" (plans)
    contract.stream_method    # "PredictStream" / "ExecuteStream" (bidirectional)
    contract.method_path(stream=False)   # "/meshserve.models.mlp.v1.Mlp/Predict"
    contract.file             # FileDescriptorProto (deterministic, self-contained: no imports)
    contract.file_name        # "meshserve/models/mlp/v1/mlp.proto"
    contract.pool             # the contract's own DescriptorPool (versions never clash)
    contract.request_class / contract.response_class      # protobuf message classes
    contract.inputs / contract.outputs                    # tuple[TensorField] (sorted by name)
    contract.input(name) / contract.output(name)          # TensorField (field, number, nested)
    contract.fingerprint      # sha256 hex of the deterministic descriptor
    contract.proto_text()     # the .proto, per-row shapes in the field comments

    contract.rows_of(msg) -> int         # rows of a request, read without decoding (admission)
    contract.decode_request(msg, limits) -> TypedRequest(arrays, request_id, timeout_ms,
                                                         routing_key, attributes)
    contract.encode_request(arrays, request_id=, timeout_ms=, routing_key=, attributes=)
    contract.encode_response(arrays, request_id=, status=StreamStatus|None,
                             decisions=, plan_version=, trace_id=)
    contract.decode_response(msg, limits) -> TypedResponse(arrays, request_id, status,
                                                           decisions, plan_version, trace_id)
    breaking_changes(old, new) -> list[BreakingChange]    # empty: compatible
    specs_from_proto(tensor_specs, optional=()) -> tuple[FieldSpec, ...]

Bad typed input raises InvalidInputError naming the field (and the tensor when the names
differ) and what was expected; a server output that breaks its own contract is InternalError.

Message layout. Request: ``request_id = 1``, ``timeout_ms = 2`` (models) or ``request_id = 1``,
``routing_key = 2``, ``attributes = 3`` (map<string, string>), ``timeout_ms = 4`` (plans).
Response: ``request_id = 1``, ``status = 2`` (stream items only); plans add ``decisions = 3``
(map<string, string>), ``plan_version = 4``, ``trace_id = 5``. Numbers 1-15 are meshserve's;
one field per tensor from 16 up (`naming`): a packed ``repeated <scalar>`` holding every row
flattened in row-major order when the row shape is fixed, else a ``<Dtype>Tensor {repeated
<scalar> values = 1; repeated int64 shape = 2;}`` message. Field names are lower_snake_case;
json_name is protoc's default (``request_id`` -> ``requestId``), exactly what protoc makes of the
exported .proto: json_format prints json names (field names with
``preserving_proto_field_name=True``) and parses both.
"""

from meshserve.contracts.codec import StreamStatus, TypedRequest, TypedResponse
from meshserve.contracts.compat import BreakingChange, breaking_changes
from meshserve.contracts.contract import Contract, TensorField, build_contract
from meshserve.contracts.specs import SCALARS, ContractKind, FieldSpec, Scalar, specs_from_proto

__all__ = [
    "SCALARS",
    "BreakingChange",
    "Contract",
    "ContractKind",
    "FieldSpec",
    "Scalar",
    "StreamStatus",
    "TensorField",
    "TypedRequest",
    "TypedResponse",
    "breaking_changes",
    "build_contract",
    "specs_from_proto",
]
