"""What every step executor gets (the request's RunContext, the engine's Services) and the one
function that runs a branch target (model, logic or nested plan)."""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from google.protobuf import json_format

from meshserve.errors import DeadlineExceededError, InvalidInputError, MeshError
from meshserve.orchestrator.caller import ModelCaller
from meshserve.orchestrator.learning_port import Learning
from meshserve.orchestrator.stats import StatsRecorder
from meshserve.orchestrator.traffic import TrafficTable
from meshserve.v1 import plan_pb2

if TYPE_CHECKING:
    from meshserve.orchestrator.compiled import CompiledPlan

__all__ = [
    "Outputs",
    "RunContext",
    "Services",
    "StepContext",
    "StepExecutor",
    "call_model",
    "infer_model",
    "run_target",
]

Outputs = dict[str, np.ndarray]
MAX_PLAN_DEPTH = 8


@dataclass
class RunContext:
    """One request: identity, routing inputs, deadline and the decisions taken so far."""

    request_id: str
    plan: str
    routing_key: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    deadline: float | None = None
    decisions: dict[str, str] = field(default_factory=dict)
    depth: int = 0

    def remaining_s(self, clock: Callable[[], float]) -> float | None:
        return None if self.deadline is None else self.deadline - clock()


class Services(Protocol):
    """The engine's shared parts, as step executors see them."""

    caller: ModelCaller
    traffic: TrafficTable
    learning: Learning
    stats: StatsRecorder
    clock: Callable[[], float]
    rng: random.Random

    async def run_plan(
        self, name: str, inputs: Mapping[str, np.ndarray], run: RunContext
    ) -> Outputs:
        """Run another plan (its active version) inside this request."""
        ...

    def spawn_background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` detached from the request (shadow candidates)."""
        ...


@dataclass(frozen=True)
class StepContext:
    services: Services
    run: RunContext
    plan: CompiledPlan
    step: plan_pb2.Step
    upstream: Mapping[str, Mapping[str, np.ndarray]]

    def decide(self, branch: str) -> None:
        """Record the branch this (select/split/bandit) step chose."""
        self.run.decisions[self.step.name] = branch
        self.services.stats.decision(self.run.plan, self.step.name, branch)


StepExecutor = Callable[[StepContext, Mapping[str, np.ndarray]], Awaitable[Outputs]]


async def call_model(
    ctx: StepContext, model: plan_pb2.ModelStep, inputs: Mapping[str, np.ndarray]
) -> Outputs:
    """Call `model` through the ModelCaller with what is left of the request deadline."""
    return await infer_model(
        ctx.services,
        ctx.run,
        model.model,
        inputs,
        version=model.version,
        timeout_cap_s=model.timeout_ms / 1000 if model.timeout_ms else None,
    )


async def infer_model(
    services: Services,
    run: RunContext | None,
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    version: str = "",
    timeout_cap_s: float | None = None,
    output_names: Sequence[str] = (),
) -> Outputs:
    """One ModelCaller call within request `run` (None: no request): the version from the
    traffic table unless pinned, what is left of the deadline (at most `timeout_cap_s`) as the
    timeout; a failure names the model (``MeshError.add_context``)."""
    routing_key = run.routing_key if run else ""
    version = version or services.traffic.choose_version(model, routing_key)
    timeout_s = run.remaining_s(services.clock) if run else None
    if timeout_s is not None and timeout_s <= 0:
        raise DeadlineExceededError("the request deadline passed before the call").add_context(
            model=model
        )
    if timeout_cap_s:
        timeout_s = min(timeout_s if timeout_s is not None else math.inf, timeout_cap_s)
    try:
        return await services.caller.infer(
            model,
            inputs,
            version=version,
            routing_key=routing_key,
            timeout_s=timeout_s,
            output_names=output_names,
        )
    except MeshError as exc:
        exc.add_context(model=model)
        raise


async def call_logic(
    ctx: StepContext, logic: plan_pb2.LogicStep, inputs: Mapping[str, Any]
) -> Outputs:
    """Call a registered logic function with a LogicContext for this step."""
    params = json_format.MessageToDict(logic.params) if logic.HasField("params") else {}
    return await call_logic_function(ctx.run, logic.function, ctx.step.name, params, inputs)


async def call_logic_function(
    run: RunContext, function: str, step: str, params: Mapping[str, Any], inputs: Mapping[str, Any]
) -> Outputs:
    """Call logic `function` as step `step` of the request `run` (declarative steps and the
    ``ctx.logic`` handles of Python plans): its span, the request deadline, errors located."""
    from meshserve.orchestrator.logic import LogicContext, run_logic

    lctx = LogicContext(
        params=dict(params),
        attributes=dict(run.attributes),
        routing_key=run.routing_key,
        request_id=run.request_id,
        plan=run.plan,
        step=step,
        deadline=run.deadline,
    )
    try:
        result = await run_logic(function, dict(inputs), lctx)
    except MeshError as exc:
        exc.add_context(logic=function)
        raise
    return {key: np.asarray(value) for key, value in result.items()}


async def run_target(
    ctx: StepContext, branch: plan_pb2.Branch, inputs: Mapping[str, np.ndarray]
) -> Outputs:
    """Run what a branch points at, on the step's inputs."""
    kind = branch.target.WhichOneof("kind")
    if kind == "model":
        return await call_model(ctx, branch.target.model, inputs)
    if kind == "logic":
        return await call_logic(ctx, branch.target.logic, inputs)
    if kind == "plan":
        if ctx.run.depth >= MAX_PLAN_DEPTH:
            raise InvalidInputError(f"plans nest deeper than {MAX_PLAN_DEPTH} levels").add_context(
                plan=branch.target.plan
            )
        try:
            return await ctx.services.run_plan(branch.target.plan, inputs, ctx.run)
        except MeshError as exc:
            exc.add_context(plan=branch.target.plan)
            raise
    raise InvalidInputError(f"branch '{branch.name}': target has no model, logic or plan")
