"""The JSON form of a plan's request and reply: the proto3 JSON mapping of the plan's typed
contract (``meshserve.contracts``, docs/TYPED.md), and the JSON Schema of both from the same
descriptors. One source of truth: what ``POST /v1/plans/<plan>:execute`` accepts is exactly what
the typed gRPC ``Execute`` accepts, written as JSON::

    {"input": [0.0, ...64 values per row...], "request_id": "r1", "routing_key": "user-7",
     "attributes": {"country": "fr"}, "timeout_ms": 500}
    -> {"request_id": "r1", "plan_version": 1, "trace_id": "...", "label": ["3"],
        "probabilities": [...], "decisions": {}}

(tensors flattened row-major, int64 values as strings: the proto3 JSON mapping; parsers also
take lowerCamel names and numbers for int64). `request_from_json` parses with json_format and
decodes with the contract (errors name the field and what was expected); `response_to_json`
encodes with the contract and prints with json_format; `schemas` adds the JSON Schemas of the
request and response messages to OpenAPI components.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from google.protobuf import json_format

from meshserve.contracts import Contract
from meshserve.errors import FailedPreconditionError, InvalidInputError
from meshserve.http_errors import FieldError
from meshserve.limits import DEFAULT_LIMITS, Limits
from meshserve.orchestrator.converters import item_budget_s
from meshserve.orchestrator.engine import ExecuteCall, ExecutionResult
from meshserve.orchestrator.http.proto_schema import message_schema
from meshserve.orchestrator.typed_plans import plan_contract
from meshserve.v1 import plan_pb2

__all__ = ["contract_for", "request_from_json", "response_to_json", "schemas"]

_MAX_DEPTH = 32
_FIXED = {
    "request_id": "request id (Feedback refers to it; generated when empty)",
    "routing_key": "sticky key for split steps and bandit contexts",
    "attributes": "attributes visible to select predicates, routers and bandits",
    "timeout_ms": "budget of this request in ms (0: the server's default)",
    "decisions": "branch chosen by each select/split/bandit step",
    "plan_version": "the plan version that ran",
    "trace_id": "the trace of this request",
    "status": "in-band status (stream items only)",
}
_cache: dict[tuple[str, int, int], Contract] = {}


def contract_for(plan: plan_pb2.Plan) -> Contract:
    """The typed contract of a stored plan version (cached per name, version and write)."""
    key = (plan.name, plan.version, plan.created_unix_ms)
    contract = _cache.get(key)
    if contract is None:
        if len(_cache) > 1024:
            _cache.clear()
        contract = _cache[key] = plan_contract(plan)
    return contract


def request_from_json(
    plan: plan_pb2.Plan,
    body: Any,
    *,
    request_id: str = "",
    timeout_s: float | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ExecuteCall:
    """The ExecuteCall of a JSON body for `plan` (the stored version it names)."""
    if not isinstance(body, dict):
        raise FieldError("body", f"got {type(body).__name__}", "a JSON object")
    contract = contract_for(plan)
    typed_outputs = {tf.name for tf in contract.outputs}
    untyped = sorted(set(plan.outputs) - typed_outputs)
    if untyped:  # the reply could not carry them: say so before running anything
        raise FailedPreconditionError(
            f"plan {plan.name!r} outputs {untyped} have no type in its typed contract (a "
            "startup plan is stamped without asking the models): apply the plan over Admin "
            "(meshserve plans apply) or declare output_specs"
        )
    message = contract.request_class()
    try:
        parse_request(contract, body, message)
        typed = contract.decode_request(message, limits)
    except json_format.ParseError as exc:
        raise _field_error(str(exc)) from None
    except InvalidInputError as exc:
        raise _field_error(exc.message) from None
    except (TypeError, ValueError, RecursionError) as exc:  # json_format on odd values
        raise InvalidInputError(f"plan {plan.name!r} request: {str(exc)[:200]}") from None
    return ExecuteCall(
        plan=plan.name,
        inputs=typed.arrays,
        request_id=typed.request_id or request_id,
        plan_version=plan.version,
        routing_key=typed.routing_key,
        attributes=typed.attributes,
        timeout_s=item_budget_s(timeout_s, typed.timeout_ms),
    )


_FIELD_PATTERNS = (
    re.compile(r"Failed to parse (\w+) field"),  # json_format: a value of the wrong type
    re.compile(r'has no field named "([^"]{1,64})'),  # json_format: an unknown field
    re.compile(r"field '([^']{1,64})'"),  # the contract's decoder
)


def _field_error(message: str) -> InvalidInputError:
    """The error of a refused body, as a FieldError naming the field when the message does
    (json_format's and the contract's messages both name it)."""
    for pattern in _FIELD_PATTERNS:
        match = pattern.search(message)
        if match:
            _, _, expected = message.partition("expected ")
            return FieldError(match.group(1), message[:400], expected[:200])
    return InvalidInputError(message[:400])


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FAST_KINDS = {"float": "f", "double": "f", "int32": "i", "int64": "i", "uint32": "u",
               "uint64": "u", "bool": "b"}  # fmt: skip


def _plain(values: list[Any], scalar: str) -> bool:
    """`values` are ordinary JSON numbers (or booleans) that json_format would take as they are
    for a packed field of `scalar`: no strings, no NaN/Infinity, in range for float."""
    kind = _FAST_KINDS.get(scalar)
    if kind is None:
        return False
    if kind == "b":
        return all(type(v) is bool for v in values)
    if kind in "iu":
        return all(type(v) is int for v in values)
    if not all(type(v) is float or type(v) is int for v in values):
        return False
    array = np.asarray(values, dtype=np.float64)
    limit = _FLOAT32_MAX if scalar == "float" else np.inf
    return bool(np.isfinite(array).all() and np.abs(array).max() <= limit)


def parse_request(contract: Contract, body: dict[str, Any], message: Any) -> None:
    """json_format.ParseDict(body, message), with packed tensor fields of ordinary numbers
    (the common case, where json_format spends most of its time) set directly; anything else
    (strings, NaN, lowerCamel names, values out of range) goes through json_format, so the
    result and every refusal are json_format's."""
    direct: dict[str, list[Any]] = {}
    for tf in contract.inputs:
        values = body.get(tf.field)
        if (
            not tf.nested
            and type(values) is list
            and values
            and _plain(values, tf.spec.scalar.proto_name)
        ):
            direct[tf.field] = values
    rest = {k: v for k, v in body.items() if k not in direct} if direct else body
    json_format.ParseDict(rest, message, max_recursion_depth=_MAX_DEPTH)
    for field, values in direct.items():
        try:
            getattr(message, field).extend(values)
        except (ValueError, TypeError, OverflowError):  # out of an integer type's range
            message.ClearField(field)
            json_format.ParseDict({field: values}, message, max_recursion_depth=_MAX_DEPTH)


def response_to_json(plan: plan_pb2.Plan, result: ExecutionResult) -> dict[str, Any]:
    """The JSON reply of a finished execution (fields as in the .proto)."""
    message = contract_for(plan).encode_response(
        result.outputs,
        request_id=result.request_id,
        decisions=result.decisions,
        plan_version=result.plan_version,
        trace_id=result.trace_id,
    )
    reply: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return reply


def schemas(plan: plan_pb2.Plan, components: dict[str, Any]) -> tuple[str, str]:
    """Add the request and response schemas of `plan` to `components`; their names."""
    contract = contract_for(plan)
    fields = {tf.field: tf.expected() + f" (tensor {tf.name!r})" for tf in contract.inputs}
    fields.update({tf.field: tf.expected() + f" (tensor {tf.name!r})" for tf in contract.outputs})

    def describe(field: Any) -> str:
        if field.containing_type.full_name.startswith(contract.package + "."):
            return fields.get(field.name) or _FIXED.get(field.name, "")
        return ""

    request = message_schema(contract.request_class.DESCRIPTOR, components, describe)
    response = message_schema(contract.response_class.DESCRIPTOR, components, describe)
    return request, response
