"""The step-kind table: every kind of plan node is one ``StepKind`` in ``STEP_KINDS``.

Parsing (plans/parse.py), validation (plans/validate.py), compilation (compiled.py) and the
engine reach a step's kind only through this table, so adding a kind is one class and one
``register_step_kind`` call. The built-in kinds are the members of the proto ``Step`` oneof
(model, logic, ensemble, select, split, shadow, bandit); a registered kind that is not a member
is carried in ``Step.custom`` (``CustomStep{kind, params}``). In YAML/JSON both are written the
same way, ``<kind>: {...}`` beside ``name`` and ``inputs``; for a non-member kind the parser
stores what the kind's ``parse`` returns as ``custom.params``.

This module is a leaf (it imports no other orchestrator module at run time), so plans/ can
import the table while the kinds import the shared checks from plans/.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from google.protobuf import json_format

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.tables import Table
from meshserve.v1 import plan_pb2

if TYPE_CHECKING:
    from meshserve.orchestrator.plans.validate import PlanCheck, StepOutputs
    from meshserve.orchestrator.steps.base import Outputs, StepContext

__all__ = [
    "CUSTOM",
    "PROTO_KINDS",
    "STEP_KINDS",
    "StepKind",
    "custom_params",
    "enum_form",
    "kind_name",
    "kind_of",
    "known_kinds",
    "lookup_kind",
    "register_step_kind",
    "unregister_step_kind",
]

CUSTOM = "custom"
# The members of the proto `Step` oneof that are step kinds of their own (all but `custom`).
PROTO_KINDS = frozenset(
    f.name for f in plan_pb2.Step.DESCRIPTOR.oneofs_by_name["kind"].fields if f.name != CUSTOM
)


class StepKind(ABC):
    """One kind of plan node: how it is parsed, validated, compiled and executed.

    Subclass it, set `name`, override what the kind needs, register an instance with
    ``register_step_kind``. The hooks, in the order they run:

    - ``parse(body, where)``: while a plan's text form (YAML/JSON, or its dict) becomes a Plan
      proto. `body` is the value written under the kind's key (``model: scaler`` gives
      ``"scaler"``). Return the proto3 JSON form of the kind's part: the message under
      ``Step.<name>`` for a member of the proto oneof, else the ``params`` object (any JSON
      object; stored as a google.protobuf.Struct). Raise InvalidInputError naming `where`.
      Default: `body` unchanged. It must accept what it returns (a plan's canonical JSON is
      valid text form too). Plans given as protos (gRPC, stored JSON) skip this hook.
    - ``validate(step, check)``: on ApplyPlan (and for ``--plans`` at start), in topological
      order, after the wiring and cycle checks and after every step this one is wired to.
      `check` is the plan's ``PlanCheck`` (its ValidationContext with model metadata, known
      plans and logic functions; the wiring; upstream specs; shared checks). Return the step's
      outputs, ``{name: TensorSpec or None (type unknown)}``, or None when they are known only at
      run time (wires from them are then not checked). Raise InvalidInputError starting with
      ``step '<name>'`` and naming the field.
    - ``compile(step)``: once per plan version (compiled.py). What it returns is
      ``CompiledPlan.prepared[step.name]`` for `execute` (parsed expressions, params as a dict).
      Raise InvalidInputError like `validate`. Default: None.
    - ``execute(ctx, inputs)``: per request, by the engine, once the steps it is wired to have
      run. `ctx` is the StepContext (services, run, compiled plan, the step, upstream outputs),
      `inputs` the step's wired inputs. Return named arrays. Raise MeshError subclasses (the
      engine puts the step name in front); any other exception becomes INTERNAL.

    A kind outside the proto oneof reads its parameters with ``custom_params(step)``
    (or, cheaper per request, turns them into what it needs in `compile`).
    """

    name: ClassVar[str] = ""

    def parse(self, body: Any, where: str) -> Any:
        """The proto3 JSON form of this kind's part of a step (see the class docstring)."""
        return body

    @abstractmethod
    async def validate(self, step: plan_pb2.Step, check: PlanCheck) -> StepOutputs:
        """Check `step` before it is stored; returns its outputs (see the class docstring)."""

    def compile(self, step: plan_pb2.Step) -> Any:
        """What `execute` needs, resolved once per plan version (default: nothing)."""
        return None

    @abstractmethod
    async def execute(self, ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
        """Run the step for one request (see the class docstring)."""


STEP_KINDS: Table[StepKind] = Table("step kind", reserved=(CUSTOM,))
"""Kind name -> StepKind (the members of ``Step.kind`` are built in; see orchestrator/tables.py)."""


def register_step_kind(kind: StepKind, *, replace: bool = False) -> StepKind:
    """Add `kind` to the table (at import time, before plans using it are compiled).

    A name already registered is refused unless `replace`; built-in kinds and ``custom`` never.
    Returns `kind`, so a module can write ``SCALE = register_step_kind(ScaleKind())``.
    """
    return STEP_KINDS.register(kind.name, kind, replace=replace, builtin=kind.name in PROTO_KINDS)


def unregister_step_kind(name: str) -> None:
    """Remove a registered kind outside the proto oneof (the built-in kinds stay)."""
    STEP_KINDS.unregister(name)


def known_kinds() -> str:
    """The registered kind names, for messages: "'bandit', 'ensemble' ... or 'split'"."""
    return STEP_KINDS.expected()


def kind_name(step: plan_pb2.Step) -> str:
    """The step's kind: its oneof member, ``custom.kind`` for a custom step, "" when unset."""
    member = step.WhichOneof("kind") or ""
    return step.custom.kind if member == CUSTOM else member


def lookup_kind(name: str, where: str, *, custom: bool = False) -> StepKind:
    """The kind registered as `name` (`custom`: written as ``custom``); InvalidInputError naming
    `where`, the kind and the known kinds when there is none, or when a built-in kind is
    written as ``custom``."""
    if not name:
        raise InvalidInputError(f"{where}: no kind set (expected one of {known_kinds()})")
    kind = STEP_KINDS.find(name)
    if kind is None:
        raise InvalidInputError(
            f"{where}: unknown step kind '{name}' (known kinds: {known_kinds()})"
        )
    if custom and name in PROTO_KINDS:
        raise InvalidInputError(
            f"{where}: kind '{name}' is built in; write it as '{name}', not as '{CUSTOM}'"
        )
    return kind


def kind_of(step: plan_pb2.Step) -> StepKind:
    """The registered kind of `step` (see ``lookup_kind`` for the errors)."""
    custom = step.WhichOneof("kind") == CUSTOM
    return lookup_kind(kind_name(step), f"step '{step.name}'", custom=custom)


def custom_params(step: plan_pb2.Step) -> dict[str, Any]:
    """The parameters of a step of a kind outside the proto oneof, as a dict."""
    if not step.custom.HasField("params"):
        return {}
    params: dict[str, Any] = json_format.MessageToDict(step.custom.params)
    return params


def enum_form(prefix: str, value: str) -> str:
    """An enum value written in any case, with or without its prefix, as its proto JSON name
    (``thompson`` -> ``BANDIT_POLICY_THOMPSON``); for parse hooks."""
    upper = value.upper()
    return upper if upper.startswith(prefix) else prefix + upper
