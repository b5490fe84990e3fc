"""The rows rules both batchers share: stack, one result per input, zero-copy split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from meshserve.errors import InternalError
from meshserve.rows import check_rows, row_signature, split_rows, stack


@dataclass
class Part:
    inputs: dict[str, np.ndarray]
    rows: int


def parts(rng: np.random.Generator, sizes: list[int]) -> list[Part]:
    return [
        Part({"a": rng.random((n, 3), dtype=np.float32), "b": rng.integers(0, 9, (n,))}, n)
        for n in sizes
    ]


def test_stack_then_split_gives_every_part_its_own_rows_as_views() -> None:
    rng = np.random.default_rng(1)
    sizes = [int(n) for n in rng.integers(1, 6, size=7)]
    batch = parts(rng, sizes)
    merged = stack(batch)
    assert merged["a"].shape == (sum(sizes), 3)
    outputs = {"y": merged["a"] * 2, "z": merged["b"] + 1}
    check_rows(outputs, sum(sizes))
    for part, own in zip(batch, split_rows(outputs, batch), strict=True):
        np.testing.assert_array_equal(own["y"], part.inputs["a"] * 2)
        np.testing.assert_array_equal(own["z"], part.inputs["b"] + 1)
        assert own["y"].base is outputs["y"]  # a view, not a copy


def test_a_lone_part_passes_through_uncopied() -> None:
    (part,) = parts(np.random.default_rng(2), [4])
    assert stack([part]) is part.inputs
    outputs = {"y": np.zeros(1)}  # a lone part is not checked for row alignment
    assert split_rows(outputs, [part])[0] is outputs


@pytest.mark.parametrize(
    "other",
    [np.ones((2, 3), np.float64), np.ones((2, 4), np.float32)],
    ids=["dtype", "trailing-dims"],
)
def test_stack_refuses_disagreeing_inputs_naming_them(other: np.ndarray) -> None:
    a = Part({"x": np.ones((1, 3), np.float32)}, 1)
    b = Part({"x": other}, 2)
    with pytest.raises(InternalError, match="input 'x' cannot be stacked"):
        stack([a, b])


def test_one_result_per_input_row_is_enforced() -> None:
    with pytest.raises(InternalError, match=r"model 'm': output 'total' has shape \[1\].*3 rows"):
        check_rows({"total": np.ones((1,))}, 3, what="model 'm': ")
    with pytest.raises(InternalError, match="output 's' has shape \\[\\]"):
        check_rows({"s": np.float32(1.0)}, 3)  # type: ignore[dict-item]


def test_row_signature_names_dtypes_and_trailing_dims() -> None:
    sig, rows = row_signature({"b": np.ones((2,), np.int64), "a": np.ones((2, 3), np.float32)})
    assert rows == 2
    assert sig == (("a", "<f4", (3,)), ("b", "<i8", ()))
    assert row_signature({"a": np.ones((2, 3)), "b": np.ones((3,))}) == (None, 0)
