"""``model`` step: one call to a model by its Consul service name."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from meshserve.orchestrator.steps.base import Outputs, StepContext, call_model

__all__ = ["execute"]


async def execute(ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
    return await call_model(ctx, ctx.step.model, inputs)
