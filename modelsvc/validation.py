"""Checks a request against the model signature before it is queued.

Every failure is an InvalidInputError whose message names the input, what was expected and what
was received, so a person can fix the call without reading server logs. `RequestValidator` is
the per-replica form: the signature is compiled once and a valid request costs a few attribute
checks; anything unusual goes through `validate_request` for the precise message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from meshserve.errors import InvalidInputError
from meshserve.modelsvc.backend import Signature
from meshserve.names import quote

__all__ = ["RequestValidator", "validate_request"]


def _names(specs: Sequence[object]) -> list[str]:
    return [str(getattr(s, "name", "")) for s in specs]


def validate_request(
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    output_names: Sequence[str],
    *,
    allow_non_finite: bool = True,
) -> int:
    """Validate names, dtypes, shapes, batch dims and values; return the request's row count.

    For models without a dynamic batch dimension the row count is 1.
    """
    expected_names = _names(signature.inputs)
    for name in inputs:
        if name not in expected_names:
            raise InvalidInputError(f"unknown input {quote(name)} (model inputs: {expected_names})")
    rows_by_input: dict[str, int] = {}
    for spec in signature.inputs:
        array = inputs.get(spec.name)
        if array is None:
            raise InvalidInputError(
                f"missing input '{spec.name}' (expected {spec.describe()}); "
                f"received {[quote(n) for n in sorted(inputs)[:8]]}"
            )
        if array.dtype != spec.dtype:
            raise InvalidInputError(
                f"input '{spec.name}': dtype {array.dtype.name} received, "
                f"expected {spec.dtype.name} (shape {list(spec.shape)})"
            )
        if array.ndim != len(spec.shape):
            raise InvalidInputError(
                f"input '{spec.name}': shape {list(array.shape)} has rank {array.ndim}, "
                f"expected rank {len(spec.shape)} ({spec.describe()})"
            )
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
            if want >= 0 and got != want:
                raise InvalidInputError(
                    f"input '{spec.name}': dimension {axis} is {got}, expected {want} "
                    f"(received shape {list(array.shape)}, expected {spec.describe()})"
                )
        if spec.shape and spec.shape[0] == -1:
            if array.shape[0] == 0:
                raise InvalidInputError(
                    f"input '{spec.name}': batch dimension is 0; send at least one row"
                )
            rows_by_input[spec.name] = int(array.shape[0])
        if not allow_non_finite and array.dtype.kind == "f":
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise InvalidInputError(
                    f"input '{spec.name}': {bad} non-finite values (NaN/inf) received; "
                    "this model expects finite numbers only"
                )
    if len(set(rows_by_input.values())) > 1:
        detail = ", ".join(f"'{n}' has {r}" for n, r in rows_by_input.items())
        raise InvalidInputError(
            f"inputs disagree on the batch dimension (dim 0): {detail} rows; "
            "every input must carry the same number of rows"
        )
    known_outputs = _names(signature.outputs)
    for name in output_names:
        if name not in known_outputs:
            raise InvalidInputError(
                f"unknown output {quote(name)} requested (model outputs: {known_outputs})"
            )
    return next(iter(rows_by_input.values()), 1) if signature.batched else 1


class RequestValidator:
    """`validate_request` for one signature, compiled once (the per-request hot path)."""

    def __init__(self, signature: Signature, *, allow_non_finite: bool = True) -> None:
        self._signature = signature
        self._allow_non_finite = allow_non_finite
        self._input_names = frozenset(s.name for s in signature.inputs)
        self._output_names = frozenset(s.name for s in signature.outputs)
        self._batched = signature.batched
        # (name, dtype, rank, fixed dims as (axis, size), has a dynamic batch dim, check finite)
        self._specs = tuple(
            (
                spec.name,
                spec.dtype,
                len(spec.shape),
                tuple((axis, want) for axis, want in enumerate(spec.shape) if want >= 0),
                bool(spec.shape) and spec.shape[0] == -1,
                not allow_non_finite and spec.dtype.kind == "f",
            )
            for spec in signature.inputs
        )

    def __call__(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str] = ()) -> int:
        """The request's row count; InvalidInputError exactly as `validate_request` raises it."""
        rows = 0
        if len(inputs) != len(self._specs):
            return self._precise(inputs, output_names)
        for name, dtype, rank, fixed, batch_dim, check_finite in self._specs:
            array = inputs.get(name)
            if array is None or array.dtype != dtype or array.ndim != rank:
                return self._precise(inputs, output_names)
            shape = array.shape
            for axis, want in fixed:
                if shape[axis] != want:
                    return self._precise(inputs, output_names)
            if batch_dim:
                if shape[0] == 0 or (rows and shape[0] != rows):
                    return self._precise(inputs, output_names)
                rows = shape[0]
            if check_finite and not np.isfinite(array).all():
                return self._precise(inputs, output_names)
        for name in output_names:
            if name not in self._output_names:
                return self._precise(inputs, output_names)
        return int(rows) if self._batched and rows else 1

    def _precise(self, inputs: Mapping[str, np.ndarray], output_names: Sequence[str]) -> int:
        return validate_request(
            self._signature, inputs, output_names, allow_non_finite=self._allow_non_finite
        )
