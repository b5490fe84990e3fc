"""``select`` step: the first case whose predicate holds (or a registered router) picks a branch.

Predicates see ``attributes`` (request attributes), ``inputs`` (the step's wired inputs),
``steps`` (outputs of the steps this one is wired to) and ``routing_key``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError, NotFoundError
from meshserve.orchestrator.expr import Expression, compile_expression
from meshserve.orchestrator.plans.validate import PlanCheck, StepOutputs
from meshserve.orchestrator.steps.base import Outputs, StepContext, call_logic, run_target
from meshserve.orchestrator.steps.branches import check_branches, parse_branch, parse_branches
from meshserve.orchestrator.steps.registry import StepKind
from meshserve.v1 import plan_pb2

__all__ = ["SELECT_NAMES", "SelectKind", "choose"]

SELECT_NAMES = frozenset({"attributes", "inputs", "steps", "routing_key"})


class SelectKind(StepKind):
    """``select: {cases: [{when: ..., branch: ...}], default: ...}`` or ``select: {router: fn,
    branches: [...]}``; the cases' expressions are parsed once per plan version."""

    name = "select"

    def parse(self, body: Any, where: str) -> Any:
        if not isinstance(body, dict):
            return body
        body = dict(body)
        cases = []
        for case in body.get("cases") or []:
            if isinstance(case, dict) and "branch" in case:
                case = {**case, "branch": parse_branch(case["branch"])}
            cases.append(case)
        body["cases"] = cases
        if "default_branch" in body:
            body["default_branch"] = parse_branch(body["default_branch"])
        if "default" in body:
            body["default_branch"] = parse_branch(body.pop("default"))
        body["branches"] = parse_branches(body.get("branches"))
        return body

    async def validate(self, step: plan_pb2.Step, check: PlanCheck) -> StepOutputs:
        sel = step.select
        where = f"step '{step.name}' select"
        if sel.router:
            if not check.context.logic_exists(sel.router):
                raise InvalidInputError(f"{where} router: no registered function '{sel.router}'")
            branches = list(sel.branches)
        else:
            if not sel.cases:
                raise InvalidInputError(f"{where}: needs 'cases' (or a 'router' with 'branches')")
            self.compile(step)
            branches = [c.branch for c in sel.cases]
        if sel.HasField("default_branch"):
            branches.append(sel.default_branch)
        return await check_branches(check, step, branches, where)

    def compile(self, step: plan_pb2.Step) -> tuple[Expression, ...]:
        """The cases' predicates, parsed by the safe evaluator."""
        expressions = []
        for index, case in enumerate(step.select.cases):
            try:
                expressions.append(compile_expression(case.when, SELECT_NAMES))
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"step '{step.name}' select cases[{index}] when: {exc.message}"
                ) from None
        return tuple(expressions)

    async def execute(self, ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
        branch = await choose(ctx, inputs)
        ctx.decide(branch.name)
        return await run_target(ctx, branch, inputs)


async def choose(ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> plan_pb2.Branch:
    sel = ctx.step.select
    if sel.router:
        out = await call_logic(ctx, plan_pb2.LogicStep(function=sel.router), inputs)
        raw = out.get("branch")
        name = str(raw.item() if isinstance(raw, np.ndarray) and raw.size == 1 else raw)
        branches = {b.name: b for b in sel.branches}
        if sel.HasField("default_branch"):
            branches.setdefault(sel.default_branch.name, sel.default_branch)
        if name not in branches:
            raise InvalidInputError(
                f"router '{sel.router}' returned branch '{name}'; expected one of "
                f"{sorted(branches)} (return {{'branch': name}})"
            )
        return branches[name]
    bindings = {
        "attributes": dict(ctx.run.attributes),
        "inputs": dict(inputs),
        "steps": {k: dict(v) for k, v in ctx.upstream.items()},
        "routing_key": ctx.run.routing_key,
    }
    expressions: tuple[Expression, ...] = ctx.plan.prepared[ctx.step.name]
    for index, (case, expression) in enumerate(zip(sel.cases, expressions, strict=True)):
        try:
            if expression.truth(bindings):
                return case.branch
        except InvalidInputError as exc:
            raise InvalidInputError(f"cases[{index}] when: {exc.message}") from None
    if sel.HasField("default_branch"):
        return sel.default_branch
    raise NotFoundError(
        f"no case matched and there is no default branch (cases: {[c.when for c in sel.cases]})"
    )
