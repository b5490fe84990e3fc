"""The JSON form of a plan's request and response, and its JSON Schema: one source for both.

Until the typed plan contract (issue 14) lands, this module is that contract's JSON face: the
field names are those of ``ExecuteRequest`` / ``ExecuteResponse`` (proto3 JSON names), with each
tensor as nested arrays typed by the plan's declared input specs::

    {"inputs": {"input": [[0.0, ...]]}, "id": "r1", "routing_key": "user-7",
     "attributes": {"country": "fr"}, "timeout_ms": 500}
    -> {"id": "r1", "plan": "digits-pipeline", "plan_version": 1,
        "outputs": {"label": [3]}, "decisions": {}, "trace_id": "...", "latency_ms": 1.7}

`request_from_json` validates against the same specs `request_schema` describes (the OpenAPI
document is generated from `request_schema` / `response_schema`, never written by hand). To
swap in the typed contract, replace these three functions; app.py and openapi.py call only them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meshserve.http_errors import FieldError
from meshserve.json_tensors import array_from_json, array_to_json, tensor_schema
from meshserve.limits import DEFAULT_LIMITS, Limits, check_count, check_string
from meshserve.orchestrator.engine import ExecuteCall, ExecutionResult
from meshserve.tensors import DTYPE_TO_NUMPY
from meshserve.v1 import plan_pb2

__all__ = ["request_from_json", "request_schema", "response_schema", "response_to_json"]

_REQUEST_FIELDS = {"inputs", "id", "routing_key", "attributes", "timeout_ms"}
_MAX_TIMEOUT_MS = 3_600_000
# A tensor whose dtype and shape are known only at run time (python plans, plan outputs).
_ANY_TENSOR: dict[str, Any] = {
    "type": "array",
    "description": "a tensor as nested arrays of numbers (shape known at run time)",
}


def _specs(plan: plan_pb2.Plan) -> dict[str, tuple[np.dtype | None, list[int]]]:
    return {s.name: (DTYPE_TO_NUMPY.get(s.dtype), list(s.shape)) for s in plan.inputs}


def _string(body: dict[str, Any], key: str, limits: Limits) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise FieldError(key, f"got {type(value).__name__}", "a string")
    check_string(key, value, limits, "max_string_chars")
    return value


def request_from_json(
    plan: plan_pb2.Plan,
    body: Any,
    *,
    request_id: str = "",
    timeout_s: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ExecuteCall:
    """The ExecuteCall of a JSON body for `plan` (its active or requested version); every
    field is checked against the plan's input specs before anything runs."""
    if not isinstance(body, dict):
        raise FieldError("body", f"got {type(body).__name__}", "a JSON object")
    unknown = sorted(set(body) - _REQUEST_FIELDS)
    if unknown:
        raise FieldError(unknown[0][:64], "unknown field", f"one of {sorted(_REQUEST_FIELDS)}")
    inputs = body.get("inputs")
    if not isinstance(inputs, dict):
        raise FieldError("inputs", f"got {type(inputs).__name__}", "an object: input -> tensor")
    check_count("inputs", len(inputs), limits, "max_inputs")
    specs = _specs(plan)
    arrays: dict[str, np.ndarray] = {}
    for name, value in inputs.items():
        field = f"inputs.{name}"
        if specs and name not in specs:
            raise FieldError(field[:80], "not an input of this plan", f"one of {sorted(specs)}")
        dtype, shape = specs.get(name, (None, []))
        array = arrays[name] = array_from_json(value, dtype, field, limits)
        if name in specs and not _fits(array.shape, shape):
            raise FieldError(field, f"shape {list(array.shape)}", f"{_dtype_word(dtype)} {shape}")
    missing = sorted(set(specs) - set(arrays))
    if missing:
        raise FieldError(f"inputs.{missing[0]}", "missing", "every input the plan declares")
    attributes = body.get("attributes", {})
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        raise FieldError("attributes", "not an object of strings", "{name: string}")
    check_count("attributes", len(attributes), limits, "max_attributes")
    timeout_ms = body.get("timeout_ms", 0)
    if not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool):
        raise FieldError("timeout_ms", f"got {type(timeout_ms).__name__}", "an integer")
    if not 0 <= timeout_ms <= _MAX_TIMEOUT_MS:
        raise FieldError("timeout_ms", f"{timeout_ms}", f"0..{_MAX_TIMEOUT_MS}")
    if timeout_ms:
        item = timeout_ms / 1000.0
        timeout_s = item if timeout_s is None else min(timeout_s, item)
    return ExecuteCall(
        plan=plan.name,
        inputs=arrays,
        request_id=_string(body, "id", limits) or request_id,
        plan_version=plan.version,
        routing_key=_string(body, "routing_key", limits),
        attributes=dict(attributes),
        timeout_s=timeout_s,
    )


def response_to_json(result: ExecutionResult) -> dict[str, Any]:
    """The JSON reply of a finished execution."""
    return {
        "id": result.request_id,
        "plan": result.plan,
        "plan_version": result.plan_version,
        "outputs": {name: array_to_json(value) for name, value in result.outputs.items()},
        "decisions": result.decisions,
        "trace_id": result.trace_id,
        "latency_ms": result.latency_ms,
    }


def request_schema(plan: plan_pb2.Plan) -> dict[str, Any]:
    """JSON Schema of the request body for `plan`."""
    specs = _specs(plan)
    if specs:
        inputs: dict[str, Any] = {
            "type": "object",
            "properties": {
                name: tensor_schema(dtype, shape, f"{_dtype_word(dtype)} {shape}")
                for name, (dtype, shape) in specs.items()
            },
            "required": sorted(specs),
            "additionalProperties": False,
        }
    else:  # a python plan declares no inputs: any named tensors of numbers
        inputs = {"type": "object", "additionalProperties": _ANY_TENSOR}
    return {
        "type": "object",
        "description": f"Run plan '{plan.name}'"
        + (f": {plan.description}" * bool(plan.description)),
        "properties": {
            "inputs": inputs,
            "id": {"type": "string", "description": "request id (Feedback refers to it)"},
            "routing_key": {"type": "string", "description": "sticky key for splits, bandits"},
            "attributes": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "attributes visible to select predicates, routers and bandits",
            },
            "timeout_ms": {
                "type": "integer",
                "minimum": 0,
                "maximum": _MAX_TIMEOUT_MS,
                "description": "budget of this request (0: the server's default)",
            },
        },
        "required": ["inputs"],
        "additionalProperties": False,
    }


def response_schema(plan: plan_pb2.Plan) -> dict[str, Any]:
    """JSON Schema of the reply for `plan` (its declared outputs, tensors of numbers)."""
    names = sorted(plan.outputs)
    outputs: dict[str, Any] = {"type": "object"}
    if names:
        outputs["properties"] = {
            n: {
                **_ANY_TENSOR,
                "description": f"{_ANY_TENSOR['description']}, from {plan.outputs[n]}",
            }
            for n in names
        }
        outputs["required"] = names
    else:
        outputs["additionalProperties"] = {}
    return {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "plan": {"type": "string"},
            "plan_version": {"type": "integer", "minimum": 1},
            "outputs": outputs,
            "decisions": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "branch chosen by each select/split/bandit step",
            },
            "trace_id": {"type": "string"},
            "latency_ms": {"type": "number"},
        },
        "required": ["id", "plan", "plan_version", "outputs"],
    }


def _fits(shape: tuple[int, ...], spec: list[int]) -> bool:
    """`shape` matches the declared `spec` (-1: any length); no spec: anything."""
    if not spec:
        return True
    return len(shape) == len(spec) and all(d in (-1, n) for n, d in zip(shape, spec, strict=True))


def _dtype_word(dtype: np.dtype | None) -> str:
    return dtype.name if dtype is not None else "number"
