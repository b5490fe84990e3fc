"""Is a new contract a compatible evolution of the old one? (buf's wire + JSON categories.)

Breaking (a client built against `old` can fail against `new`):
- a tensor field removed (input or output), or renamed (its proto field name changed);
- a tensor retyped: dtype, shape (rank or any dimension), or flat <-> nested form changed;
- a field renumbered;
- a required input added, or an optional input made required;
- another kind or name of contract.

Compatible: an optional input or any output added, a required input made optional.
The schema version and the fingerprint are not compared: they are what a breaking change moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshserve.names import quote

if TYPE_CHECKING:
    from meshserve.contracts.contract import Contract, TensorField

__all__ = ["BreakingChange", "breaking_changes"]


@dataclass(frozen=True)
class BreakingChange:
    """One incompatibility: the tensor (`role` "input"/"output", `tensor` its name; both empty
    for a contract-wide change) and what changed."""

    role: str
    tensor: str
    change: str

    def __str__(self) -> str:
        if not self.tensor:
            return self.change
        return f"{self.role} {quote(self.tensor)}: {self.change}"


def _compare_field(role: str, old: TensorField, new: TensorField) -> list[BreakingChange]:
    out: list[BreakingChange] = []
    name = old.name
    if old.spec.dtype != new.spec.dtype or old.spec.shape != new.spec.shape:
        out.append(
            BreakingChange(
                role, name, f"retyped from {old.spec.describe()} to {new.spec.describe()}"
            )
        )
    elif old.nested != new.nested:
        out.append(BreakingChange(role, name, "changed between flat and nested form"))
    if old.field != new.field:
        out.append(BreakingChange(role, name, f"field renamed {old.field!r} -> {new.field!r}"))
    if old.number != new.number:
        out.append(BreakingChange(role, name, f"field renumbered {old.number} -> {new.number}"))
    if role == "input" and old.spec.optional and not new.spec.optional:
        out.append(
            BreakingChange(
                role, name, "made required (clients of the old contract may leave it out)"
            )
        )
    return out


def _compare(
    role: str, old: tuple[TensorField, ...], new: tuple[TensorField, ...]
) -> list[BreakingChange]:
    old_by = {f.name: f for f in old}
    new_by = {f.name: f for f in new}
    out: list[BreakingChange] = []
    for name, was in old_by.items():
        now = new_by.get(name)
        if now is None:
            out.append(BreakingChange(role, name, f"removed (was {was.spec.describe()})"))
        else:
            out.extend(_compare_field(role, was, now))
    if role == "input":
        for name, now in new_by.items():
            if name not in old_by and not now.spec.optional:
                out.append(
                    BreakingChange(
                        role,
                        name,
                        f"added as a required input ({now.spec.describe()}); clients of the old "
                        "contract do not send it",
                    )
                )
    return out


def breaking_changes(old: Contract, new: Contract) -> list[BreakingChange]:
    """Every change from `old` to `new` that breaks a client of `old` (empty: compatible)."""
    if (old.kind, old.name) != (new.kind, new.name):
        return [
            BreakingChange("", "", f"{old.kind} {old.name!r} replaced by {new.kind} {new.name!r}")
        ]
    return [
        *_compare("input", old.inputs, new.inputs),
        *_compare("output", old.outputs, new.outputs),
    ]
