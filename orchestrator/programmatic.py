"""Programmatic composition: plain async Python with handles, like Ray Serve's handles.

A plan with ``python: "package.module:attr"`` runs user code instead of a DAG:

- a function ``async def fn(inputs, ctx) -> dict`` where ``ctx.models["scaler"]``,
  ``ctx.plans["other"]`` and ``ctx.logic["sql.lookup"]`` are handles, or
- a class built once as ``cls(models=..., plans=...)`` whose instance is awaited as
  ``await obj(inputs, ctx)``.

``await handle.infer(x)`` goes through the same ModelCaller as declarative steps (batching, load
balancing, retries, errors, tracing) with what is left of the request's deadline; the request
is found through a context variable, so handles held by a class work per request too.
``await ctx.logic["sql.lookup"].call(inputs, step="user", **params)`` runs a registered logic
function exactly as a declarative logic step would (its span in the request's trace, the
request deadline, errors naming the step).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from meshserve.errors import InvalidInputError, MeshError
from meshserve.orchestrator.steps.base import (
    Outputs,
    RunContext,
    call_logic_function,
    infer_model,
)

if TYPE_CHECKING:
    from meshserve.orchestrator.engine import Engine

__all__ = [
    "Handles",
    "LogicHandle",
    "LogicHandles",
    "ModelHandle",
    "PlanContext",
    "PlanHandle",
    "current_run",
]

current_run: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "meshserve_current_run", default=None
)


@dataclass(frozen=True)
class PlanContext:
    """What a programmatic plan gets besides its inputs."""

    models: Handles
    plans: Handles
    logic: LogicHandles = field(default_factory=lambda: LogicHandles())
    attributes: Mapping[str, str] = field(default_factory=dict)
    routing_key: str = ""
    request_id: str = ""
    deadline: float | None = None


class ModelHandle:
    """Calls one model (optionally a pinned version) through the engine's ModelCaller."""

    def __init__(self, engine: Engine, model: str, version: str = "") -> None:
        self._engine = engine
        self.model = model
        self.version = version
        self._input_names: list[str] | None = None

    def options(self, *, version: str) -> ModelHandle:
        """A handle pinned to `version`."""
        return ModelHandle(self._engine, self.model, version)

    async def infer(
        self, x: np.ndarray | Mapping[str, np.ndarray], *, output_names: tuple[str, ...] = ()
    ) -> Outputs:
        """Run the model; a bare array goes to its only input. Returns every output by name."""
        engine = self._engine
        run = current_run.get()
        if isinstance(x, Mapping):
            inputs = dict(x)
        else:
            if self._input_names is None:
                meta = await engine.caller.metadata(self.model, self.version)
                self._input_names = [s.name for s in meta.inputs]
            if len(self._input_names) != 1:
                raise InvalidInputError(
                    f"model '{self.model}' has inputs {self._input_names}; pass a dict by name"
                )
            inputs = {self._input_names[0]: np.asarray(x)}
        return await infer_model(
            engine, run, self.model, inputs, version=self.version, output_names=output_names
        )


class PlanHandle:
    """Runs another plan (its active version) within the current request."""

    def __init__(self, engine: Engine, plan: str) -> None:
        self._engine = engine
        self.plan = plan

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> Outputs:
        run = current_run.get() or RunContext(request_id="", plan=self.plan)
        try:
            return await self._engine.run_plan(self.plan, inputs, run)
        except MeshError as exc:
            exc.add_context(plan=self.plan)
            raise


class Handles(Mapping[str, Any]):
    """A lazy name -> handle mapping (every name is valid; unknown ones fail on first call)."""

    def __init__(self, engine: Engine, kind: str) -> None:
        self._engine = engine
        self._kind = kind
        self._handles: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            handle = (
                ModelHandle(self._engine, name)
                if self._kind == "models"
                else PlanHandle(self._engine, name)
            )
            self._handles[name] = handle
        return handle

    def __iter__(self) -> Iterator[str]:
        return iter(self._handles)

    def __len__(self) -> int:
        return len(self._handles)


class LogicHandle:
    """Calls the registered logic function `name` within the current request."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def call(self, inputs: Mapping[str, Any], *, step: str = "", **params: Any) -> Outputs:
        """Run it on `inputs` with step `params` (as a plan's ``logic.params``); `step` names
        it in spans and errors (default: the function's name)."""
        run = current_run.get() or RunContext(request_id="", plan="")
        return await call_logic_function(run, self.name, step or self.name, params, inputs)


class LogicHandles(Mapping[str, LogicHandle]):
    """A lazy name -> LogicHandle mapping (unknown names fail on first call, listing the known)."""

    def __init__(self) -> None:
        self._handles: dict[str, LogicHandle] = {}

    def __getitem__(self, name: str) -> LogicHandle:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = LogicHandle(name)
        return handle

    def __iter__(self) -> Iterator[str]:
        return iter(self._handles)

    def __len__(self) -> int:
        return len(self._handles)
