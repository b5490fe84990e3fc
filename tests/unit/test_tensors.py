import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from meshserve import tensors
from meshserve.errors import InvalidInputError
from meshserve.limits import LimitExceededError
from meshserve.v1 import tensor_pb2

DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8,
          np.uint16, np.uint32, np.uint64, np.bool_]  # fmt: skip


@given(
    hnp.arrays(
        dtype=st.sampled_from(DTYPES),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_round_trip_preserves_dtype_shape_and_values(arr: np.ndarray) -> None:
    back = tensors.to_numpy(tensors.from_numpy(arr))
    assert back.dtype == arr.dtype
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_big_endian_and_non_contiguous_inputs_are_normalised() -> None:
    arr = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]
    t = tensors.from_numpy(arr)
    assert t.dtype == tensor_pb2.DATA_TYPE_INT32
    np.testing.assert_array_equal(tensors.to_numpy(t), arr)


def test_decoding_is_zero_copy() -> None:
    t = tensors.from_numpy(np.ones((4, 4), np.float32))
    out = tensors.to_numpy(t)
    assert not out.flags.owndata


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        (tensor_pb2.Tensor(dtype=99, shape=[1], data=b"1234"), "not a known DataType"),
        (tensor_pb2.Tensor(dtype=1, shape=[-1], data=b""), "negative dimension"),
        (tensor_pb2.Tensor(dtype=1, shape=[2, 2], data=b"\0" * 15), "16 bytes expected"),
        (tensor_pb2.Tensor(dtype=1, shape=[1 << 20, 1 << 20], data=b""), "exceeds the limit"),
        (tensor_pb2.Tensor(dtype=1, shape=[1] * 40, data=b""), "max_dims=32"),
        (tensor_pb2.Tensor(dtype=1, shape=[0, 1 << 40, 1 << 40], data=b""), "max_elements"),
    ],
)
def test_malformed_tensors_name_the_input_and_the_problem(tensor, fragment) -> None:
    # Malformed is INVALID_ARGUMENT, too big RESOURCE_EXHAUSTED (LimitExceededError).
    with pytest.raises((InvalidInputError, LimitExceededError), match=fragment) as info:
        tensors.to_numpy(tensor, name="x")
    assert "'x'" in info.value.message


def test_unsupported_numpy_dtype_is_rejected() -> None:
    # (strings were the example here until BYTES/STRING joined the DataTypes)
    with pytest.raises(InvalidInputError, match="no meshserve DataType"):
        tensors.from_numpy(np.array([1 + 2j]))


def test_bytes_and_string_tensors_round_trip() -> None:
    for arr, dtype in (
        (np.array([[b"\x00", b""], [b"ab", b"c"]], dtype=object), tensor_pb2.DATA_TYPE_BYTES),
        (np.array([b"x", b"yz"]), tensor_pb2.DATA_TYPE_BYTES),
        (np.array(["h\u00e9", ""]), tensor_pb2.DATA_TYPE_STRING),
    ):
        t = tensors.from_numpy(arr)
        assert t.dtype == dtype and not t.data
        back = tensors.to_numpy(t, "x")
        assert back.dtype == np.dtype(object) and back.tolist() == arr.tolist()
    with pytest.raises(InvalidInputError, match="every element must be bytes"):
        tensors.from_numpy(np.array([b"a", 1], dtype=object))
    bad = tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_STRING, shape=[2], elements=[b"a"])
    with pytest.raises(InvalidInputError, match="needs 2 entries in 'elements'"):
        tensors.to_numpy(bad, "x")
    not_utf8 = tensor_pb2.Tensor(dtype=tensor_pb2.DATA_TYPE_STRING, shape=[1], elements=[b"\xff"])
    with pytest.raises(InvalidInputError, match="not UTF-8"):
        tensors.to_numpy(not_utf8, "x")
