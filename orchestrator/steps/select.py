"""``select`` step: the first case whose predicate holds (or a registered router) picks a branch.

Predicates see ``attributes`` (request attributes), ``inputs`` (the step's wired inputs),
``steps`` (outputs of the steps this one is wired to) and ``routing_key``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from meshserve.errors import InvalidInputError, NotFoundError
from meshserve.orchestrator.steps.base import Outputs, StepContext, call_logic, run_target
from meshserve.v1 import plan_pb2

__all__ = ["choose", "execute"]


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
    for index, case in enumerate(sel.cases):
        expression = ctx.plan.expressions[(ctx.step.name, index)]
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


async def execute(ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
    branch = await choose(ctx, inputs)
    ctx.decide(branch.name)
    return await run_target(ctx, branch, inputs)
