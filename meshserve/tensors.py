"""numpy <-> meshserve.v1.Tensor: raw little-endian bytes, zero-copy where numpy allows.

BYTES and STRING tensors carry one entry per element in ``Tensor.elements`` (STRING as UTF-8);
their numpy form is an object array of ``bytes`` / ``str``. numpy ``S`` arrays encode as BYTES,
``U`` arrays as STRING, object arrays by their first element.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError
from meshserve.limits import DEFAULT_LIMITS, check_shape
from meshserve.names import quote
from meshserve.v1 import tensor_pb2

__all__ = [
    "DTYPE_NAMES",
    "DTYPE_TO_NUMPY",
    "ELEMENT_DTYPES",
    "NUMPY_TO_DTYPE",
    "dtype_name",
    "element_count",
    "from_numpy",
    "from_numpy_map",
    "to_numpy",
    "to_numpy_map",
    "view_bytes",
]

DataType = tensor_pb2.DataType

DTYPE_TO_NUMPY: dict[int, np.dtype] = {
    tensor_pb2.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    tensor_pb2.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb2.DATA_TYPE_INT8: np.dtype("i1"),
    tensor_pb2.DATA_TYPE_INT16: np.dtype("<i2"),
    tensor_pb2.DATA_TYPE_INT32: np.dtype("<i4"),
    tensor_pb2.DATA_TYPE_INT64: np.dtype("<i8"),
    tensor_pb2.DATA_TYPE_UINT8: np.dtype("u1"),
    tensor_pb2.DATA_TYPE_UINT16: np.dtype("<u2"),
    tensor_pb2.DATA_TYPE_UINT32: np.dtype("<u4"),
    tensor_pb2.DATA_TYPE_UINT64: np.dtype("<u8"),
    tensor_pb2.DATA_TYPE_BOOL: np.dtype("?"),
}
# Variable-length element types, carried in Tensor.elements.
ELEMENT_DTYPES: dict[int, str] = {
    tensor_pb2.DATA_TYPE_BYTES: "bytes",
    tensor_pb2.DATA_TYPE_STRING: "string",
}
# Every known DataType value -> its name ("float32", "bytes").
DTYPE_NAMES: dict[int, str] = {
    **{k: v.name for k, v in DTYPE_TO_NUMPY.items()},
    **ELEMENT_DTYPES,
}
# Values typed Any: protobuf stubs type enum fields as their enum wrapper, not int.
NUMPY_TO_DTYPE: dict[np.dtype, Any] = {v.newbyteorder("="): k for k, v in DTYPE_TO_NUMPY.items()}

# Element count accepted before any allocation by default (`meshserve.limits.Limits`).
DEFAULT_MAX_ELEMENTS = DEFAULT_LIMITS.max_elements


def dtype_name(dtype: int) -> str:
    """Human name of a DataType value ("float32"), for error messages."""
    return DTYPE_NAMES.get(dtype, f"unknown dtype {dtype}")


def element_count(name: str, shape: Sequence[int], max_elements: int) -> int:
    """prod(shape), checked before anything is allocated (`meshserve.limits.check_shape`): rank
    at most ``max_dims``, no negative dimension (InvalidInputError), at most `max_elements`
    (LimitExceededError), both naming input `name`."""
    return check_shape(name, shape, DEFAULT_LIMITS, max_elements)


def from_numpy(array: np.ndarray) -> tensor_pb2.Tensor:
    """Encode an array as a Tensor (little-endian, C order)."""
    arr = np.asarray(array)
    if arr.dtype.kind in "OSUT":
        return _from_elements(arr)
    native = arr.dtype.newbyteorder("=") if arr.dtype.byteorder in "<>" else arr.dtype
    dtype = NUMPY_TO_DTYPE.get(native)
    if dtype is None:
        raise InvalidInputError(f"numpy dtype {arr.dtype} has no meshserve DataType")
    wire = DTYPE_TO_NUMPY[dtype]
    if arr.dtype != wire or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, dtype=wire)
    return tensor_pb2.Tensor(dtype=dtype, shape=arr.shape, data=arr.tobytes())


def _from_elements(arr: np.ndarray) -> tensor_pb2.Tensor:
    flat = arr.reshape(-1).tolist()
    as_bytes = arr.dtype.kind == "S" or (
        arr.dtype.kind == "O" and bool(flat) and isinstance(flat[0], bytes | bytearray)
    )
    elements: list[bytes] = []
    for i, item in enumerate(flat):
        if as_bytes and isinstance(item, bytes | bytearray):
            elements.append(bytes(item))
        elif not as_bytes and isinstance(item, str):
            elements.append(item.encode("utf-8"))
        else:
            want = "bytes" if as_bytes else "str"
            raise InvalidInputError(
                f"array element {i} is {type(item).__name__}; every element must be {want}"
            )
    dtype = tensor_pb2.DATA_TYPE_BYTES if as_bytes else tensor_pb2.DATA_TYPE_STRING
    return tensor_pb2.Tensor(dtype=dtype, shape=arr.shape, elements=elements)


def _to_elements(
    tensor: tensor_pb2.Tensor, name: str, shape: tuple[int, ...], count: int
) -> np.ndarray:
    elements = tensor.elements
    if len(elements) != count or tensor.data:
        raise InvalidInputError(
            f"input {quote(name)}: {ELEMENT_DTYPES[tensor.dtype]} tensor of shape {list(shape)} "
            f"needs {count} entries in 'elements' and no 'data' (got {len(elements)} entries, "
            f"{len(tensor.data)} data bytes)"
        )
    arr = np.empty(count, dtype=object)
    if tensor.dtype == tensor_pb2.DATA_TYPE_STRING:
        try:
            arr[:] = [e.decode("utf-8") for e in elements]
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"input {quote(name)}: a string element is not UTF-8") from exc
    else:
        arr[:] = list(elements)
    return arr.reshape(shape)


def to_numpy(
    tensor: tensor_pb2.Tensor, name: str = "tensor", max_elements: int = DEFAULT_MAX_ELEMENTS
) -> np.ndarray:
    """Decode a Tensor into a read-only array viewing the message bytes (no copy).

    Raises InvalidInputError naming `name` when the dtype is unknown, the rank is too high, a
    dimension is negative or the byte length does not match shape x dtype; LimitExceededError
    when the element count exceeds `max_elements` (both checked before allocating).
    """
    np_dtype = DTYPE_TO_NUMPY.get(tensor.dtype)
    if np_dtype is None and tensor.dtype not in ELEMENT_DTYPES:
        raise InvalidInputError(
            f"input {quote(name)}: dtype {tensor.dtype} is not a known DataType "
            f"(expected one of {sorted(DTYPE_NAMES.values())})"
        )
    shape = tuple(int(d) for d in tensor.shape)
    count = element_count(name, shape, max_elements)
    if np_dtype is None:
        return _to_elements(tensor, name, shape, count)
    # Each read of a bytes field builds a new bytes object: read it once.
    return view_bytes(name, tensor.data, np_dtype, shape, count)


def view_bytes(
    name: str,
    data: bytes,
    dtype: np.dtype,
    shape: tuple[int, ...],
    count: int,
    *,
    source: str = "",
    type_name: str = "",
) -> np.ndarray:
    """A read-only `shape` array of `dtype` viewing `data` (no copy); `count` is
    `element_count(shape)`. InvalidInputError naming input `name` when the byte length does not
    match; `source` (" in field[i]") and `type_name` (default the numpy name) shape the message.
    """
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise InvalidInputError(
            f"input {quote(name)}: {len(data)} bytes{source} do not match shape {list(shape)} x "
            f"{type_name or dtype.name} ({expected} bytes expected)"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def from_numpy_map(arrays: Mapping[str, np.ndarray]) -> dict[str, tensor_pb2.Tensor]:
    """Encode a name -> array mapping."""
    return {name: from_numpy(arr) for name, arr in arrays.items()}


def to_numpy_map(
    tensors: Mapping[str, tensor_pb2.Tensor], max_elements: int = DEFAULT_MAX_ELEMENTS
) -> dict[str, np.ndarray]:
    """Decode a name -> Tensor mapping (protobuf map fields included)."""
    return {name: to_numpy(t, name, max_elements) for name, t in tensors.items()}
