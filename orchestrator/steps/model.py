"""``model`` step: one call to a model by its Consul service name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError, MeshError, NotFoundError, UnavailableError
from meshserve.names import check_name
from meshserve.orchestrator.plans.validate import PlanCheck
from meshserve.orchestrator.steps.base import Outputs, StepContext, call_model
from meshserve.orchestrator.steps.registry import StepKind
from meshserve.v1 import plan_pb2, tensor_pb2

__all__ = ["ModelKind", "check_model", "model_form"]


def model_form(body: Any) -> Any:
    """A bare name becomes {"model": name} (steps and branch targets); the rest is unchanged."""
    return {"model": body} if isinstance(body, str) else body


class ModelKind(StepKind):
    """``model: scaler`` or ``model: {model: scaler, version: "2", timeout_ms: 50}``."""

    name = "model"

    def parse(self, body: Any, where: str) -> Any:
        return model_form(body)

    async def validate(
        self, step: plan_pb2.Step, check: PlanCheck
    ) -> dict[str, tensor_pb2.TensorSpec | None]:
        return await check_model(check, step, step.model, f"step '{step.name}'")

    async def execute(self, ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
        return await call_model(ctx, ctx.step.model, inputs)


async def check_model(
    check: PlanCheck, step: plan_pb2.Step, model: plan_pb2.ModelStep, where: str
) -> dict[str, tensor_pb2.TensorSpec | None]:
    """`model` exists (its metadata answers) and `step` wires its inputs; returns its outputs.

    Shared by model steps and model targets of branches."""
    if not model.model:
        raise InvalidInputError(f"{where} model: 'model' (the Consul service name) is required")
    check_name(f"{where} model", model.model)
    try:
        meta = await check.context.metadata(model.model, model.version)
    except (NotFoundError, UnavailableError) as exc:
        pinned = f" version '{model.version}'" if model.version else ""
        raise InvalidInputError(
            f"{where}: unknown model '{model.model}'{pinned} ({exc.message})"
        ) from None
    except MeshError as exc:
        raise InvalidInputError(
            f"{where}: cannot read metadata of model '{model.model}': {exc.message}"
        ) from None
    check.check_wiring(step, {s.name: s for s in meta.inputs}, f"model '{model.model}'", where)
    return {s.name: s for s in meta.outputs}
