"""The wiring graph of a plan: references, dependencies, cycles and a topological order."""

from __future__ import annotations

from dataclasses import dataclass

from meshserve.errors import InvalidInputError
from meshserve.names import check_name
from meshserve.v1 import plan_pb2

__all__ = ["INPUT", "PlanGraph", "Ref", "parse_ref"]

INPUT = "input"


@dataclass(frozen=True)
class Ref:
    """A wiring reference: ``input.<name>`` (source "input") or ``<step>.<output>``."""

    source: str
    name: str

    @property
    def is_input(self) -> bool:
        return self.source == INPUT

    def __str__(self) -> str:
        return f"{self.source}.{self.name}"


def parse_ref(text: str, where: str) -> Ref:
    """Parse "source.name"; `where` names the field for the error message."""
    source, dot, name = text.partition(".")
    if not dot or not source or not name:
        raise InvalidInputError(
            f"{where}: reference '{text}' must look like 'input.<name>' or '<step>.<output>'"
        )
    return Ref(source, name)


class PlanGraph:
    """Steps of a declarative plan with their dependencies, checked for wiring and cycles.

    Invariants after construction: step names are unique and not "input"; every reference names
    a plan input or an existing step; the graph is acyclic; `order` lists every step after all of
    the steps it depends on.
    """

    def __init__(self, plan: plan_pb2.Plan) -> None:
        self.plan = plan
        self.steps: dict[str, plan_pb2.Step] = {}
        for index, step in enumerate(plan.steps):
            if not step.name:
                raise InvalidInputError(f"plan '{plan.name}' steps[{index}]: 'name' is required")
            check_name(f"plan '{plan.name}' steps[{index}] step", step.name)
            if step.name == INPUT or "." in step.name:
                raise InvalidInputError(
                    f"step '{step.name}': name must not be 'input' nor contain '.'"
                )
            if step.name in self.steps:
                raise InvalidInputError(f"step '{step.name}': name is used by more than one step")
            self.steps[step.name] = step
        plan_inputs = {spec.name for spec in plan.inputs}
        self.inputs: dict[str, dict[str, Ref]] = {}
        self.deps: dict[str, set[str]] = {}
        for name, step in self.steps.items():
            refs = {
                key: parse_ref(value, f"step '{name}' input '{key}'")
                for key, value in step.inputs.items()
            }
            for key, ref in refs.items():
                self._check_ref(ref, plan_inputs, f"step '{name}' input '{key}'")
            self.inputs[name] = refs
            self.deps[name] = {r.source for r in refs.values() if not r.is_input}
        self.outputs: dict[str, Ref] = {}
        for key, value in plan.outputs.items():
            ref = parse_ref(value, f"plan output '{key}'")
            self._check_ref(ref, plan_inputs, f"plan output '{key}'")
            self.outputs[key] = ref
        self.order = self._toposort()

    def _check_ref(self, ref: Ref, plan_inputs: set[str], where: str) -> None:
        if ref.is_input:
            if plan_inputs and ref.name not in plan_inputs:
                raise InvalidInputError(
                    f"{where}: wired to '{ref}' but the plan has no input '{ref.name}' "
                    f"(inputs: {sorted(plan_inputs)})"
                )
        elif ref.source not in self.steps:
            raise InvalidInputError(
                f"{where}: wired to '{ref}' but there is no step '{ref.source}' "
                f"(steps: {sorted(self.steps)})"
            )

    def _toposort(self) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}  # 1 = visiting, 2 = done

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = [*path[path.index(name) :], name]
                raise InvalidInputError(f"plan has a cycle: {' -> '.join(cycle)}")
            state[name] = 1
            for dep in sorted(self.deps[name]):
                visit(dep, [*path, name])
            state[name] = 2
            order.append(name)

        for name in self.steps:
            visit(name, [])
        return order
