"""``bandit`` step: the learning hub chooses the arm, then that branch runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from meshserve.errors import InternalError, InvalidInputError
from meshserve.orchestrator.plans.validate import PlanCheck, StepOutputs
from meshserve.orchestrator.steps.base import Outputs, StepContext, run_target
from meshserve.orchestrator.steps.branches import check_branches, parse_branches
from meshserve.orchestrator.steps.registry import StepKind, enum_form
from meshserve.v1 import plan_pb2

__all__ = ["BanditKind"]

_POLICIES = {
    plan_pb2.BANDIT_POLICY_UNSPECIFIED: "thompson",
    plan_pb2.BANDIT_POLICY_THOMPSON: "thompson",
    plan_pb2.BANDIT_POLICY_EPSILON_GREEDY: "epsilon_greedy",
}


class BanditKind(StepKind):
    """``bandit: {arms: [...], policy: thompson | epsilon_greedy, epsilon: 0.1}``: the learning
    hub chooses the arm per request (by `context_attribute` when set)."""

    name = "bandit"

    def parse(self, body: Any, where: str) -> Any:
        if not isinstance(body, dict):
            return body
        body = {**body, "arms": parse_branches(body.get("arms"))}
        if isinstance(body.get("policy"), str):
            body["policy"] = enum_form("BANDIT_POLICY_", body["policy"])
        return body

    async def validate(self, step: plan_pb2.Step, check: PlanCheck) -> StepOutputs:
        bandit = step.bandit
        where = f"step '{step.name}' bandit"
        if len(bandit.arms) < 2:
            raise InvalidInputError(f"{where}: needs at least 2 arms")
        if not 0.0 <= bandit.epsilon <= 1.0:
            raise InvalidInputError(f"{where} epsilon: {bandit.epsilon} is outside [0, 1]")
        return await check_branches(check, step, bandit.arms, where)

    async def execute(self, ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
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
