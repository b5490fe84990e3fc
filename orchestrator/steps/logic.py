"""``logic`` step: a registered business-logic function."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from meshserve.orchestrator.steps.base import Outputs, StepContext, call_logic

__all__ = ["execute"]


async def execute(ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
    return await call_logic(ctx, ctx.step.logic, inputs)
