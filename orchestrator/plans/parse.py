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
from meshserve.limits import (
    DEFAULT_LIMITS,
    LimitExceededError,
    Limits,
    check_count,
    check_nesting,
    check_string,
)
from meshserve.names import QUOTE_MAX_CHARS, quote
from meshserve.orchestrator.steps.registry import CUSTOM, PROTO_KINDS, enum_form, lookup_kind
from meshserve.v1 import plan_pb2

__all__ = [
    "check_yaml_events",
    "dumps_json",
    "load_plan_file",
    "loads_json",
    "parse_plan_text",
    "plan_from_dict",
    "plan_to_json",
]

_PLAN_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_START_EVENTS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_END_EVENTS = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
# How much of a parser's own message (which may echo the input) an error quotes.
_DETAIL_CHARS = 240


def _bounded(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= _DETAIL_CHARS else f"{text[:_DETAIL_CHARS]}..."


def check_yaml_events(text: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse YAML that could cost more than it weighs, before any object is built: anchors and
    aliases (a few hundred bytes of aliases expand into millions of nodes), nesting deeper than
    ``max_nesting_depth`` and more than ``max_yaml_nodes`` nodes. One pass over the parser's
    events (iterative; libyaml when available)."""
    depth = nodes = 0
    for event in yaml.parse(text, Loader=_PLAN_LOADER):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise InvalidInputError(
                "plan text: YAML anchors and aliases (&name, *name) are not accepted in plans"
            )
        if isinstance(event, _START_EVENTS):
            depth += 1
            if depth > limits.max_nesting_depth:
                raise InvalidInputError(
                    "plan text: nesting exceeds the limit "
                    f"max_nesting_depth={limits.max_nesting_depth}"
                )
        elif isinstance(event, _END_EVENTS):
            depth -= 1
            continue
        elif not isinstance(event, yaml.ScalarEvent):
            continue
        nodes += 1
        if nodes > limits.max_yaml_nodes:
            raise LimitExceededError(
                f"plan text: more than the limit max_yaml_nodes={limits.max_yaml_nodes} nodes"
            )


def parse_plan_text(text: str | bytes, limits: Limits = DEFAULT_LIMITS) -> plan_pb2.Plan:
    """Parse a plan written in YAML or JSON (JSON is valid YAML) into a Plan proto.

    Size (``max_plan_bytes``), nesting, node count and aliases are checked before objects are
    built (`check_yaml_events`); the plan's structure by `plan_from_dict`."""
    size = len(text)  # characters <= UTF-8 bytes: only a text under the limit is encoded
    if isinstance(text, str) and size <= limits.max_plan_bytes:
        size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_plan_bytes:
        raise LimitExceededError(
            f"plan text is {size} bytes; exceeds the limit max_plan_bytes={limits.max_plan_bytes}"
        )
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        check_yaml_events(text, limits)
        data = yaml.load(text, Loader=_PLAN_LOADER)
    except yaml.YAMLError as exc:
        raise InvalidInputError(
            f"plan text is neither valid YAML nor JSON: {_bounded(exc)}"
        ) from None
    except (ValueError, TypeError, OverflowError) as exc:  # constructors of odd scalars
        raise InvalidInputError(
            f"plan text has a value YAML cannot build: {_bounded(exc)}"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"plan text must be a mapping with 'name' and 'steps', got {type(data).__name__}"
        )
    return plan_from_dict(data, limits)


def _list_field(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise InvalidInputError(f"plan '{key}' must be a list, got {type(value).__name__}")
    return value


def plan_from_dict(data: dict[str, Any], limits: Limits = DEFAULT_LIMITS) -> plan_pb2.Plan:
    """Build a Plan proto from its dict form (conveniences expanded). Wrong types anywhere are
    InvalidInputError naming the field; nesting and step count are checked first."""
    check_nesting("plan", data, limits)
    data = dict(data)
    inputs = _list_field(data, "inputs")
    steps = _list_field(data, "steps")
    output_specs = _list_field(data, "output_specs")
    check_count("plan steps", len(steps), limits, "max_plan_steps")
    check_count("plan inputs", len(inputs), limits, "max_inputs")
    check_count("plan output_specs", len(output_specs), limits, "max_inputs")
    data["inputs"] = [_spec(s) for s in inputs]
    if output_specs:
        data["output_specs"] = [_spec(s) for s in output_specs]
    data["steps"] = [_step(s, i, limits) for i, s in enumerate(steps)]
    plan = plan_pb2.Plan()
    try:
        json_format.ParseDict(data, plan)
    except (json_format.ParseError, TypeError, ValueError, AttributeError, KeyError) as exc:
        raise InvalidInputError(f"plan does not match the Plan schema: {_bounded(exc)}") from None
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


def _step(step: Any, index: int, limits: Limits) -> Any:
    if not isinstance(step, dict):
        raise InvalidInputError(f"steps[{index}] must be a mapping, got {type(step).__name__}")
    step = dict(step)
    name = step.get("name")
    where = f"step {quote(name)}" if isinstance(name, str) and name else f"steps[{index}]"
    inputs = step.get("inputs")
    if isinstance(inputs, list):
        step["inputs"] = {_last(ref): ref for ref in inputs}
    keys = [key for key in step if key not in _STEP_FIELDS]
    if len(keys) > 1:
        raise InvalidInputError(
            f"{where}: sets more than one kind "
            f"({', '.join(str(k)[:QUOTE_MAX_CHARS] for k in keys[:8])})"
        )
    for key in keys:  # at most one
        check_string(f"{where} kind", str(key), DEFAULT_LIMITS, "max_name_chars")
        body = step.pop(key)
        if key == CUSTOM and isinstance(body, dict):
            check_string(
                f"{where} kind", str(body.get("kind", "")), DEFAULT_LIMITS, "max_name_chars"
            )
        try:
            if key == CUSTOM and isinstance(body, dict):
                kind = lookup_kind(str(body.get("kind", "")), where, custom=True)
                step[CUSTOM] = {**body, "params": kind.parse(body.get("params") or {}, where)}
            elif key in PROTO_KINDS:
                step[key] = lookup_kind(key, where).parse(body, where)
            else:
                step[CUSTOM] = {
                    "kind": key,
                    "params": lookup_kind(str(key), where).parse(body, where),
                }
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            raise InvalidInputError(
                f"{where} {quote(str(key))}: malformed ({type(exc).__name__}: {_bounded(exc)})"
            ) from None
    return step


def _last(ref: Any) -> str:
    return str(ref).rsplit(".", 1)[-1]


def load_plan_file(path: str, limits: Limits = DEFAULT_LIMITS) -> plan_pb2.Plan:
    """Parse a plan file (.yaml, .yml or .json)."""
    with open(path, encoding="utf-8") as handle:
        return parse_plan_text(handle.read(), limits)


def dumps_json(plan: plan_pb2.Plan) -> bytes:
    """Plan JSON as bytes (what the store writes)."""
    return plan_to_json(plan).encode("utf-8")


def loads_json(data: bytes) -> plan_pb2.Plan:
    """Plan from stored JSON bytes."""
    plan = plan_pb2.Plan()
    json_format.Parse(data.decode("utf-8"), plan)
    return plan
