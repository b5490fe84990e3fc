"""``logic`` step: a registered business-logic function."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError
from meshserve.names import check_name
from meshserve.orchestrator.plans.validate import PlanCheck
from meshserve.orchestrator.steps.base import Outputs, StepContext, call_logic
from meshserve.orchestrator.steps.registry import StepKind
from meshserve.v1 import plan_pb2

__all__ = ["LogicKind", "check_logic", "logic_form"]


def logic_form(body: Any) -> Any:
    """A bare name becomes {"function": name} (steps and branch targets); the rest unchanged."""
    return {"function": body} if isinstance(body, str) else body


class LogicKind(StepKind):
    """``logic: fn`` or ``logic: {function: fn, params: {...}}``; outputs known at run time."""

    name = "logic"

    def parse(self, body: Any, where: str) -> Any:
        return logic_form(body)

    async def validate(self, step: plan_pb2.Step, check: PlanCheck) -> None:
        check_logic(check, step.logic, f"step '{step.name}'")

    async def execute(self, ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
        return await call_logic(ctx, ctx.step.logic, inputs)


def check_logic(check: PlanCheck, logic: plan_pb2.LogicStep, where: str) -> None:
    """`logic.function` names a registered logic function (steps and logic targets)."""
    if not logic.function:
        raise InvalidInputError(f"{where} logic: 'function' is required")
    check_name(f"{where} logic function", logic.function)
    if not check.context.logic_exists(logic.function):
        raise InvalidInputError(
            f"{where} logic: no registered function '{logic.function}' (register it with "
            "@logic in a module the orchestrator imports)"
        )
