"""Tensors in JSON bodies (KServe V2 REST ``data``): nested arrays of numbers -> numpy.

A value is accepted or refused by one rule set: numbers only (no strings, no ragged rows), no
fraction where integers are expected, no integer outside its dtype's range, shapes within
``meshserve.limits``. Failures are `FieldError`s naming the field and what was expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meshserve.http_errors import FieldError
from meshserve.limits import DEFAULT_LIMITS, Limits, check_shape

__all__ = ["array_from_json"]

_ACCEPTED_KINDS = {"f": "biuf", "i": "biu", "u": "biu", "b": "b"}
_KIND_WORDS = {"f": "numbers", "i": "integers", "u": "non-negative integers", "b": "booleans"}


def array_from_json(
    data: Any,
    dtype: np.dtype | None,
    field: str,
    limits: Limits = DEFAULT_LIMITS,
    max_elements: int | None = None,
) -> np.ndarray:
    """`data` (a number or nested arrays) as an array of `dtype`; None: float32 for numbers
    with a fraction, int64 for integers, bool for booleans."""
    try:
        values = np.asarray(data)
    except (ValueError, TypeError):
        raise FieldError(field, "ragged or mixed rows", "rows of equal length") from None
    kind = values.dtype.kind
    if dtype is None:
        dtype = {"f": np.dtype("float32"), "b": np.dtype("bool")}.get(kind, np.dtype("int64"))
    want = dtype.kind
    words = _KIND_WORDS.get(want, dtype.name)
    if values.size and kind not in _ACCEPTED_KINDS.get(want, want):
        found = "strings" if kind in "US" else "mixed or nested values" if kind == "O" else kind
        raise FieldError(field, f"got {found}", f"{words} ({dtype.name})")
    check_shape(field, values.shape, limits, max_elements or limits.max_elements)
    if want in "iu" and values.size:
        info = np.iinfo(dtype)
        low, high = values.min(), values.max()
        if low < info.min or high > info.max:
            raise FieldError(field, f"value {low if low < info.min else high} out of range",
                             f"{dtype.name} in [{info.min}, {info.max}]")  # fmt: skip
    return values.astype(dtype, copy=False)
