"""Branches, shared by the kinds that run one (ensemble, select, split, shadow, bandit): their
text form and their validation. Running a branch is ``base.run_target``.

Text form: a branch may write its target's ``model``/``logic``/``plan`` beside ``name`` instead
of under ``target``, with the same shorthands as steps (``model: mlp``, ``logic: fn``); without
a ``name`` it is named after its target (``mlp``, ``mlp@2`` for a pinned version, the function
or the plan).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meshserve.errors import InvalidInputError
from meshserve.names import check_name
from meshserve.orchestrator.plans.validate import PlanCheck, StepOutputs
from meshserve.orchestrator.steps.logic import check_logic, logic_form
from meshserve.orchestrator.steps.model import check_model, model_form
from meshserve.v1 import plan_pb2, tensor_pb2

__all__ = ["check_branches", "check_target", "parse_branch", "parse_branches"]

_TARGETS = ("model", "logic", "plan")


def parse_branch(branch: Any) -> Any:
    """The proto3 JSON form of a branch written in the text form (see the module docstring)."""
    if not isinstance(branch, dict):
        return branch
    branch = dict(branch)
    target = dict(branch.get("target") or {})
    for key in _TARGETS:
        if key in branch:
            target[key] = branch.pop(key)
    if "model" in target:
        target["model"] = model_form(target["model"])
    if "logic" in target:
        target["logic"] = logic_form(target["logic"])
    if target:
        branch["target"] = target
    if "name" not in branch:
        name = _target_name(target)
        if name:
            branch["name"] = name
    return branch


def parse_branches(branches: Any) -> list[Any]:
    """A list of branches in the text form (None or missing: no branches)."""
    return [parse_branch(b) for b in branches or []]


def _target_name(target: dict[str, Any]) -> str:
    model = target.get("model")
    if isinstance(model, dict) and model.get("model"):
        version = model.get("version")
        return f"{model['model']}@{version}" if version else str(model["model"])
    logic = target.get("logic")
    if isinstance(logic, dict) and logic.get("function"):
        return str(logic["function"])
    return str(target.get("plan") or "")


async def check_target(
    check: PlanCheck, step: plan_pb2.Step, branch: plan_pb2.Branch, where: str
) -> StepOutputs:
    """What `branch` runs exists and takes the step's inputs; returns its outputs when known."""
    where = f"{where} branch '{branch.name}'"
    target = branch.target
    kind = target.WhichOneof("kind")
    if kind == "model":
        return await check_model(check, step, target.model, where)
    if kind == "logic":
        check_logic(check, target.logic, where)
        return None
    if kind == "plan":
        check_name(f"{where} plan", target.plan)
        if target.plan == check.plan.name:
            raise InvalidInputError(f"{where}: a plan cannot call itself")
        if not check.context.plan_exists(target.plan):
            raise InvalidInputError(f"{where}: unknown plan '{target.plan}'")
        return None
    raise InvalidInputError(f"{where}: 'target' must set one of {', '.join(_TARGETS)}")


async def check_branches(
    check: PlanCheck,
    step: plan_pb2.Step,
    branches: Sequence[plan_pb2.Branch],
    where: str,
    *,
    weights: bool = False,
) -> StepOutputs:
    """At least one branch, named uniquely, each target valid; with `weights`, no negative
    weight and a positive sum. Returns the outputs every branch has when all are models (their
    types are then known), else None."""
    if not branches:
        raise InvalidInputError(f"{where}: needs at least one branch")
    names: set[str] = set()
    common: dict[str, tensor_pb2.TensorSpec | None] | None = None
    for index, branch in enumerate(branches):
        if not branch.name:
            raise InvalidInputError(f"{where} branches[{index}]: 'name' is required")
        if branch.name in names:
            raise InvalidInputError(f"{where}: branch name '{branch.name}' is used twice")
        names.add(branch.name)
        if weights and branch.weight < 0:
            raise InvalidInputError(
                f"{where} branch '{branch.name}' weight: {branch.weight} is negative"
            )
        outs = await check_target(check, step, branch, where)
        if outs is not None:
            common = (
                dict(outs) if common is None else {k: v for k, v in common.items() if k in outs}
            )
    if weights and sum(b.weight for b in branches) <= 0:
        raise InvalidInputError(f"{where}: branch weights must sum to more than 0")
    all_known = all(b.target.WhichOneof("kind") == "model" for b in branches)
    return common if all_known else None
