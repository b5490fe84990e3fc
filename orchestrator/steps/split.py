"""``split`` step: weighted canary between branches; sticky by routing key via a stable hash.

With `sticky` and a routing key, the branch is a pure function of (plan, step, routing key) and
the weights, so a key stays on its branch as long as the weights do not change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from meshserve.orchestrator.plans.validate import PlanCheck, StepOutputs
from meshserve.orchestrator.steps.base import Outputs, StepContext, run_target
from meshserve.orchestrator.steps.branches import check_branches, parse_branches
from meshserve.orchestrator.steps.registry import StepKind
from meshserve.orchestrator.traffic import pick_weighted, stable_unit
from meshserve.v1 import plan_pb2

__all__ = ["SplitKind", "choose"]


class SplitKind(StepKind):
    """``split: {branches: [{model: a, weight: 9}, {model: b, weight: 1}], sticky: true}``."""

    name = "split"

    def parse(self, body: Any, where: str) -> Any:
        if not isinstance(body, dict):
            return body
        return {**body, "branches": parse_branches(body.get("branches"))}

    async def validate(self, step: plan_pb2.Step, check: PlanCheck) -> StepOutputs:
        where = f"step '{step.name}' split"
        return await check_branches(check, step, step.split.branches, where, weights=True)

    async def execute(self, ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
        name = choose(ctx)
        branch = next(b for b in ctx.step.split.branches if b.name == name)
        ctx.decide(name)
        return await run_target(ctx, branch, inputs)


def choose(ctx: StepContext) -> str:
    split = ctx.step.split
    names = [b.name for b in split.branches]
    weights = [max(0.0, b.weight) for b in split.branches]
    if split.sticky and ctx.run.routing_key:
        u = stable_unit("split", ctx.run.plan, ctx.step.name, ctx.run.routing_key)
    else:
        u = ctx.services.rng.random()
    return pick_weighted(names, weights, u)
