"""Schema checks and encodings around inference, with precise InvalidInputError messages.

A `FieldSpec` describes one named input: dtype kind, shape (-1 = any size), value bounds and
allowed values. `validate_inputs` checks a whole request and names the first field that is wrong
and what was expected. The registered logic ``validate`` does the same from step params, so a plan
can reject bad requests before any lookup or model call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.logic import LogicContext, logic

__all__ = ["FieldSpec", "one_hot", "spec_from_params", "validate_inputs"]

_KINDS = {
    "float": "f",
    "int": "iu",
    "bool": "b",
    "string": "OUS",
    "any": "",
}


@dataclass(frozen=True)
class FieldSpec:
    """Expected dtype kind ("float", "int", "bool", "string", "any"), shape and values of an input.

    `shape` uses -1 for "any size" (the batch dimension usually); an empty tuple means a scalar
    per request is not enforced on rank (any shape). `min_value`/`max_value` bound numbers,
    `allowed` lists accepted values (strings or numbers), `finite` rejects NaN and inf.
    """

    name: str
    kind: str = "any"
    shape: tuple[int, ...] = ()
    min_value: float | None = None
    max_value: float | None = None
    allowed: tuple[Any, ...] = ()
    finite: bool = True
    required: bool = True

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InvalidInputError(
                f"field {self.name!r}: unknown kind {self.kind!r}; expected one of {sorted(_KINDS)}"
            )


def spec_from_params(fields: Mapping[str, Any]) -> list[FieldSpec]:
    """FieldSpecs from a plan's params: ``{name: {kind, shape, min, max, allowed, required}}``."""
    specs = []
    for name, raw in fields.items():
        if not isinstance(raw, Mapping):
            raise InvalidInputError(f"validate: spec of {name!r} must be a mapping, got {raw!r}")
        unknown = set(raw) - {"kind", "shape", "min", "max", "allowed", "required", "finite"}
        if unknown:
            raise InvalidInputError(
                f"validate: spec of {name!r} has unknown keys {sorted(unknown)}"
            )
        specs.append(
            FieldSpec(
                name=name,
                kind=str(raw.get("kind", "any")),
                shape=tuple(int(d) for d in raw.get("shape", ())),
                min_value=None if raw.get("min") is None else float(raw["min"]),
                max_value=None if raw.get("max") is None else float(raw["max"]),
                allowed=tuple(raw.get("allowed", ())),
                required=bool(raw.get("required", True)),
                finite=bool(raw.get("finite", True)),
            )
        )
    return specs


def validate_inputs(inputs: Mapping[str, Any], specs: Sequence[FieldSpec], where: str = "") -> None:
    """Raise InvalidInputError naming the first field that does not match its spec."""
    prefix = f"{where}: " if where else ""
    for spec in specs:
        if spec.name not in inputs:
            if spec.required:
                raise InvalidInputError(
                    f"{prefix}missing input {spec.name!r}; inputs given: {sorted(inputs)}"
                )
            continue
        _check_one(np.asarray(inputs[spec.name]), spec, prefix)


def _check_one(value: np.ndarray, spec: FieldSpec, prefix: str) -> None:
    name = spec.name
    kinds = _KINDS[spec.kind]
    if kinds and value.dtype.kind not in kinds:
        raise InvalidInputError(
            f"{prefix}input {name!r} has dtype {value.dtype}; expected {spec.kind}"
        )
    if spec.shape and not _shape_matches(value.shape, spec.shape):
        raise InvalidInputError(
            f"{prefix}input {name!r} has shape {list(value.shape)}; expected "
            f"{[d if d >= 0 else '*' for d in spec.shape]}"
        )
    if value.dtype.kind in "fiu" and value.size:
        if spec.finite and value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            bad = int(np.flatnonzero(~np.isfinite(value.ravel()))[0])
            raise InvalidInputError(
                f"{prefix}input {name!r} has a non-finite value at flat index {bad}; "
                "expected finite numbers"
            )
        if spec.min_value is not None and value.min() < spec.min_value:
            raise InvalidInputError(
                f"{prefix}input {name!r} has value {value.min().item()!r} below the minimum "
                f"{spec.min_value}"
            )
        if spec.max_value is not None and value.max() > spec.max_value:
            raise InvalidInputError(
                f"{prefix}input {name!r} has value {value.max().item()!r} above the maximum "
                f"{spec.max_value}"
            )
    if spec.allowed:
        allowed = {_plain(a) for a in spec.allowed}
        for item in value.ravel():
            if _plain(item) not in allowed:
                raise InvalidInputError(
                    f"{prefix}input {name!r} has value {_plain(item)!r}; expected one of "
                    f"{sorted(map(str, allowed))}"
                )


def _shape_matches(got: tuple[int, ...], want: tuple[int, ...]) -> bool:
    if len(got) != len(want):
        return False
    return all(w in (-1, g) for w, g in zip(want, got, strict=True))


def _plain(item: Any) -> Any:
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    if isinstance(item, np.generic):
        return item.item()
    return item


def one_hot(values: np.ndarray, categories: Sequence[Any], name: str = "value") -> np.ndarray:
    """float32 one-hot rows of `values` over `categories`; unknown values are InvalidInputError."""
    index = {_plain(c): i for i, c in enumerate(categories)}
    flat = [_plain(v) for v in np.asarray(values).ravel()]
    out = np.zeros((len(flat), len(categories)), dtype=np.float32)
    for row, item in enumerate(flat):
        if item not in index:
            raise InvalidInputError(
                f"{name!r} has value {item!r}; expected one of {[str(c) for c in categories]}"
            )
        out[row, index[item]] = 1.0
    return out


@logic("validate")
async def validate_logic(inputs: dict[str, Any], ctx: LogicContext) -> dict[str, Any]:
    """Check inputs against ``params.fields`` and pass them through unchanged."""
    specs = spec_from_params(ctx.param("fields"))
    validate_inputs(inputs, specs, where=f"plan {ctx.plan!r} step {ctx.step!r}")
    return dict(inputs)
