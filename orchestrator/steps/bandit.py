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
    plan_pb2.BANDIT_POLICY_LINUCB: "linucb",
}
_CONTEXTUAL = {plan_pb2.BANDIT_POLICY_LINUCB}


def user_key(personalize_by: str, routing_key: str, attributes: Mapping[str, str]) -> str:
    """The user (or group) a request belongs to for ``personalize_by`` ("routing_key" or
    "attribute:NAME"); InvalidInputError when the request does not say."""
    if personalize_by == "routing_key":
        key, what = routing_key, "a routing_key"
    elif personalize_by.startswith("attribute:"):
        name = personalize_by.partition(":")[2]
        key, what = attributes.get(name, ""), f"the attribute {name!r}"
    else:
        raise InvalidInputError(
            f"personalize_by {personalize_by[:60]!r}: expected 'routing_key' or 'attribute:NAME'"
        )
    if not key:
        raise InvalidInputError(f"this bandit is personalised: the request needs {what}")
    return key


def _number(attributes: Mapping[str, str], name: str, where: str) -> float:
    raw = attributes.get(name, "")
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInputError(
            f"{where}: feature attribute {name!r}={raw[:40]!r} is not a number"
        ) from None
    if not np.isfinite(value):
        raise InvalidInputError(f"{where}: feature attribute {name!r} is not finite")
    return value


def request_features(
    bandit: plan_pb2.BanditStep,
    attributes: Mapping[str, str],
    inputs: Mapping[str, np.ndarray],
    where: str,
) -> list[float] | None:
    """The request's feature vector for a contextual policy (None for the others)."""
    if bandit.policy not in _CONTEXTUAL:
        return None
    features = [_number(attributes, name, where) for name in bandit.feature_attributes]
    if bandit.features_input:
        tensor = inputs.get(bandit.features_input)
        if tensor is None or tensor.size == 0:
            raise InvalidInputError(f"{where}: input {bandit.features_input!r} is missing or empty")
        if not np.issubdtype(tensor.dtype, np.number) or tensor.dtype == np.bool_:
            raise InvalidInputError(
                f"{where}: input {bandit.features_input!r} is {tensor.dtype}, expected numbers"
            )
        features.extend(float(v) for v in np.asarray(tensor[0], dtype=np.float64).ravel())
    return features


class BanditKind(StepKind):
    """``bandit: {arms: [...], policy: thompson | epsilon_greedy | linucb, epsilon: 0.1,
    feature_attributes: [...], features_input: NAME, exploration: 1.0}``: the learning hub
    chooses the arm per request (per `context_attribute` value when set; linucb over the
    request's features)."""

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
        if bandit.personalize_by:
            user_key(bandit.personalize_by, "x", {bandit.personalize_by.partition(":")[2]: "x"})
            if bandit.policy in _CONTEXTUAL:
                raise InvalidInputError(
                    f"{where}: personalize_by works with thompson or epsilon_greedy"
                )
        if bandit.policy in _CONTEXTUAL:
            if not bandit.feature_attributes and not bandit.features_input:
                raise InvalidInputError(
                    f"{where}: policy linucb needs feature_attributes and/or features_input"
                )
            if not (np.isfinite(bandit.exploration) and bandit.exploration >= 0):
                raise InvalidInputError(f"{where} exploration: {bandit.exploration} must be >= 0")
            if bandit.features_input and bandit.features_input not in step.inputs:
                raise InvalidInputError(
                    f"{where}: features_input {bandit.features_input!r} is not one of the "
                    f"step's inputs {sorted(step.inputs)}"
                )
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
            features=request_features(
                bandit, ctx.run.attributes, inputs, f"step '{ctx.step.name}' bandit"
            ),
            exploration=bandit.exploration,
            user=(
                user_key(bandit.personalize_by, ctx.run.routing_key, ctx.run.attributes)
                if bandit.personalize_by
                else ""
            ),
        )
        if arm not in arms:
            raise InternalError(f"learning chose arm '{arm}', which is not one of {sorted(arms)}")
        ctx.decide(arm)
        return await run_target(ctx, arms[arm], inputs)
