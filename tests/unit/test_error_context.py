"""A failed call reaches the Engine's caller as the one error created where it failed, with
plan, step, model and replica (or logic function) added in place by the layers it crossed."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
import numpy as np
import pytest

from meshserve.errors import (
    InvalidInputError,
    MeshError,
    NotFoundError,
    UnavailableError,
    error_for_status,
)
from meshserve.orchestrator.engine import Engine, ExecuteCall
from meshserve.orchestrator.plans.parse import parse_plan_text
from meshserve.v1 import plan_pb2
from tests.logic_helpers import logic_functions
from tests.unit.test_datapath_router import SCRIPT, Ep, call, make_router

REPLICA = "mlp-127.0.0.1-4567"


class FailingCaller:
    """A ModelCaller whose `mlp` fails with `error` (as the router raises it: model and replica
    named); every other model echoes its inputs."""

    def __init__(self, error: MeshError) -> None:
        self.error = error

    async def infer(
        self, model: str, inputs: Mapping[str, np.ndarray], **_: object
    ) -> dict[str, np.ndarray]:
        if model == "mlp":
            raise self.error
        return {"scaled": inputs["input"]}


class Plans:
    def __init__(self, *texts: str) -> None:
        self.plans = {}
        for text in texts:
            plan = parse_plan_text(text)
            plan.version = 1
            self.plans[plan.name] = plan

    def get(self, name: str, version: int = 0) -> plan_pb2.Plan:
        if name not in self.plans:
            raise NotFoundError(f"plan '{name}' does not exist")
        return self.plans[name]


PIPELINE = """
name: digits-pipeline
steps:
  - {name: scaler, model: scaler, inputs: {input: input.input}}
  - {name: mlp, model: mlp, inputs: {input: scaler.scaled}}
outputs: {label: mlp.label}
"""

OUTER = """
name: outer
steps:
  - name: sub
    split: {branches: [{plan: digits-pipeline, weight: 1}]}
    inputs: {input: input.input}
outputs: {label: sub.label}
"""

X = {"input": np.zeros((2, 64), np.float32)}


async def test_the_router_raises_the_replicas_error_naming_model_and_replica() -> None:
    router, _, _ = make_router()
    router.update_endpoints([Ep("a")])
    error = error_for_status(grpc.StatusCode.INVALID_ARGUMENT, "input 'input': bad dtype")
    SCRIPT["a"] = [error]
    with pytest.raises(InvalidInputError) as info:
        await call(router)
    assert info.value is error
    assert info.value.message == "model 'm' replica 'a': input 'input': bad dtype"


def _replica_error() -> MeshError:
    return InvalidInputError("input 'input': expects float32 [-1,64]").add_context(
        model="mlp", replica=REPLICA
    )


async def test_a_failed_model_call_names_plan_step_model_and_replica() -> None:
    error = _replica_error()
    engine = Engine(FailingCaller(error), Plans(PIPELINE))
    with pytest.raises(InvalidInputError) as info:
        await engine.execute(ExecuteCall("digits-pipeline", X))
    assert info.value is error  # created once, never re-wrapped on the way up
    assert info.value.message == (
        f"plan 'digits-pipeline' step 'mlp' model 'mlp' replica '{REPLICA}': "
        "input 'input': expects float32 [-1,64]"
    )


async def test_a_nested_plan_names_both_plans_outermost_first() -> None:
    error = _replica_error()
    engine = Engine(FailingCaller(error), Plans(PIPELINE, OUTER))
    with pytest.raises(InvalidInputError) as info:
        await engine.execute(ExecuteCall("outer", X))
    assert info.value is error
    assert info.value.message == (
        f"plan 'outer' step 'sub' > plan 'digits-pipeline' step 'mlp' model 'mlp' replica "
        f"'{REPLICA}': input 'input': expects float32 [-1,64]"
    )
    assert (info.value.plan, info.value.step) == ("digits-pipeline", "mlp")


async def test_a_logic_step_error_names_the_function() -> None:
    error = UnavailableError("feature store down")

    async def broken(inputs: dict[str, object], ctx: object) -> dict[str, object]:
        raise error

    with logic_functions({"test_ctx.broken": broken}):
        plan = """
name: rules
steps:
  - {name: check, logic: test_ctx.broken, inputs: {input: input.input}}
outputs: {out: check.input}
"""
        engine = Engine(FailingCaller(_replica_error()), Plans(plan))
        with pytest.raises(UnavailableError) as info:
            await engine.execute(ExecuteCall("rules", X))
    assert info.value is error
    assert info.value.message == (
        "plan 'rules' step 'check' logic 'test_ctx.broken': feature store down"
    )
