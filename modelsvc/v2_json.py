"""KServe V2 REST bodies <-> the V2 protobuf messages the gRPC servicer already serves.

Requests become a ``ModelInferRequest`` whose tensors are all in ``raw_input_contents`` (JSON
``data`` packed by numpy, binary-extension blobs as sent), so validation and inference are
exactly those of V2 gRPC (modelsvc/converters.py). Responses are built from the raw outputs:
JSON ``data`` (flat, row-major) or, when asked (``parameters.binary_data`` on an output,
``binary_data_output`` on the request), the binary data extension: the JSON header is followed
by each binary output's bytes and ``Inference-Header-Content-Length`` says where JSON ends.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshserve.http_errors import FieldError
from meshserve.json_tensors import array_from_json
from meshserve.limits import DEFAULT_LIMITS, Limits, check_count
from meshserve.modelsvc.converters import V2_TO_NUMPY
from meshserve.v1 import grpc_predict_v2_pb2 as v2

__all__ = [
    "HEADER_LENGTH",
    "InferBody",
    "metadata_json",
    "request_from_json",
    "response_to_json",
    "split_binary",
]

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(frozen=True)
class InferBody:
    """The wire form of a V2 REST infer response: bytes, content type, JSON header length."""

    body: bytes
    content_type: str
    header_length: int | None  # set when binary outputs follow the JSON


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary tail) of a request body per the binary data extension."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise FieldError(
            HEADER_LENGTH,
            f"{header_length[:32]!r} is not a length within the {len(body)}-byte body",
            "the byte length of the JSON part",
        )
    return body[:length], body[length:]


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FieldError(field, f"got {type(value).__name__}", "a JSON object")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise FieldError(field, f"got {type(value).__name__}", "a JSON array")
    return value


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise FieldError(field, f"got {type(value).__name__}", "a string")
    return value


def _shape(value: Any, field: str, limits: Limits) -> list[int]:
    dims = _list(value, field)
    if len(dims) > limits.max_dims:
        raise FieldError(field, f"{len(dims)} dimensions", f"at most max_dims={limits.max_dims}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise FieldError(field, f"got {str(dims)[:64]}", "non-negative integers")
    return dims


def _pack(data: Any, datatype: str, shape: list[int], field: str) -> bytes:
    """JSON `data` (flat or nested) as little-endian bytes of `datatype`, count checked."""
    dtype = V2_TO_NUMPY.get(datatype)
    if dtype is None:
        raise FieldError(f"{field}.datatype", f"{datatype[:32]!r}", f"one of {sorted(V2_TO_NUMPY)}")
    values = array_from_json(data, dtype, f"{field}.data")
    expected = math.prod(shape)
    if values.size != expected:
        raise FieldError(f"{field}.data", f"{values.size} values", f"{expected} for shape {shape}")
    return values.tobytes()


def request_from_json(
    header: Any,
    binary: bytes,
    model: str,
    version: str,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[v2.ModelInferRequest, set[str], bool]:
    """(the request, outputs asked in binary, binary for every output) of a V2 REST body."""
    body = _object(header, "body")
    request = v2.ModelInferRequest(model_name=model, model_version=version)
    request.id = _text(body.get("id", ""), "id")
    params = _object(body.get("parameters", {}), "parameters")
    all_binary = params.get("binary_data_output") is True
    inputs = _list(body.get("inputs"), "inputs")
    check_count("request inputs", len(inputs), limits, "max_inputs")
    offset = 0
    for i, raw in enumerate(inputs):
        field = f"inputs[{i}]"
        item = _object(raw, field)
        name = _text(item.get("name"), f"{field}.name")
        datatype = _text(item.get("datatype"), f"{field}.datatype")
        shape = _shape(item.get("shape"), f"{field}.shape", limits)
        size = _object(item.get("parameters", {}), f"{field}.parameters").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or not size >= 0:
                raise FieldError(f"{field}.parameters.binary_data_size", f"{size!r}", "bytes")
            if offset + size > len(binary):
                raise FieldError(
                    f"{field}.parameters.binary_data_size",
                    f"{size} bytes past the {len(binary) - offset} left in the body",
                    "the size of this input's binary data",
                )
            blob = binary[offset : offset + size]
            offset += size
        else:
            if "data" not in item:
                raise FieldError(f"{field}.data", "missing", "the tensor's values")
            blob = _pack(item["data"], datatype, shape, field)
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(blob)
    if offset != len(binary):
        raise FieldError(
            HEADER_LENGTH,
            f"{len(binary) - offset} bytes after the inputs' binary data",
            "binary_data_size of the inputs to add up to the binary part",
        )
    binary_outputs: set[str] = set()
    outputs = _list(body.get("outputs", []), "outputs")
    check_count("requested outputs", len(outputs), limits, "max_inputs")
    for i, raw in enumerate(outputs):
        item = _object(raw, f"outputs[{i}]")
        name = _text(item.get("name"), f"outputs[{i}].name")
        wanted = _object(item.get("parameters", {}), f"outputs[{i}].parameters")
        if wanted.get("binary_data", all_binary) is True:
            binary_outputs.add(name)
        request.outputs.add(name=name)
    return request, binary_outputs, all_binary


def _parameters(params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(value, which)
    return out


def response_to_json(
    response: v2.ModelInferResponse, binary_outputs: set[str], all_binary: bool
) -> InferBody:
    """The wire body of a response whose outputs are all in ``raw_output_contents``."""
    outputs: list[dict[str, Any]] = []
    tail: list[bytes] = []
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        out: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if all_binary or tensor.name in binary_outputs:
            out["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            out["data"] = np.frombuffer(raw, dtype=V2_TO_NUMPY[tensor.datatype]).tolist()
        outputs.append(out)
    head: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id:
        head["id"] = response.id
    if response.parameters:
        head["parameters"] = _parameters(response.parameters)
    text = json.dumps(head, separators=(",", ":")).encode()
    if not tail:
        return InferBody(text, "application/json", None)
    return InferBody(text + b"".join(tail), "application/octet-stream", len(text))


def metadata_json(metadata: v2.ModelMetadataResponse) -> dict[str, Any]:
    """The V2 REST model metadata object (shapes as numbers, -1 for a free dimension)."""

    def tensor(t: v2.ModelMetadataResponse.TensorMetadata) -> dict[str, Any]:
        return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}

    return {
        "name": metadata.name,
        "versions": list(metadata.versions),
        "platform": metadata.platform,
        "inputs": [tensor(t) for t in metadata.inputs],
        "outputs": [tensor(t) for t in metadata.outputs],
    }
