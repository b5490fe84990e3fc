"""JSON bodies: tensors from JSON, the plan mapping and its schema, body depth."""

from __future__ import annotations

import numpy as np
import pytest

from meshserve.errors import FailedPreconditionError, InvalidInputError
from meshserve.http_errors import FieldError
from meshserve.json_tensors import array_from_json
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
    output_specs=[tensor_pb2.TensorSpec(name="y", dtype=tensor_pb2.DATA_TYPE_INT64, shape=[-1])],
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


def test_plan_request_and_response_are_the_typed_contract_in_json():
    call = plan_json.request_from_json(
        PLAN, {"x": [1, 2, 3, 4], "routing_key": "k", "timeout_ms": 500}, request_id="h"
    )
    assert call.plan == "p" and call.plan_version == 3 and call.request_id == "h"
    assert call.inputs["x"].shape == (2, 2) and call.timeout_s == 0.5
    assert plan_json.request_from_json(PLAN, {"x": [1, 2], "requestId": "r"}).request_id == "r"
    for body, field in [
        ({"x": [1, 2, 3]}, "x"),
        ({}, "x"),
        ({"x": "a"}, "x"),
        ({"x": [1, 2], "z": [1]}, "z"),
        ({"x": [1, 2], "timeout_ms": -1}, "timeout_ms"),
        ({"x": [1, 2], "attributes": {"a": 1}}, "attributes"),
    ]:
        with pytest.raises(FieldError) as err:
            plan_json.request_from_json(PLAN, body)
        assert err.value.field == field, (body, err.value.message)
    with pytest.raises(FieldError):
        plan_json.request_from_json(PLAN, [1, 2])
    reply = plan_json.response_to_json(
        PLAN, ExecutionResult("r", "p", 3, {"y": np.array([1, 2])}, {"s": "b"}, 1.5, "t")
    )
    assert reply == {"request_id": "r", "plan_version": 3, "trace_id": "t", "y": ["1", "2"],
                     "decisions": {"s": "b"}}  # fmt: skip


def test_a_plan_whose_outputs_are_not_typed_is_refused_before_running():
    untyped = plan_pb2.Plan()
    untyped.CopyFrom(PLAN)
    del untyped.output_specs[:]
    untyped.version = 4  # contracts are cached per version
    with pytest.raises(FailedPreconditionError, match="apply the plan over Admin"):
        plan_json.request_from_json(untyped, {"x": [1, 2]})


def test_schemas_come_from_the_contract_descriptors():
    components: dict = {}
    request, response = plan_json.schemas(PLAN, components)
    x = components[request]["properties"]["x"]
    assert x["type"] == "array" and "2 values per row" in x["description"]
    assert components[response]["properties"]["y"]["items"]["type"] == ["integer", "string"]


def test_body_depth_is_bounded_and_bad_json_is_named():
    config = HttpConfig(max_json_depth=5)
    assert parse_json(b'{"a": [[1, 2]]}', config) == {"a": [[1, 2]]}
    with pytest.raises(InvalidInputError, match="max_json_depth=5"):
        parse_json(b'{"a": [[[[[[1]]]]]]}', config)
    with pytest.raises(InvalidInputError, match="max_json_depth"):
        parse_json(b"[" * 100_000 + b"]" * 100_000, config)
    with pytest.raises(InvalidInputError, match="line 1 column 7"):
        parse_json(b'{"a": }', config)


@pytest.mark.parametrize(
    "values",
    [[1.5, 2], [1, 2], [True, 1.0], ["1", 2], [1e39, 1.0], [float("nan"), 1.0], [2**80, 1],
     [], [[1.0], [2.0]], [1.0, None]],
)  # fmt: skip
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "uint8", "int64", "bool"])
def test_the_fast_path_parses_exactly_like_json_format(values, dtype):
    from google.protobuf import json_format

    plan = plan_pb2.Plan(
        name=f"fast-{dtype}", version=1,
        inputs=[tensor_pb2.TensorSpec(name="x", dtype=DTYPES[dtype], shape=[-1])],
    )  # fmt: skip
    contract = plan_json.contract_for(plan)
    body = {"x": values, "routing_key": "k"}
    outcomes = []
    for parse in (plan_json.parse_request, None):
        message = contract.request_class()
        try:
            if parse is None:
                json_format.ParseDict(body, message)
            else:
                parse(contract, body, message)
            outcomes.append(message.SerializeToString())
        except json_format.ParseError:
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1], (values, dtype)


DTYPES = {
    "float32": tensor_pb2.DATA_TYPE_FLOAT32, "float64": tensor_pb2.DATA_TYPE_FLOAT64,
    "int32": tensor_pb2.DATA_TYPE_INT32, "uint8": tensor_pb2.DATA_TYPE_UINT8,
    "int64": tensor_pb2.DATA_TYPE_INT64, "bool": tensor_pb2.DATA_TYPE_BOOL,
}  # fmt: skip
