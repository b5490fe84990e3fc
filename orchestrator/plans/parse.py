"""One parser from YAML/JSON text (or a dict) to the ``Plan`` proto.

The text form is the proto's JSON form (``json_format``) with a few conveniences, expanded here
before parsing so there is exactly one schema:

- dtypes as numpy names (``float32``) as well as enum names (``DATA_TYPE_FLOAT32``);
- ``model: scaler`` for ``model: {model: scaler}`` and ``logic: fn`` for ``logic: {function: fn}``,
  in steps and in branches; a branch may also write ``model``/``logic``/``plan`` without ``target``;
- aggregations and bandit policies in lower case (``majority_vote``, ``thompson``);
- ``inputs`` of a step may be a list ``[scaler.scaled]`` when the target takes the same names.
"""

from __future__ import annotations

from typing import Any

import yaml
from google.protobuf import json_format

from meshserve.errors import InvalidInputError
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
        spec["dtype"] = _enum("DATA_TYPE_", spec["dtype"])
    return spec


def _step(step: Any, index: int) -> Any:
    if not isinstance(step, dict):
        raise InvalidInputError(f"steps[{index}] must be a mapping, got {type(step).__name__}")
    step = dict(step)
    inputs = step.get("inputs")
    if isinstance(inputs, list):
        step["inputs"] = {_last(ref): ref for ref in inputs}
    if isinstance(step.get("model"), str):
        step["model"] = {"model": step["model"]}
    if isinstance(step.get("logic"), str):
        step["logic"] = {"function": step["logic"]}
    ensemble = step.get("ensemble")
    if isinstance(ensemble, dict):
        ensemble = dict(ensemble)
        ensemble["members"] = [_branch(b) for b in ensemble.get("members") or []]
        if isinstance(ensemble.get("aggregation"), str):
            ensemble["aggregation"] = _enum("AGGREGATION_", ensemble["aggregation"])
        step["ensemble"] = ensemble
    select = step.get("select")
    if isinstance(select, dict):
        select = dict(select)
        cases = []
        for case in select.get("cases") or []:
            if isinstance(case, dict) and "branch" in case:
                case = {**case, "branch": _branch(case["branch"])}
            cases.append(case)
        select["cases"] = cases
        if "default_branch" in select:
            select["default_branch"] = _branch(select["default_branch"])
        if "default" in select:
            select["default_branch"] = _branch(select.pop("default"))
        select["branches"] = [_branch(b) for b in select.get("branches") or []]
        step["select"] = select
    split = step.get("split")
    if isinstance(split, dict):
        step["split"] = {**split, "branches": [_branch(b) for b in split.get("branches") or []]}
    shadow = step.get("shadow")
    if isinstance(shadow, dict):
        shadow = dict(shadow)
        for key in ("primary", "candidate"):
            if key in shadow:
                shadow[key] = _branch(shadow[key])
        step["shadow"] = shadow
    bandit = step.get("bandit")
    if isinstance(bandit, dict):
        bandit = dict(bandit)
        bandit["arms"] = [_branch(b) for b in bandit.get("arms") or []]
        if isinstance(bandit.get("policy"), str):
            bandit["policy"] = _enum("BANDIT_POLICY_", bandit["policy"])
        step["bandit"] = bandit
    return step


def _branch(branch: Any) -> Any:
    if not isinstance(branch, dict):
        return branch
    branch = dict(branch)
    target = dict(branch.get("target") or {})
    for key in ("model", "logic", "plan"):
        if key in branch:
            target[key] = branch.pop(key)
    if isinstance(target.get("model"), str):
        target["model"] = {"model": target["model"]}
    if isinstance(target.get("logic"), str):
        target["logic"] = {"function": target["logic"]}
    if target:
        branch["target"] = target
    if "name" not in branch:
        name = _target_name(target)
        if name:
            branch["name"] = name
    return branch


def _target_name(target: dict[str, Any]) -> str:
    model = target.get("model")
    if isinstance(model, dict) and model.get("model"):
        version = model.get("version")
        return f"{model['model']}@{version}" if version else str(model["model"])
    logic = target.get("logic")
    if isinstance(logic, dict) and logic.get("function"):
        return str(logic["function"])
    return str(target.get("plan") or "")


def _enum(prefix: str, value: str) -> str:
    upper = value.upper()
    return upper if upper.startswith(prefix) else prefix + upper


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
