"""The aggregation table: how an ``ensemble`` step combines its members' outputs.

``AGGREGATIONS`` maps a name to an ``Aggregation`` (see its docstring for the contract). The
built-in names are the proto ``Aggregation`` enum's members:

- ``mean`` / ``weighted_mean``: element-wise (weights normalised; float64 unless the members
  are float); weighted_mean's weights must be finite, non-negative and sum to more than 0;
- ``majority_vote``: per row the label with the most (weighted, unset weight = 1) votes; ties
  go to the smallest label; the members' output must hold integer (or bool) labels;
- ``max_probability``: per row, the row of the member whose row has the highest maximum (ties:
  the earlier member); the members' output must be [rows, classes];
- ``custom``: a registered logic function named by ``aggregator``, called with
  {member name: member output} and params {"weights": {...}, "output": name}; it returns
  {output: array}. Its members' outputs may differ in shape.

An EnsembleStep names its aggregation by the enum; with ``AGGREGATION_CUSTOM`` the name is
``aggregator``: an aggregation added with ``register_aggregation`` when one has that name, else
the ``custom`` entry (the logic function of that name). In YAML ``aggregation: <registered
name>`` is short for ``aggregation: custom`` with ``aggregator: <registered name>``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.plans.validate import ValidationContext, format_spec
from meshserve.orchestrator.steps.base import StepContext, call_logic
from meshserve.orchestrator.tables import Table
from meshserve.tensors import DTYPE_TO_NUMPY
from meshserve.v1 import plan_pb2, tensor_pb2

__all__ = [
    "AGGREGATIONS",
    "Aggregate",
    "Aggregation",
    "AggregationCheck",
    "aggregation_name",
    "aggregation_of",
    "majority_vote",
    "max_probability",
    "parse_aggregation",
    "register_aggregation",
    "unregister_aggregation",
    "weighted_mean",
]

Spec = tensor_pb2.TensorSpec | None
Aggregate = Callable[
    [StepContext, Sequence[plan_pb2.Branch], list[np.ndarray]], np.ndarray | Awaitable[np.ndarray]
]
AggregationCheck = Callable[[plan_pb2.EnsembleStep, Spec, str, ValidationContext], Spec]


def _keep_spec(ens: plan_pb2.EnsembleStep, spec: Spec, where: str, ctx: ValidationContext) -> Spec:
    return spec


@dataclass(frozen=True)
class Aggregation:
    """One way to combine an ensemble's member outputs.

    - `aggregate(ctx, members, arrays)`: per request, once every member answered. `arrays` are
      the members' `output` arrays in member order, `members` their Branch protos (names,
      weights), `ctx` the StepContext (``ctx.step.ensemble`` is the EnsembleStep). Returns the
      step's output array, or an awaitable of it. Raise InvalidInputError for arrays it cannot
      combine.
    - `check(ensemble, spec, where, context)`: at plan validation (ApplyPlan), after the members
      passed. `spec` is the TensorSpec of the members' common output when every member is a
      model (None: unknown until run time), `context` the ValidationContext (registered logic,
      ...). Raise InvalidInputError starting with `where` for a plan this aggregation cannot
      serve (weights, dtypes, shapes); return the step output's spec (None: unknown).
    - `same_shape`: the members' outputs must share one shape (checked per request first).
    """

    name: str
    aggregate: Aggregate
    check: AggregationCheck = _keep_spec
    same_shape: bool = True


# The enum members and their table names; AGGREGATION_CUSTOM defers to `aggregator`.
_ENUM_NAMES = {
    value.number: value.name.removeprefix("AGGREGATION_").lower()
    for value in plan_pb2.Aggregation.DESCRIPTOR.values
    if value.number != plan_pb2.AGGREGATION_UNSPECIFIED
}
_BUILT_IN = frozenset(_ENUM_NAMES.values())
_CUSTOM = _ENUM_NAMES[plan_pb2.AGGREGATION_CUSTOM]


def register_aggregation(aggregation: Aggregation, *, replace: bool = False) -> Aggregation:
    """Add `aggregation` to the table (at import time, before plans using it are compiled).

    The built-in names are reserved; a name already registered is refused unless `replace`.
    Plans reach it with ``aggregation: custom, aggregator: <name>`` (YAML: ``aggregation:
    <name>``). Returns `aggregation`.
    """
    if aggregation.name.upper().startswith("AGGREGATION_"):
        raise InvalidInputError(
            f"aggregation name '{aggregation.name}' must not look like an enum value"
        )
    return AGGREGATIONS.register(aggregation.name, aggregation, replace=replace)


def unregister_aggregation(name: str) -> None:
    """Remove a registered aggregation (the built-in ones stay)."""
    AGGREGATIONS.unregister(name)


def _known() -> str:
    return AGGREGATIONS.expected()


def parse_aggregation(text: str, where: str) -> dict[str, str]:
    """The EnsembleStep fields for an aggregation written by name in the text form: an enum
    member in any case (``majority_vote``, ``AGGREGATION_MEAN``) or a registered name."""
    name = text.lower().removeprefix("aggregation_")
    if name in _BUILT_IN:
        return {"aggregation": f"AGGREGATION_{name.upper()}"}
    if text in AGGREGATIONS:
        return {"aggregation": "AGGREGATION_CUSTOM", "aggregator": text}
    raise InvalidInputError(
        f"{where} aggregation: unknown aggregation '{text}' (known: {_known()})"
    )


def aggregation_name(ens: plan_pb2.EnsembleStep) -> str:
    """The table name `ens` asks for ("" when its aggregation is unset or not an enum value)."""
    name = _ENUM_NAMES.get(ens.aggregation, "")
    if name == _CUSTOM and ens.aggregator in AGGREGATIONS and ens.aggregator not in _BUILT_IN:
        return ens.aggregator
    return name


def aggregation_of(ens: plan_pb2.EnsembleStep, where: str) -> Aggregation:
    """The Aggregation `ens` uses; InvalidInputError naming `where` and the known ones."""
    if ens.aggregation == plan_pb2.AGGREGATION_UNSPECIFIED:
        raise InvalidInputError(f"{where} aggregation: required ({_known()})")
    if ens.aggregation == plan_pb2.AGGREGATION_CUSTOM and not ens.aggregator:
        raise InvalidInputError(f"{where} aggregator: required with aggregation custom")
    found = AGGREGATIONS.find(aggregation_name(ens))
    if found is None:
        raise InvalidInputError(
            f"{where} aggregation: unknown aggregation {ens.aggregation} (known: {_known()})"
        )
    return found


# ---- the functions ---------------------------------------------------------------------------
def weighted_mean(arrays: list[np.ndarray], weights: list[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise InvalidInputError(f"ensemble weights {weights} must be >= 0 and sum to more than 0")
    stacked = np.stack([np.asarray(a, dtype=np.float64) for a in arrays])
    mean = np.tensordot(w / w.sum(), stacked, axes=1)
    dtype = arrays[0].dtype if np.issubdtype(arrays[0].dtype, np.floating) else np.float64
    return mean.astype(dtype)


# Label range x positions up to which majority_vote counts in a dense table.
_DENSE_VOTE_CELLS = 1 << 16


def majority_vote(arrays: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Per position, the label with the largest total weight; ties go to the smallest label."""
    stacked = np.stack([np.asarray(a) for a in arrays])  # members x rows...
    if not np.issubdtype(stacked.dtype, np.integer) and stacked.dtype != np.bool_:
        raise InvalidInputError(
            f"majority_vote needs integer labels, members returned {stacked.dtype}"
        )
    flat = stacked.reshape(len(arrays), -1).astype(np.int64, copy=False)
    positions = flat.shape[1]
    if flat.size == 0:
        no_rows: np.ndarray = stacked[0].copy()
        return no_rows
    w = np.asarray(weights, dtype=np.float64)
    lo = int(flat.min())
    span = int(flat.max()) - lo + 1
    if span * positions <= _DENSE_VOTE_CELLS:
        # One weighted bincount over (label, position) cells: no per-label pass.
        cells = (flat - lo) * positions + np.arange(positions)
        scores = np.bincount(
            cells.ravel(), weights=np.repeat(w, positions), minlength=span * positions
        ).reshape(span, positions)
        winners = scores.argmax(axis=0) + lo  # argmax takes the smallest label on ties
    else:  # sparse labels: score only the labels present
        labels = np.unique(flat)
        scores = ((flat[None, :, :] == labels[:, None, None]) * w[None, :, None]).sum(axis=1)
        winners = labels[np.argmax(scores, axis=0)]
    voted: np.ndarray = winners.reshape(stacked.shape[1:]).astype(stacked.dtype)
    return voted


def max_probability(arrays: list[np.ndarray]) -> np.ndarray:
    """Per row, that row from the member whose row maximum is highest (first member on ties)."""
    stacked = np.stack([np.asarray(a) for a in arrays])  # members x rows x classes
    if stacked.ndim < 3:
        raise InvalidInputError(
            f"max_probability needs [rows, classes] outputs, got {list(stacked.shape[1:])}"
        )
    best = stacked.reshape(stacked.shape[0], stacked.shape[1], -1).max(axis=2).argmax(axis=0)
    rows: np.ndarray = stacked[best, np.arange(stacked.shape[1])]
    return rows


async def _logic_aggregate(
    ctx: StepContext, members: Sequence[plan_pb2.Branch], arrays: list[np.ndarray]
) -> np.ndarray:
    ens = ctx.step.ensemble
    custom = plan_pb2.LogicStep(function=ens.aggregator)
    custom.params.update({"weights": {m.name: m.weight for m in members}, "output": ens.output})
    out = await call_logic(ctx, custom, {m.name: a for m, a in zip(members, arrays, strict=True)})
    if ens.output not in out:
        raise InvalidInputError(
            f"aggregator '{ens.aggregator}' returned no output '{ens.output}' "
            f"(outputs: {sorted(out)})"
        )
    return out[ens.output]


# ---- the validation rules --------------------------------------------------------------------
def _check_weights(ens: plan_pb2.EnsembleStep, where: str, *, positive_sum: bool) -> None:
    for member in ens.members:
        if not math.isfinite(member.weight) or member.weight < 0:
            raise InvalidInputError(
                f"{where}: member weights must be finite and not negative "
                f"(member '{member.name}' has {member.weight})"
            )
    if positive_sum and sum(m.weight for m in ens.members) <= 0:
        raise InvalidInputError(f"{where}: member weights must sum to more than 0")


def _mean_spec(spec: Spec) -> Spec:
    if spec is None:
        return None
    floats = (tensor_pb2.DATA_TYPE_FLOAT32, tensor_pb2.DATA_TYPE_FLOAT64)
    dtype = spec.dtype if spec.dtype in floats else tensor_pb2.DATA_TYPE_FLOAT64
    return tensor_pb2.TensorSpec(name=spec.name, dtype=dtype, shape=spec.shape)


def _check_mean(ens: plan_pb2.EnsembleStep, spec: Spec, where: str, ctx: ValidationContext) -> Spec:
    return _mean_spec(spec)


def _check_weighted_mean(
    ens: plan_pb2.EnsembleStep, spec: Spec, where: str, ctx: ValidationContext
) -> Spec:
    _check_weights(ens, where, positive_sum=True)
    return _mean_spec(spec)


def _check_majority_vote(
    ens: plan_pb2.EnsembleStep, spec: Spec, where: str, ctx: ValidationContext
) -> Spec:
    _check_weights(ens, where, positive_sum=False)
    dtype = DTYPE_TO_NUMPY.get(spec.dtype) if spec is not None else None
    if spec is not None and (
        dtype is None or not (np.issubdtype(dtype, np.integer) or dtype == np.bool_)
    ):
        raise InvalidInputError(
            f"{where} output '{ens.output}': majority_vote needs integer labels, "
            f"members return {format_spec(spec)}"
        )
    return spec


def _check_max_probability(
    ens: plan_pb2.EnsembleStep, spec: Spec, where: str, ctx: ValidationContext
) -> Spec:
    if spec is not None and 0 < len(spec.shape) < 2:
        raise InvalidInputError(
            f"{where} output '{ens.output}': max_probability needs [rows, classes] outputs, "
            f"members return shape {list(spec.shape)}"
        )
    return spec


def _check_logic(
    ens: plan_pb2.EnsembleStep, spec: Spec, where: str, ctx: ValidationContext
) -> Spec:
    if not ctx.logic_exists(ens.aggregator):
        raise InvalidInputError(
            f"{where} aggregator: no registered aggregation or logic function '{ens.aggregator}'"
        )
    return spec


def _mean(
    ctx: StepContext, members: Sequence[plan_pb2.Branch], arrays: list[np.ndarray]
) -> np.ndarray:
    return weighted_mean(arrays, [1.0] * len(arrays))


def _weighted_mean(
    ctx: StepContext, members: Sequence[plan_pb2.Branch], arrays: list[np.ndarray]
) -> np.ndarray:
    return weighted_mean(arrays, [m.weight for m in members])


def _majority_vote(
    ctx: StepContext, members: Sequence[plan_pb2.Branch], arrays: list[np.ndarray]
) -> np.ndarray:
    return majority_vote(arrays, [m.weight if m.weight > 0 else 1.0 for m in members])


def _max_probability(
    ctx: StepContext, members: Sequence[plan_pb2.Branch], arrays: list[np.ndarray]
) -> np.ndarray:
    return max_probability(arrays)


AGGREGATIONS: Table[Aggregation] = Table("aggregation")
"""Aggregation name -> Aggregation (the enum members are built in; see orchestrator/tables.py)."""
for _builtin in (
    Aggregation("mean", _mean, _check_mean),
    Aggregation("weighted_mean", _weighted_mean, _check_weighted_mean),
    Aggregation("majority_vote", _majority_vote, _check_majority_vote),
    Aggregation("max_probability", _max_probability, _check_max_probability),
    Aggregation(_CUSTOM, _logic_aggregate, _check_logic, same_shape=False),
):
    AGGREGATIONS.register(_builtin.name, _builtin, builtin=True)
