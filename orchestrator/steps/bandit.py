"""``bandit`` step: the learning hub chooses the arm, then that branch runs."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from meshserve.errors import InternalError
from meshserve.orchestrator.steps.base import Outputs, StepContext, run_target
from meshserve.v1 import plan_pb2

__all__ = ["execute"]

_POLICIES = {
    plan_pb2.BANDIT_POLICY_UNSPECIFIED: "thompson",
    plan_pb2.BANDIT_POLICY_THOMPSON: "thompson",
    plan_pb2.BANDIT_POLICY_EPSILON_GREEDY: "epsilon_greedy",
}


async def execute(ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
    bandit = ctx.step.bandit
    arms = {a.name: a for a in bandit.arms}
    context = (
        ctx.run.attributes.get(bandit.context_attribute, "") if bandit.context_attribute else ""
    )
    arm = await ctx.services.learning.choose_arm(
        plan=ctx.run.plan,
        step=ctx.step.name,
        arms=list(arms),
        policy=_POLICIES.get(bandit.policy, "thompson"),
        epsilon=bandit.epsilon,
        context=context,
        request_id=ctx.run.request_id,
        seed=bandit.seed,
    )
    if arm not in arms:
        raise InternalError(f"learning chose arm '{arm}', which is not one of {sorted(arms)}")
    ctx.decide(arm)
    return await run_target(ctx, arms[arm], inputs)
