"""``ensemble`` step: run every member concurrently on the step's inputs and aggregate one output.

Aggregations (over the members' `output`, rows on the first axis):
- mean / weighted_mean: element-wise (weights normalised; float64 unless the members are float);
- majority_vote: per row the label with the most (weighted) votes; ties go to the smallest label;
- max_probability: per row, the row of the member whose row has the highest maximum (ties: the
  earlier member);
- custom: a registered logic function called with {member name: member output} and
  params {"weights": {...}, "output": name}; it returns {output: array}.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.steps.base import Outputs, StepContext, call_logic, run_target
from meshserve.v1 import plan_pb2

__all__ = ["execute", "majority_vote", "max_probability", "weighted_mean"]


async def execute(ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
    ens = ctx.step.ensemble
    members = list(ens.members)
    results = await asyncio.gather(*(run_target(ctx, m, inputs) for m in members))
    arrays: list[np.ndarray] = []
    for member, out in zip(members, results, strict=True):
        if ens.output not in out:
            raise InvalidInputError(
                f"member '{member.name}' returned no output '{ens.output}' (outputs: {sorted(out)})"
            )
        arrays.append(np.asarray(out[ens.output]))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 and ens.aggregation != plan_pb2.AGGREGATION_CUSTOM:
        raise InvalidInputError(
            f"members' output '{ens.output}' shapes differ: "
            + ", ".join(f"{m.name} {list(a.shape)}" for m, a in zip(members, arrays, strict=True))
        )
    weights = [m.weight if m.weight > 0 else 1.0 for m in members]
    agg = ens.aggregation
    if agg == plan_pb2.AGGREGATION_MEAN:
        value = weighted_mean(arrays, [1.0] * len(arrays))
    elif agg == plan_pb2.AGGREGATION_WEIGHTED_MEAN:
        value = weighted_mean(arrays, [m.weight for m in members])
    elif agg == plan_pb2.AGGREGATION_MAJORITY_VOTE:
        value = majority_vote(arrays, weights)
    elif agg == plan_pb2.AGGREGATION_MAX_PROBABILITY:
        value = max_probability(arrays)
    elif agg == plan_pb2.AGGREGATION_CUSTOM:
        custom = plan_pb2.LogicStep(function=ens.aggregator)
        custom.params.update({"weights": {m.name: m.weight for m in members}, "output": ens.output})
        out = await call_logic(
            ctx, custom, {m.name: a for m, a in zip(members, arrays, strict=True)}
        )
        if ens.output not in out:
            raise InvalidInputError(
                f"aggregator '{ens.aggregator}' returned no output '{ens.output}' "
                f"(outputs: {sorted(out)})"
            )
        value = out[ens.output]
    else:
        raise InvalidInputError(f"aggregation {agg} is not supported")
    return {ens.output: value}


def weighted_mean(arrays: list[np.ndarray], weights: list[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise InvalidInputError(f"ensemble weights {weights} must be >= 0 and sum to more than 0")
    stacked = np.stack([np.asarray(a, dtype=np.float64) for a in arrays])
    mean = np.tensordot(w / w.sum(), stacked, axes=1)
    dtype = arrays[0].dtype if np.issubdtype(arrays[0].dtype, np.floating) else np.float64
    return mean.astype(dtype)


def majority_vote(arrays: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Per position, the label with the largest total weight; ties go to the smallest label."""
    stacked = np.stack([np.asarray(a) for a in arrays])  # members x rows...
    if not np.issubdtype(stacked.dtype, np.integer) and stacked.dtype != np.bool_:
        raise InvalidInputError(
            f"majority_vote needs integer labels, members returned {stacked.dtype}"
        )
    flat = stacked.reshape(len(arrays), -1)
    labels = np.unique(flat)  # sorted ascending: argmax picks the smallest label on ties
    w = np.asarray(weights, dtype=np.float64)[:, None]
    scores = np.stack([((flat == label) * w).sum(axis=0) for label in labels])  # labels x pos
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
