"""Rows: the batch dimension shared by both batchers (the replica's and the orchestrator's).

A request carries ``rows`` rows in dim 0 of every input. Batching stacks the inputs of several
requests along dim 0 into one model call and hands every request back its own rows of every
output. The rules, in one place:

- **Compatible inputs only.** Requests share a batch when their inputs have the same names,
  dtypes and trailing dims (`row_signature`); `stack` refuses anything else (InternalError naming
  the input) instead of letting numpy promote dtypes.
- **One result per input.** A model output whose dim 0 is not the batch's row count fails every
  request of the batch (`check_rows`, InternalError naming the output).
- **Zero copy back.** `split_rows` hands out views (slices) of the batch outputs.
- **A lone request is passed through**: `stack` and `split_rows` neither copy nor slice it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from meshserve.errors import InternalError

__all__ = ["Arrays", "Part", "check_rows", "row_signature", "split_rows", "stack"]

Arrays = dict[str, np.ndarray]

# (name, dtype, trailing dims) of every input, sorted by name.
RowSignature = tuple[tuple[str, str, tuple[int, ...]], ...]


class Part(Protocol):
    """A request in a batch: its inputs and how many rows they carry."""

    @property
    def inputs(self) -> Mapping[str, np.ndarray]: ...

    @property
    def rows(self) -> int: ...


def row_signature(inputs: Mapping[str, np.ndarray]) -> tuple[RowSignature | None, int]:
    """(signature, rows) of a request's inputs; the signature is None when they cannot share a
    batch (a scalar input, inputs disagreeing on dim 0, or no rows at all)."""
    rows = -1
    parts = []
    for name in sorted(inputs):
        arr = inputs[name]
        if arr.ndim == 0:
            return None, 0
        if rows == -1:
            rows = int(arr.shape[0])
        elif arr.shape[0] != rows:
            return None, 0
        parts.append((name, arr.dtype.str, arr.shape[1:]))
    if rows <= 0:
        return None, max(rows, 0)
    return tuple(parts), rows


def stack(parts: Sequence[Part]) -> Mapping[str, np.ndarray]:
    """Every input of `parts` stacked along dim 0, in order (input names of the first part).

    A single part's inputs are returned as they are (no copy). Raises InternalError when the
    parts' dtypes or trailing dims of an input disagree.
    """
    if len(parts) == 1:
        return parts[0].inputs
    merged: Arrays = {}
    for name, first in parts[0].inputs.items():
        try:
            merged[name] = np.concatenate(
                [p.inputs[name] for p in parts], axis=0, dtype=first.dtype, casting="no"
            )
        except (KeyError, TypeError, ValueError) as exc:
            seen = sorted(
                {
                    f"{a.dtype}{list(a.shape[1:])}"
                    for p in parts
                    if (a := p.inputs.get(name)) is not None
                }
            )
            raise InternalError(
                f"input '{name}' cannot be stacked across {len(parts)} requests: dtypes and "
                f"trailing dims must agree (got {', '.join(seen)}; {type(exc).__name__})"
            ) from exc
    return merged


def check_rows(
    outputs: Mapping[str, np.ndarray], rows: int, *, what: str = "", hint: str = ""
) -> None:
    """Raise InternalError unless every output has exactly `rows` rows in dim 0.

    `what` prefixes the message (e.g. the model), `hint` ends it (what the operator can do).
    """
    for name, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != rows:
            raise InternalError(
                f"{what}output '{name}' has shape {list(value.shape)}; a merged batch of "
                f"{rows} rows needs {rows} rows in dim 0 (one result per input row){hint}"
            )


def split_rows(outputs: Arrays, parts: Sequence[Part]) -> list[Arrays]:
    """Every part's own rows of every output (views), in part order; call `check_rows` first.

    A single part gets `outputs` itself.
    """
    if len(parts) == 1:
        return [outputs]
    results: list[Arrays] = []
    offset = 0
    for part in parts:
        end = offset + part.rows
        results.append({name: value[offset:end] for name, value in outputs.items()})
        offset = end
    return results
