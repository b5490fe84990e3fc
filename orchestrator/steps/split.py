"""``split`` step: weighted canary between branches; sticky by routing key via a stable hash.

With `sticky` and a routing key, the branch is a pure function of (plan, step, routing key) and
the weights, so a key stays on its branch as long as the weights do not change.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from meshserve.orchestrator.steps.base import Outputs, StepContext, run_target
from meshserve.orchestrator.traffic import pick_weighted, stable_unit

__all__ = ["choose", "execute"]


def choose(ctx: StepContext) -> str:
    split = ctx.step.split
    names = [b.name for b in split.branches]
    weights = [max(0.0, b.weight) for b in split.branches]
    if split.sticky and ctx.run.routing_key:
        u = stable_unit("split", ctx.run.plan, ctx.step.name, ctx.run.routing_key)
    else:
        u = ctx.services.rng.random()
    return pick_weighted(names, weights, u)


async def execute(ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
    name = choose(ctx)
    branch = next(b for b in ctx.step.split.branches if b.name == name)
    ctx.decide(name)
    return await run_target(ctx, branch, inputs)
