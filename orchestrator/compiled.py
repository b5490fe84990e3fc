"""A plan ready to run: its graph, pre-parsed select expressions, or its Python entry point."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.expr import Expression, compile_expression
from meshserve.orchestrator.plans.graph import PlanGraph
from meshserve.orchestrator.plans.validate import SELECT_NAMES
from meshserve.v1 import plan_pb2

__all__ = ["CompiledPlan", "compile_plan", "load_python_target"]


@dataclass(frozen=True)
class CompiledPlan:
    """Immutable view of one plan version; shared by every request that runs it."""

    plan: plan_pb2.Plan
    graph: PlanGraph | None
    expressions: dict[tuple[str, int], Expression] = field(default_factory=dict)
    python: Any = None  # the loaded function or class instance for programmatic plans

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def version(self) -> int:
        return self.plan.version


def load_python_target(spec: str) -> Any:
    """Import "package.module:attr" and return the attribute (function or class)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidInputError(f"python target '{spec}' must look like 'package.module:attr'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(
            f"python target '{spec}': cannot import '{module_name}': {exc}"
        ) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise InvalidInputError(f"python target '{spec}': '{module_name}' has no '{attr}'")
        target = getattr(target, part)
    if not callable(target):
        raise InvalidInputError(f"python target '{spec}' is not callable")
    return target


def compile_plan(plan: plan_pb2.Plan, handles: Any = None) -> CompiledPlan:
    """Compile `plan` (graph + expressions, or load the Python target).

    `handles` is passed to a class target's constructor as ``cls(models=..., plans=...)``.
    """
    if plan.python:
        target: Any = load_python_target(plan.python)
        if inspect.isclass(target):
            models, plans = handles if handles is not None else ({}, {})
            factory: Any = target
            try:
                target = factory(models=models, plans=plans)
            except Exception as exc:
                raise InvalidInputError(
                    f"python target '{plan.python}': constructing it with models/plans handles "
                    f"failed: {type(exc).__name__}: {exc}"
                ) from None
        return CompiledPlan(plan=plan, graph=None, python=target)
    graph = PlanGraph(plan)
    expressions: dict[tuple[str, int], Expression] = {}
    for step in plan.steps:
        if step.WhichOneof("kind") == "select":
            for index, case in enumerate(step.select.cases):
                try:
                    expressions[(step.name, index)] = compile_expression(case.when, SELECT_NAMES)
                except InvalidInputError as exc:
                    raise InvalidInputError(
                        f"step '{step.name}' select cases[{index}] when: {exc.message}"
                    ) from None
    return CompiledPlan(plan=plan, graph=graph, expressions=expressions)
