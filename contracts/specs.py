"""What a typed contract is built from: tensor specs, and how each dtype maps to a proto scalar."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from google.protobuf import descriptor_pb2

from meshserve.errors import InvalidInputError
from meshserve.names import quote
from meshserve.v1 import tensor_pb2

__all__ = [
    "SCALARS",
    "ContractKind",
    "FieldSpec",
    "Scalar",
    "scalar_for",
    "specs_from_proto",
]

ContractKind = Literal["model", "plan"]

_F = descriptor_pb2.FieldDescriptorProto


@dataclass(frozen=True)
class Scalar:
    """How one meshserve DataType travels in a typed message.

    `proto_type` is the proto3 scalar of the field, `proto_name` its name in .proto text,
    `numpy` the array dtype the converters produce (object for bytes/string), `lo`/`hi` the
    value range when the proto scalar is wider than the dtype (int8 in an int32 field), and
    `title` the name used in messages and in nested tensor message names (``Float32Tensor``).
    """

    dtype: int
    proto_type: int
    proto_name: str
    numpy: np.dtype
    title: str
    lo: int | None = None
    hi: int | None = None

    @property
    def name(self) -> str:
        """The dtype's lower-case name ("float32"), as in TensorSpec and error messages."""
        return self.title.lower()


def _s(dtype: int, ptype: int, pname: str, np_dtype: str, title: str, bits: int = 0) -> Scalar:
    lo = hi = None
    if bits:
        info = np.iinfo(np.dtype(np_dtype))
        lo, hi = int(info.min), int(info.max)
    return Scalar(dtype, ptype, pname, np.dtype(np_dtype), title, lo, hi)


# DataType -> Scalar: the one table of the mapping (docs/TYPED.md repeats it for readers).
SCALARS: dict[int, Scalar] = {
    s.dtype: s
    for s in (
        _s(tensor_pb2.DATA_TYPE_FLOAT32, _F.TYPE_FLOAT, "float", "float32", "Float32"),
        _s(tensor_pb2.DATA_TYPE_FLOAT64, _F.TYPE_DOUBLE, "double", "float64", "Float64"),
        _s(tensor_pb2.DATA_TYPE_FLOAT16, _F.TYPE_FLOAT, "float", "float16", "Float16"),
        _s(tensor_pb2.DATA_TYPE_INT8, _F.TYPE_INT32, "int32", "int8", "Int8", 8),
        _s(tensor_pb2.DATA_TYPE_INT16, _F.TYPE_INT32, "int32", "int16", "Int16", 16),
        _s(tensor_pb2.DATA_TYPE_INT32, _F.TYPE_INT32, "int32", "int32", "Int32"),
        _s(tensor_pb2.DATA_TYPE_INT64, _F.TYPE_INT64, "int64", "int64", "Int64"),
        _s(tensor_pb2.DATA_TYPE_UINT8, _F.TYPE_UINT32, "uint32", "uint8", "Uint8", 8),
        _s(tensor_pb2.DATA_TYPE_UINT16, _F.TYPE_UINT32, "uint32", "uint16", "Uint16", 16),
        _s(tensor_pb2.DATA_TYPE_UINT32, _F.TYPE_UINT32, "uint32", "uint32", "Uint32"),
        _s(tensor_pb2.DATA_TYPE_UINT64, _F.TYPE_UINT64, "uint64", "uint64", "Uint64"),
        _s(tensor_pb2.DATA_TYPE_BOOL, _F.TYPE_BOOL, "bool", "bool", "Bool"),
        _s(tensor_pb2.DATA_TYPE_BYTES, _F.TYPE_BYTES, "bytes", "object", "Bytes"),
        _s(tensor_pb2.DATA_TYPE_STRING, _F.TYPE_STRING, "string", "object", "String"),
    )
}


def scalar_for(dtype: int, where: str) -> Scalar:
    """The Scalar of `dtype`, else InvalidInputError naming `where` and the known dtypes."""
    scalar = SCALARS.get(dtype)
    if scalar is None:
        known = ", ".join(s.name for s in SCALARS.values())
        raise InvalidInputError(f"{where}: dtype {dtype} has no typed mapping (known: {known})")
    return scalar


@dataclass(frozen=True)
class FieldSpec:
    """One tensor of a contract.

    `name` is the tensor's own name (any text: ``input:0``, ``dense/BiasAdd``); `dtype` a
    `meshserve.v1.DataType` value; `shape` the full shape with -1 for a dynamic dimension and
    dim 0 the batch of rows, or None when not even the rank is known; `optional` marks an input
    a request may leave out (outputs are never optional); `doc` is added to the field comment.
    """

    name: str
    dtype: int
    shape: tuple[int, ...] | None
    optional: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidInputError("a contract tensor needs a name")
        scalar_for(self.dtype, f"tensor {quote(self.name)}")
        if self.shape is not None and any(d < -1 for d in self.shape):
            raise InvalidInputError(
                f"tensor {quote(self.name)}: shape {list(self.shape)} has a dimension below -1"
            )

    @property
    def scalar(self) -> Scalar:
        return SCALARS[self.dtype]

    @property
    def row_shape(self) -> tuple[int, ...] | None:
        """The shape of one row (dims after the batch dim); () for rank 1; None when rank 0 or
        unknown."""
        if self.shape is None or not self.shape:
            return None
        return self.shape[1:]

    @property
    def row_size(self) -> int:
        """Values per row when every row dim is known and positive, else 0 (then the field is a
        nested tensor message carrying its own shape)."""
        if self.shape is None:
            return 0
        if not self.shape:
            return 1
        size = 1
        for d in self.shape[1:]:
            if d <= 0:
                return 0
            size *= d
        return size

    def describe(self) -> str:
        """``float32 [-1, 64]`` (``float32, any shape`` when unknown)."""
        if self.shape is None:
            return f"{self.scalar.name}, any shape"
        return f"{self.scalar.name} {list(self.shape)}"


def specs_from_proto(
    specs: Iterable[tensor_pb2.TensorSpec], *, optional: Iterable[str] = ()
) -> tuple[FieldSpec, ...]:
    """FieldSpecs from `meshserve.v1.TensorSpec` messages (names in `optional` are optional)."""
    maybe = set(optional)
    return tuple(
        FieldSpec(s.name, int(s.dtype), tuple(int(d) for d in s.shape), s.name in maybe)
        for s in specs
    )
