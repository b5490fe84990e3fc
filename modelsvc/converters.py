"""Every protobuf <-> internal conversion of the model service, in one place.

meshserve.v1 (Tensor: raw little-endian bytes) and the Open Inference Protocol (KServe V2:
``datatype`` strings, typed ``contents`` or ``raw_input_contents``). Element counts are checked
before anything is allocated; every failure is an InvalidInputError naming the input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meshserve import tensors
from meshserve.errors import InvalidInputError
from meshserve.limits import DEFAULT_LIMITS, Limits, check_count, check_string, check_strings
from meshserve.modelsvc.backend import TensorSpec
from meshserve.modelsvc.batcher import BatchStats
from meshserve.modelsvc.core import InferOutput, ModelInfo
from meshserve.names import quote
from meshserve.v1 import grpc_predict_v2_pb2 as v2
from meshserve.v1 import model_pb2, tensor_pb2

__all__ = [
    "V2_TO_NUMPY",
    "metadata_to_proto",
    "request_from_proto",
    "response_to_proto",
    "rows_of",
    "spec_to_proto",
    "v2_metadata_to_proto",
    "v2_request_from_proto",
    "v2_response_to_proto",
    "v2_rows_of",
]

Arrays = dict[str, np.ndarray]

# -- meshserve.v1 ---------------------------------------------------------------------------


def spec_to_proto(spec: TensorSpec) -> tensor_pb2.TensorSpec:
    """The meshserve.v1 TensorSpec of a signature tensor."""
    return tensor_pb2.TensorSpec(
        name=spec.name, dtype=tensors.NUMPY_TO_DTYPE.get(spec.dtype, 0), shape=list(spec.shape)
    )


def rows_of(request: model_pb2.InferRequest) -> int:
    """Rows an InferRequest claims (first dimension of its first input, 1 for a scalar), read
    from the shape alone for admission control; validation later holds the data to it."""
    for tensor in request.inputs.values():
        shape = tensor.shape
        return max(1, shape[0]) if shape else 1
    return 1


def _check_request(inputs: int, names: Any, outputs: Any, request_id: str, limits: Limits) -> None:
    """Counts and string lengths of a request, before any tensor is decoded."""
    check_count("request inputs", inputs, limits, "max_inputs")
    check_count("requested outputs", len(outputs), limits, "max_inputs")
    check_strings("input name", names, limits, "max_name_chars")
    check_strings("output name", outputs, limits, "max_name_chars")
    check_string("request id", request_id, limits, "max_string_chars")


def request_from_proto(
    request: model_pb2.InferRequest, max_elements: int, limits: Limits = DEFAULT_LIMITS
) -> tuple[Arrays, tuple[str, ...], float | None]:
    """(inputs, output_names, timeout_s) of an InferRequest; arrays view the message bytes.

    Counts, names and shapes are checked against `limits` (elements against `max_elements`)
    before anything is decoded."""
    output_names = tuple(request.output_names)
    _check_request(len(request.inputs), request.inputs, output_names, request.id, limits)
    inputs = tensors.to_numpy_map(request.inputs, max_elements)
    timeout_s = request.timeout_ms / 1000.0 if request.timeout_ms else None
    return inputs, output_names, timeout_s


def stats_to_proto(stats: BatchStats) -> model_pb2.InferStats:
    return model_pb2.InferStats(
        batch_size=stats.batch_size,
        batch_requests=stats.batch_requests,
        queue_wait_us=stats.queue_wait_us,
        compute_us=stats.compute_us,
    )


def response_to_proto(
    request_id: str, result: InferOutput, instance_id: str
) -> model_pb2.InferResponse:
    return model_pb2.InferResponse(
        id=request_id,
        outputs=tensors.from_numpy_map(result.outputs),
        stats=stats_to_proto(result.stats),
        instance_id=instance_id,
    )


def metadata_to_proto(info: ModelInfo) -> model_pb2.ModelMetadata:
    return model_pb2.ModelMetadata(
        name=info.name,
        version=info.version,
        platform=info.platform,
        inputs=[spec_to_proto(s) for s in info.signature.inputs],
        outputs=[spec_to_proto(s) for s in info.signature.outputs],
        batching=model_pb2.BatchingSettings(
            enabled=info.batching.enabled and info.signature.batched,
            max_batch_size=info.batching.max_batch_rows,
            max_wait_us=info.batching.max_wait_us,
            queue_max=info.batching.queue_max,
        ),
        signature_sha256=info.signature_sha256,
        typed_service=info.contract.service,
        schema_version=info.contract.schema_version,
        contract_fingerprint=info.contract.fingerprint,
        model_sha256=info.model_sha256,
        instance_id=info.instance_id,
    )


# -- Open Inference Protocol (KServe V2) ----------------------------------------------------


def v2_rows_of(request: v2.ModelInferRequest) -> int:
    """Rows a ModelInferRequest claims, like `rows_of`."""
    for tensor in request.inputs:
        shape = tensor.shape
        return max(1, shape[0]) if shape else 1
    return 1


V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_NUMPY_TO_V2 = {dtype.newbyteorder("="): name for name, dtype in V2_TO_NUMPY.items()}

# Which InferTensorContents field carries each datatype (FP16 has none: raw only).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _v2_dtype(name: str, datatype: str) -> np.dtype:
    dtype = V2_TO_NUMPY.get(datatype)
    if dtype is None:
        raise InvalidInputError(
            f"input {quote(name)}: datatype {quote(datatype)} is not supported "
            f"(expected one of {sorted(V2_TO_NUMPY)})"
        )
    return dtype


def _from_contents(
    name: str, datatype: str, dtype: np.dtype, shape: tuple[int, ...], count: int, contents: Any
) -> np.ndarray:
    field = _CONTENTS_FIELD.get(datatype)
    used = [f.name for f, _ in contents.ListFields()]
    if field is None:
        raise InvalidInputError(
            f"input {quote(name)}: datatype {datatype} can only be sent in raw_input_contents"
        )
    if any(u != field for u in used):
        raise InvalidInputError(
            f"input {quote(name)}: datatype {datatype} values belong in contents.{field}, "
            f"received {used}"
        )
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInputError(
            f"input {quote(name)}: {len(values)} values in contents.{field} do not match shape "
            f"{list(shape)} ({count} values expected)"
        )
    if dtype.kind in "iu" and count:
        wide = np.fromiter(values, dtype=np.int64 if field != "uint64_contents" else np.uint64)
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidInputError(
                f"input {quote(name)}: values outside the {datatype} range [{info.min}, {info.max}]"
            )
        return wide.astype(dtype).reshape(shape)
    return np.fromiter(values, dtype=dtype, count=count).reshape(shape)


def v2_request_from_proto(
    request: v2.ModelInferRequest, max_elements: int, limits: Limits = DEFAULT_LIMITS
) -> tuple[Arrays, tuple[str, ...], bool]:
    """(inputs, output_names, raw_outputs) of a ModelInferRequest.

    Values come either all from ``raw_input_contents`` (one entry per input, in order) or all
    from typed ``contents``; responses use the same form as the request.
    """
    outputs = tuple(o.name for o in request.outputs)
    _check_request(
        len(request.inputs),
        (t.name for t in request.inputs),
        outputs,
        request.id,
        limits,
    )
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs "
            "(expected one entry per input, in order)"
        )
    arrays: Arrays = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in arrays:
            raise InvalidInputError(f"input {quote(name)} appears more than once")
        dtype = _v2_dtype(name, tensor.datatype)
        shape = tuple(int(d) for d in tensor.shape)
        count = tensors.element_count(name, shape, max_elements)
        if raw:
            if tensor.HasField("contents") and tensor.contents.ListFields():
                raise InvalidInputError(
                    f"input {quote(name)}: send values in contents or raw_input_contents, not both"
                )
            arrays[name] = tensors.view_bytes(
                name,
                raw[i],
                dtype,
                shape,
                count,
                source=f" in raw_input_contents[{i}]",
                type_name=tensor.datatype,
            )
        else:
            arrays[name] = _from_contents(
                name, tensor.datatype, dtype, shape, count, tensor.contents
            )
    return arrays, outputs, bool(raw)


def datatype_name(dtype: np.dtype) -> str:
    """V2 datatype string of a numpy dtype ("FP32")."""
    return _NUMPY_TO_V2.get(dtype.newbyteorder("="), dtype.name)


def v2_response_to_proto(
    request: v2.ModelInferRequest, info: ModelInfo, result: InferOutput, raw_outputs: bool
) -> v2.ModelInferResponse:
    response = v2.ModelInferResponse(
        model_name=info.name, model_version=info.version, id=request.id
    )
    response.parameters["batch_size"].int64_param = result.stats.batch_size
    response.parameters["queue_wait_us"].int64_param = result.stats.queue_wait_us
    response.parameters["compute_us"].int64_param = result.stats.compute_us
    outputs = []
    for name, value in result.outputs.items():
        arr = np.ascontiguousarray(value)
        outputs.append((name, arr, datatype_name(arr.dtype)))
    # Mixed forms are not allowed: one output without a typed contents field makes all raw.
    raw = raw_outputs or any(datatype not in _CONTENTS_FIELD for _, _, datatype in outputs)
    for name, arr, datatype in outputs:
        out = response.outputs.add(name=name, datatype=datatype, shape=list(arr.shape))
        if raw:
            wire = V2_TO_NUMPY.get(datatype, arr.dtype)
            response.raw_output_contents.append(arr.astype(wire, copy=False).tobytes())
        else:
            getattr(out.contents, _CONTENTS_FIELD[datatype]).extend(arr.ravel().tolist())
    return response


def v2_metadata_to_proto(info: ModelInfo) -> v2.ModelMetadataResponse:
    def meta(spec: TensorSpec) -> v2.ModelMetadataResponse.TensorMetadata:
        return v2.ModelMetadataResponse.TensorMetadata(
            name=spec.name, datatype=datatype_name(spec.dtype), shape=list(spec.shape)
        )

    return v2.ModelMetadataResponse(
        name=info.name,
        versions=[info.version],
        platform=info.platform,
        inputs=[meta(s) for s in info.signature.inputs],
        outputs=[meta(s) for s in info.signature.outputs],
    )
