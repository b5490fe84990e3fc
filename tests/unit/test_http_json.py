"""JSON bodies: tensors from JSON, the plan mapping and its schema, body depth."""

from __future__ import annotations

import numpy as np
import pytest

from meshserve.errors import InvalidInputError
from meshserve.http_errors import FieldError
from meshserve.json_tensors import array_from_json, tensor_schema
from meshserve.limits import LimitExceededError
from meshserve.orchestrator.engine import ExecutionResult
from meshserve.orchestrator.http import plan_json
from meshserve.v1 import plan_pb2, tensor_pb2
from meshserve.web import HttpConfig
from meshserve.web.body import parse_json

PLAN = plan_pb2.Plan(
    name="p",
    version=3,
    inputs=[tensor_pb2.TensorSpec(name="x", dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=[-1, 2])],
    outputs={"y": "s.y"},
)


@pytest.mark.parametrize(
    ("data", "dtype", "words"),
    [
        ([["a"]], "float32", "strings"),
        ([[1], [1, 2]], "float32", "ragged"),
        ([1.5], "int64", "integers"),
        ([300], "uint8", "out of range"),
        ([-1], "uint32", "out of range"),
        ([1], "bool", "booleans"),
        ([{"a": 1}], "float32", "mixed"),
    ],
)
def test_arrays_refuse_what_does_not_fit(data, dtype, words):
    with pytest.raises(FieldError, match=words) as err:
        array_from_json(data, np.dtype(dtype), "inputs.x")
    assert err.value.field == "inputs.x"


def test_arrays_accept_numbers_and_respect_limits():
    assert array_from_json([[1, 2]], np.dtype("float32"), "x").dtype == np.float32
    assert array_from_json([True], None, "x").dtype == np.bool_
    assert array_from_json([1.5], None, "x").dtype == np.float32
    with pytest.raises(LimitExceededError):
        array_from_json([0.0] * 10, np.dtype("float32"), "x", max_elements=4)


def test_plan_request_and_response():
    call = plan_json.request_from_json(
        PLAN, {"inputs": {"x": [[1, 2]]}, "routing_key": "k", "timeout_ms": 500}, request_id="h"
    )
    assert call.plan == "p" and call.plan_version == 3 and call.request_id == "h"
    assert call.inputs["x"].dtype == np.float32 and call.timeout_s == 0.5
    for body, field in [
        ({"inputs": {"x": [[1, 2, 3]]}}, "inputs.x"),
        ({"inputs": {}}, "inputs.x"),
        ({"inputs": {"x": [[1, 2]], "z": [1]}}, "inputs.z"),
        ({"inputs": {"x": [[1, 2]]}, "attributes": {"a": 1}}, "attributes"),
        ({"inputs": {"x": [[1, 2]]}, "timeout_ms": True}, "timeout_ms"),
        ({"inputs": {"x": [[1, 2]]}, "id": 7}, "id"),
        ({"input": {}}, "input"),
    ]:
        with pytest.raises(FieldError) as err:
            plan_json.request_from_json(PLAN, body)
        assert err.value.field == field, body
    reply = plan_json.response_to_json(
        ExecutionResult("r", "p", 3, {"y": np.array([1, 2])}, {"s": "b"}, 1.5, "t")
    )
    assert reply == {"id": "r", "plan": "p", "plan_version": 3, "outputs": {"y": [1, 2]},
                     "decisions": {"s": "b"}, "trace_id": "t", "latency_ms": 1.5}  # fmt: skip


def test_schemas_describe_the_plan():
    request = plan_json.request_schema(PLAN)
    x = request["properties"]["inputs"]["properties"]["x"]
    assert x["items"] == {"type": "array", "items": {"type": "number", "format": "float"},
                          "minItems": 2, "maxItems": 2}  # fmt: skip
    assert plan_json.response_schema(PLAN)["properties"]["outputs"]["required"] == ["y"]
    assert tensor_schema(np.dtype("uint8"), [])["minimum"] == 0


def test_body_depth_is_bounded_and_bad_json_is_named():
    config = HttpConfig(max_json_depth=5)
    assert parse_json(b'{"a": [[1, 2]]}', config) == {"a": [[1, 2]]}
    with pytest.raises(InvalidInputError, match="max_json_depth=5"):
        parse_json(b'{"a": [[[[[[1]]]]]]}', config)
    with pytest.raises(InvalidInputError, match="max_json_depth"):
        parse_json(b"[" * 100_000 + b"]" * 100_000, config)
    with pytest.raises(InvalidInputError, match="line 1 column 7"):
        parse_json(b'{"a": }', config)
