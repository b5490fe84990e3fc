"""Plans' typed contracts: stamped on each stored version, checked for compatibility, served live.

- `stamp_plan` (ApplyPlan, rollback, startup plans) builds the new version's contract from the
  plan's ``inputs`` and its resolved output specs, compares it with the active version's
  (`meshserve.contracts.breaking_changes`) and writes ``Plan.typed`` (schema number, outputs,
  fingerprint, service). An incompatible contract is refused with FAILED_PRECONDITION naming
  each breaking field unless the caller allows a breaking change; then the schema goes up by one.
  Compatible versions keep the schema number.
- `plan_contract` rebuilds a stored version's contract from ``Plan.typed`` alone (no model
  metadata), so every orchestrator serves the same contract.
- `follow_plan_contracts` keeps a `ContractSet` equal to the active versions' contracts on every
  plan-store change: typed services and reflection follow ApplyPlan without a restart.

A plan's tensor specs with an empty shape mean "any shape" (as in plan validation): such a field
is a nested ``<Dtype>Tensor`` message carrying its own shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from meshserve.contracts import (
    BreakingChange,
    Contract,
    FieldSpec,
    breaking_changes,
    build_contract,
)
from meshserve.contracts.live import ContractSet
from meshserve.errors import FailedPreconditionError, MeshError
from meshserve.names import quote
from meshserve.tensors import DTYPE_NAMES
from meshserve.v1 import plan_pb2, tensor_pb2

__all__ = ["TypedPlan", "follow_plan_contracts", "plan_contract", "stamp_plan"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TypedPlan:
    """The outcome of `stamp_plan`: the version's contract, what broke (allowed), notes."""

    contract: Contract
    breaking: tuple[BreakingChange, ...]
    notes: tuple[str, ...]


def _field(spec: tensor_pb2.TensorSpec, name: str = "") -> FieldSpec:
    shape = tuple(int(d) for d in spec.shape) or None
    return FieldSpec(name or spec.name, int(spec.dtype), shape)


def _contract(
    plan: plan_pb2.Plan, outputs: Iterable[tensor_pb2.TensorSpec], schema: int
) -> Contract:
    return build_contract(
        "plan",
        plan.name,
        [_field(s) for s in plan.inputs],
        [_field(s) for s in outputs],
        schema_version=schema,
    )


def plan_contract(plan: plan_pb2.Plan) -> Contract:
    """The typed contract of a stored plan version (``Plan.typed``; a version stored before
    typed contracts existed gets its inputs and declared ``output_specs`` at schema 1)."""
    if plan.HasField("typed"):
        return _contract(plan, plan.typed.outputs, plan.typed.schema_version or 1)
    return _contract(plan, plan.output_specs, 1)


def stamp_plan(
    plan: plan_pb2.Plan,
    output_specs: Mapping[str, tensor_pb2.TensorSpec | None],
    active: plan_pb2.Plan | None,
    *,
    breaking_change: bool,
) -> TypedPlan:
    """Set ``plan.typed`` for a new version (see the module docstring); `output_specs` maps each
    plan output to its spec (None: not known, left out with a note); `active` is the version it
    replaces. FailedPreconditionError for an unallowed breaking change."""
    outputs: list[tensor_pb2.TensorSpec] = []
    notes: list[str] = []
    for key in sorted(output_specs):
        spec = output_specs[key]
        if spec is None or spec.dtype not in DTYPE_NAMES:
            notes.append(
                f"output {quote(key)} is left out of the typed contract: its type is not known "
                "(declare it in output_specs)"
            )
            continue
        outputs.append(tensor_pb2.TensorSpec(name=key, dtype=spec.dtype, shape=spec.shape))
    old = plan_contract(active) if active is not None else None
    schema = old.schema_version if old is not None else 1
    contract = _contract(plan, outputs, schema)
    breaking = tuple(breaking_changes(old, contract)) if old is not None else ()
    if breaking:
        changes = "; ".join(str(b) for b in breaking)
        if not breaking_change:
            raise FailedPreconditionError(
                f"plan '{plan.name}': the new version breaks the typed contract "
                f"{old.package if old else ''} that clients use: {changes}. Apply it with "
                f"breaking_change (meshserve plan apply --breaking-change) to publish it as "
                f"schema v{schema + 1}"
            )
        contract = _contract(plan, outputs, schema + 1)
        notes.append(f"breaking change accepted: schema v{schema} -> v{schema + 1} ({changes})")
    plan.typed.CopyFrom(
        plan_pb2.TypedContract(
            schema_version=contract.schema_version,
            outputs=outputs,
            fingerprint=contract.fingerprint,
            service=contract.service,
        )
    )
    return TypedPlan(contract, breaking, tuple(notes))


def follow_plan_contracts(
    plans: Callable[[], Iterable[plan_pb2.Plan]],
    on_change: Callable[[Callable[[], None]], None],
    contracts: ContractSet,
) -> Callable[[], None]:
    """Keep `contracts` equal to the contracts of `plans()` (the active versions) now and on
    every `on_change` notification; returns the sync function (for tests)."""
    built: dict[str, tuple[int, int, Contract]] = {}

    def sync() -> None:
        seen: set[str] = set()
        for plan in plans():
            seen.add(plan.name)
            key = (plan.version, plan.created_unix_ms)
            cached = built.get(plan.name)
            if cached is not None and cached[:2] == key:
                continue
            try:
                contract = plan_contract(plan)
            except MeshError as exc:
                log.warning("plan %s v%d has no typed contract: %s", plan.name, plan.version, exc)
                contracts.remove(plan.name)
                built.pop(plan.name, None)
                continue
            built[plan.name] = (*key, contract)
            contracts.put(contract)
        for name in set(built) - seen:
            built.pop(name)
            contracts.remove(name)

    on_change(sync)
    sync()
    return sync
