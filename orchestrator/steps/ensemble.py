"""``ensemble`` step: run every member concurrently on the step's inputs and aggregate one output.

How the members' `output` arrays are combined is an ``Aggregation`` from the table in
``aggregations.py`` (mean, weighted_mean, majority_vote, max_probability, a registered logic
function, or one added with ``register_aggregation``), resolved once per plan version.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.plans.validate import PlanCheck
from meshserve.orchestrator.steps.aggregations import (
    Aggregation,
    aggregation_of,
    parse_aggregation,
)
from meshserve.orchestrator.steps.base import Outputs, StepContext, run_target
from meshserve.orchestrator.steps.branches import check_branches, parse_branches
from meshserve.orchestrator.steps.registry import StepKind
from meshserve.v1 import plan_pb2, tensor_pb2

__all__ = ["EnsembleKind"]


class EnsembleKind(StepKind):
    """``ensemble: {members: [...], aggregation: majority_vote, output: label}``; the step's
    output has the members' output name."""

    name = "ensemble"

    def parse(self, body: Any, where: str) -> Any:
        if not isinstance(body, dict):
            return body
        body = dict(body)
        body["members"] = parse_branches(body.get("members"))
        if isinstance(body.get("aggregation"), str):
            body.update(parse_aggregation(body["aggregation"], f"{where} ensemble"))
        return body

    async def validate(
        self, step: plan_pb2.Step, check: PlanCheck
    ) -> dict[str, tensor_pb2.TensorSpec | None]:
        ens = step.ensemble
        where = f"step '{step.name}' ensemble"
        if not ens.output:
            raise InvalidInputError(f"{where} output: name the members' output to aggregate")
        aggregation = aggregation_of(ens, where)
        if (
            ens.aggregator
            and ens.aggregation != plan_pb2.AGGREGATION_CUSTOM
            and not check.context.logic_exists(ens.aggregator)
        ):
            raise InvalidInputError(
                f"{where} aggregator: no registered function '{ens.aggregator}'"
            )
        outs = await check_branches(check, step, ens.members, where)
        if outs is not None and ens.output not in outs:
            raise InvalidInputError(
                f"{where} output: members do not all have output '{ens.output}' "
                f"(common outputs: {sorted(outs)})"
            )
        spec = outs.get(ens.output) if outs is not None else None
        return {ens.output: aggregation.check(ens, spec, where, check.context)}

    def compile(self, step: plan_pb2.Step) -> Aggregation:
        return aggregation_of(step.ensemble, f"step '{step.name}' ensemble")

    async def execute(self, ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
        ens = ctx.step.ensemble
        aggregation: Aggregation = ctx.plan.prepared[ctx.step.name]
        members = list(ens.members)
        results = await asyncio.gather(*(run_target(ctx, m, inputs) for m in members))
        arrays: list[np.ndarray] = []
        for member, out in zip(members, results, strict=True):
            if ens.output not in out:
                raise InvalidInputError(
                    f"member '{member.name}' returned no output '{ens.output}' "
                    f"(outputs: {sorted(out)})"
                )
            arrays.append(np.asarray(out[ens.output]))
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1 and aggregation.same_shape:
            raise InvalidInputError(
                f"members' output '{ens.output}' shapes differ: "
                + ", ".join(
                    f"{m.name} {list(a.shape)}" for m, a in zip(members, arrays, strict=True)
                )
            )
        value = aggregation.aggregate(ctx, members, arrays)
        if inspect.isawaitable(value):
            value = await value
        return {ens.output: value}
