"""One parser from YAML/JSON text (or a dict) to the ``Plan`` proto.

The text form is the proto's JSON form (``json_format``) with a few conveniences, expanded here
before parsing so there is exactly one schema:

- dtypes as numpy names (``float32``) as well as enum names (``DATA_TYPE_FLOAT32``);
- ``inputs`` of a step may be a list ``[scaler.scaled]`` when the target takes the same names;
- beside ``name`` and ``inputs`` a step has one key, its kind, whose value the kind's
  ``StepKind.parse`` expands (meshserve.orchestrator.steps.STEP_KINDS): ``model: scaler`` for
  ``model: {model: scaler}``, ``logic: fn`` for ``logic: {function: fn}``, branches that write
  ``model``/``logic``/``plan`` without ``target``, aggregations and bandit policies in lower case
  (``majority_vote``, ``thompson``), ...;
- a registered kind that is not a member of the proto ``Step`` oneof is written like the others,
  ``<kind>: {...}``, and becomes ``custom: {kind: <kind>, params: {...}}`` (that form is accepted
  too). A key that is no registered kind fails with the known kinds.
"""

from __future__ import annotations

from typing import Any

import yaml
from google.protobuf import json_format

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.steps.registry import CUSTOM, PROTO_KINDS, enum_form, lookup_kind
from meshserve.v1 import plan_pb2

__all__ = [
    "dumps_json",
    "load_plan_file",
    "loads_json",
    "parse_plan_text",
    "plan_from_dict",
    "plan_to_json",
]

_MAX_TEXT_BYTES = 4 << 20


def parse_plan_text(text: str | bytes) -> plan_pb2.Plan:
    """Parse a plan written in YAML or JSON (JSON is valid YAML) into a Plan proto."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if len(text) > _MAX_TEXT_BYTES:
        raise InvalidInputError(
            f"plan text is {len(text)} bytes; at most {_MAX_TEXT_BYTES} bytes are accepted"
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"plan text is neither valid YAML nor JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"plan text must be a mapping with 'name' and 'steps', got {type(data).__name__}"
        )
    return plan_from_dict(data)


def plan_from_dict(data: dict[str, Any]) -> plan_pb2.Plan:
    """Build a Plan proto from its dict form (conveniences expanded)."""
    data = dict(data)
    data["inputs"] = [_spec(s) for s in data.get("inputs") or []]
    data["steps"] = [_step(s, i) for i, s in enumerate(data.get("steps") or [])]
    plan = plan_pb2.Plan()
    try:
        json_format.ParseDict(data, plan)
    except json_format.ParseError as exc:
        raise InvalidInputError(f"plan does not match the Plan schema: {exc}") from None
    return plan


def plan_to_json(plan: plan_pb2.Plan) -> str:
    """Canonical JSON of a plan (field names as in the proto), as stored in Consul KV."""
    return json_format.MessageToJson(plan, preserving_proto_field_name=True, sort_keys=True)


def _spec(spec: Any) -> Any:
    if isinstance(spec, dict) and isinstance(spec.get("dtype"), str):
        spec = dict(spec)
        spec["dtype"] = enum_form("DATA_TYPE_", spec["dtype"])
    return spec


_STEP_FIELDS = frozenset({"name", "inputs"})


def _step(step: Any, index: int) -> Any:
    if not isinstance(step, dict):
        raise InvalidInputError(f"steps[{index}] must be a mapping, got {type(step).__name__}")
    step = dict(step)
    where = f"step '{step['name']}'" if step.get("name") else f"steps[{index}]"
    inputs = step.get("inputs")
    if isinstance(inputs, list):
        step["inputs"] = {_last(ref): ref for ref in inputs}
    keys = [key for key in step if key not in _STEP_FIELDS]
    if len(keys) > 1:
        raise InvalidInputError(f"{where}: sets more than one kind ({', '.join(keys)})")
    for key in keys:  # at most one
        body = step.pop(key)
        if key == CUSTOM and isinstance(body, dict):
            kind = lookup_kind(str(body.get("kind", "")), where, custom=True)
            step[CUSTOM] = {**body, "params": kind.parse(body.get("params") or {}, where)}
        elif key in PROTO_KINDS:
            step[key] = lookup_kind(key, where).parse(body, where)
        else:
            step[CUSTOM] = {"kind": key, "params": lookup_kind(key, where).parse(body, where)}
    return step


def _last(ref: Any) -> str:
    return str(ref).rsplit(".", 1)[-1]


def load_plan_file(path: str) -> plan_pb2.Plan:
    """Parse a plan file (.yaml, .yml or .json)."""
    with open(path, encoding="utf-8") as handle:
        return parse_plan_text(handle.read())


def dumps_json(plan: plan_pb2.Plan) -> bytes:
    """Plan JSON as bytes (what the store writes)."""
    return plan_to_json(plan).encode("utf-8")


def loads_json(data: bytes) -> plan_pb2.Plan:
    """Plan from stored JSON bytes."""
    plan = plan_pb2.Plan()
    json_format.Parse(data.decode("utf-8"), plan)
    return plan
