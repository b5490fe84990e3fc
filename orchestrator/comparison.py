"""How a shadow step compares its candidate's output with the primary's, row by row.

``ShadowStep.comparison`` picks the rule that suits the output:

- LABEL (default): the same class per row - argmax of 2-D scores, the values of 1-D labels;
  distance 1 for a row that differs, 0 otherwise.
- PROBABILITY: rows are distributions; distance = total variation distance
  (0.5 * sum |p - q|); a row agrees when distance <= tolerance (default 0.1).
- REGRESSION: rows are numbers; distance = the row's largest absolute difference; a row agrees
  when distance <= tolerance (default 0.01).

Outputs of different shapes disagree on every row (distance inf).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meshserve.v1 import plan_pb2

__all__ = ["DEFAULT_TOLERANCE", "Comparison", "RowComparison", "comparison_of"]

DEFAULT_TOLERANCE = {
    plan_pb2.SHADOW_COMPARISON_PROBABILITY: 0.1,
    plan_pb2.SHADOW_COMPARISON_REGRESSION: 0.01,
}
_NAMES = {
    plan_pb2.SHADOW_COMPARISON_UNSPECIFIED: "label",
    plan_pb2.SHADOW_COMPARISON_LABEL: "label",
    plan_pb2.SHADOW_COMPARISON_PROBABILITY: "probability",
    plan_pb2.SHADOW_COMPARISON_REGRESSION: "regression",
}


@dataclass(frozen=True)
class RowComparison:
    """Per row of the compared output: whether it agreed and the distance."""

    agreed: np.ndarray  # bool, one per row
    distance: np.ndarray  # float, one per row

    @property
    def rows(self) -> int:
        return int(self.agreed.shape[0])


@dataclass(frozen=True)
class Comparison:
    """One shadow step's rule: `kind` (a ShadowComparison value) and its tolerance."""

    kind: plan_pb2.ShadowComparison = plan_pb2.SHADOW_COMPARISON_LABEL
    tolerance: float = 0.0

    @property
    def name(self) -> str:
        return _NAMES[self.kind]

    def compare(self, primary: np.ndarray, candidate: np.ndarray) -> RowComparison:
        a, b = np.asarray(primary), np.asarray(candidate)
        rows = int(a.shape[0]) if a.ndim else 1
        if a.shape != b.shape:
            return RowComparison(np.zeros(rows, bool), np.full(rows, np.inf))
        if a.ndim == 0:
            a, b = a.reshape(1), b.reshape(1)
        if self.kind == plan_pb2.SHADOW_COMPARISON_PROBABILITY:
            flat_a, flat_b = _rows(a, np.float64), _rows(b, np.float64)
            distance = 0.5 * np.abs(flat_a - flat_b).sum(axis=1)
            return RowComparison(distance <= self.tolerance, distance)
        if self.kind == plan_pb2.SHADOW_COMPARISON_REGRESSION:
            flat_a, flat_b = _rows(a, np.float64), _rows(b, np.float64)
            distance = np.abs(flat_a - flat_b).max(axis=1, initial=0.0)
            return RowComparison(distance <= self.tolerance, distance)
        if a.ndim >= 2:
            a, b = a.argmax(axis=-1), b.argmax(axis=-1)
        same = (_rows(a, None) == _rows(b, None)).all(axis=1)
        return RowComparison(same, (~same).astype(np.float64))


def _rows(values: np.ndarray, dtype: type | None) -> np.ndarray:
    flat = values.reshape(values.shape[0], -1)
    return flat if dtype is None else flat.astype(dtype)


def comparison_of(step: plan_pb2.ShadowStep) -> Comparison:
    """The step's rule with its tolerance defaulted."""
    kind = step.comparison or plan_pb2.SHADOW_COMPARISON_LABEL
    tolerance = step.tolerance or DEFAULT_TOLERANCE.get(kind, 0.0)
    return Comparison(kind, tolerance)
