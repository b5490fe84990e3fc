"""A plan ready to run: its graph and what each step's kind prepared, or its Python entry point.

Everything a request would otherwise recompute is resolved once per plan version here: the
input specs as numpy dtypes, each step's kind (looked up in ``STEP_KINDS``: its executor and
what its ``compile`` hook prepared, e.g. parsed select expressions), its wiring in topological
order, whether the steps form a chain (every wave of the graph holds one step, so the engine
runs them inline without a task per step), and the plan outputs' wiring.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshserve.errors import InvalidInputError
from meshserve.names import quote
from meshserve.orchestrator.plans.graph import PlanGraph, Ref
from meshserve.orchestrator.steps.registry import kind_name, kind_of
from meshserve.tensors import DTYPE_TO_NUMPY
from meshserve.v1 import plan_pb2, tensor_pb2

if TYPE_CHECKING:
    from meshserve.orchestrator.steps.base import StepExecutor

__all__ = ["CompiledPlan", "InputSpec", "StepPlan", "compile_plan", "load_python_target"]


@dataclass(frozen=True)
class InputSpec:
    """A declared plan input: its numpy dtype (None for an unknown DataType) and shape
    (empty = any; negative dimensions = any size)."""

    name: str
    spec: tensor_pb2.TensorSpec
    dtype: Any
    shape: tuple[int, ...]


@dataclass(frozen=True)
class StepPlan:
    """One step, resolved: its kind (name and executor), its wiring as (key, ref) pairs and the
    steps it awaits."""

    name: str
    step: plan_pb2.Step
    kind: str
    execute: StepExecutor
    wiring: tuple[tuple[str, Ref], ...]
    deps: tuple[str, ...]


@dataclass(frozen=True)
class CompiledPlan:
    """Immutable view of one plan version; shared by every request that runs it."""

    plan: plan_pb2.Plan
    graph: PlanGraph | None
    prepared: dict[str, Any] = field(default_factory=dict)  # step -> its kind's compile()
    python: Any = None  # the loaded function or class instance for programmatic plans
    inputs: tuple[InputSpec, ...] = ()
    schedule: tuple[StepPlan, ...] = ()  # every step, in topological order
    chain: bool = False  # each step depends on the one before: run inline, in order
    outputs: tuple[tuple[str, Ref], ...] = ()

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def version(self) -> int:
        return self.plan.version


def load_python_target(spec: str, allowed_modules: Collection[str] | None = None) -> Any:
    """Import "package.module:attr" and return the attribute (function or class).

    `allowed_modules` is the allow-list named at process start (``--python-module``, the
    modules of ``--python-plan`` and ``--logic``): a module outside it is refused before
    anything is imported (None: no list, for in-process embedding). `attr` names a callable
    defined in that module (or an attribute of one), never a module or a ``_private`` name.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidInputError(f"python target {quote(spec)} must look like 'package.module:attr'")
    if allowed_modules is not None and module_name not in allowed_modules:
        raise InvalidInputError(
            f"python target {quote(spec)}: module {quote(module_name)} is not in the allow-list "
            f"{sorted(allowed_modules)} (modules named at start with --python-module, "
            "--python-plan or --logic)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(
            f"python target {quote(spec)}: cannot import {quote(module_name)}: {quote(str(exc))}"
        ) from None
    target: Any = module
    parts = attr.split(".")
    for part in parts:
        if part.startswith("_") or not hasattr(target, part):
            raise InvalidInputError(
                f"python target {quote(spec)}: {quote(module_name)} has no public {quote(attr)}"
            )
        target = getattr(target, part)
        if inspect.ismodule(target):
            raise InvalidInputError(f"python target {quote(spec)}: {quote(part)} is a module")
    if getattr(getattr(module, parts[0]), "__module__", module_name) != module_name:
        raise InvalidInputError(
            f"python target {quote(spec)}: {quote(parts[0])} is not defined in "
            f"{quote(module_name)} (it was imported there)"
        )
    if not callable(target):
        raise InvalidInputError(f"python target {quote(spec)} is not callable")
    return target


def compile_plan(
    plan: plan_pb2.Plan, handles: Any = None, python_modules: Collection[str] | None = None
) -> CompiledPlan:
    """Compile `plan` (graph + what each kind prepares, or load the Python target).

    `handles` is passed to a class target's constructor as ``cls(models=..., plans=...)``;
    `python_modules` is the allow-list of `load_python_target`.
    """
    if plan.python:
        target: Any = load_python_target(plan.python, python_modules)
        if inspect.isclass(target):
            models, plans = handles if handles is not None else ({}, {})
            factory: Any = target
            try:
                target = factory(models=models, plans=plans)
            except Exception as exc:
                raise InvalidInputError(
                    f"python target {quote(plan.python)}: constructing it with models/plans "
                    f"handles failed: {type(exc).__name__}: {quote(str(exc))}"
                ) from None
        return CompiledPlan(plan=plan, graph=None, python=target, inputs=_input_specs(plan))
    graph = PlanGraph(plan)
    kinds = {name: kind_of(step) for name, step in graph.steps.items()}
    prepared = {name: kinds[name].compile(step) for name, step in graph.steps.items()}
    schedule = tuple(
        StepPlan(
            name=name,
            step=graph.steps[name],
            kind=kind_name(graph.steps[name]),
            execute=kinds[name].execute,
            wiring=tuple(graph.inputs[name].items()),
            deps=tuple(sorted(graph.deps[name])),
        )
        for name in graph.order
    )
    return CompiledPlan(
        plan=plan,
        graph=graph,
        prepared=prepared,
        inputs=_input_specs(plan),
        schedule=schedule,
        chain=_is_chain(schedule),
        outputs=tuple(graph.outputs.items()),
    )


def _input_specs(plan: plan_pb2.Plan) -> tuple[InputSpec, ...]:
    return tuple(
        InputSpec(s.name, s, DTYPE_TO_NUMPY.get(s.dtype), tuple(int(d) for d in s.shape))
        for s in plan.inputs
    )


def _is_chain(schedule: tuple[StepPlan, ...]) -> bool:
    """True when no two steps could run at the same time: every step after the first depends
    on the step right before it in topological order (so each wave holds one step)."""
    return all(prev.name in step.deps for prev, step in itertools.pairwise(schedule))
