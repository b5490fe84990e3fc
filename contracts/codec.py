"""Typed messages <-> numpy arrays, both ways, for requests and responses of a `Contract`.

Every refusal is an InvalidInputError (INVALID_ARGUMENT) that names the field (and the tensor when
its name differs) and says what was expected; counts are checked against `Limits` before any
array is built. A server producing an output that does not fit its own contract is an
InternalError instead (`encode_response`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from google.protobuf import message, unknown_fields

from meshserve.errors import InternalError, InvalidInputError, MeshError
from meshserve.limits import (
    DEFAULT_LIMITS,
    Limits,
    check_count,
    check_shape,
    check_string,
    check_strings,
)
from meshserve.names import quote

if TYPE_CHECKING:
    from meshserve.contracts.contract import Contract, TensorField

__all__ = [
    "StreamStatus",
    "TypedRequest",
    "TypedResponse",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "rows_of",
]


@dataclass(frozen=True)
class StreamStatus:
    """An in-band failure of one stream item (a grpc status code value and its message)."""

    code: int
    message: str
    retry_pushback_ms: int = 0


@dataclass(frozen=True)
class TypedRequest:
    """A decoded typed request: tensor name -> array, plus the fixed fields (plans only:
    `routing_key`, `attributes`)."""

    arrays: dict[str, np.ndarray]
    request_id: str = ""
    timeout_ms: int = 0
    routing_key: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TypedResponse:
    """A decoded typed response: tensor name -> array, plus the fixed fields (plans only:
    `decisions`, `plan_version`, `trace_id`); `status` is set on a failed stream item."""

    arrays: dict[str, np.ndarray]
    request_id: str = ""
    status: StreamStatus | None = None
    decisions: dict[str, str] = field(default_factory=dict)
    plan_version: int = 0
    trace_id: str = ""


def _label(tf: TensorField) -> str:
    if tf.field == tf.name:
        return f"field {quote(tf.field)}"
    return f"field {quote(tf.field)} (tensor {quote(tf.name)})"


def _wrong_wire_type(msg: message.Message, tf: TensorField) -> bool:
    try:
        unknown: Any = unknown_fields.UnknownFieldSet(msg)
        return any(u.field_number == tf.number for u in unknown)
    except Exception:  # an unknown-field view is a diagnostic only
        return False


def _missing(msg: message.Message, tf: TensorField, role: str) -> InvalidInputError:
    if _wrong_wire_type(msg, tf):
        return InvalidInputError(
            f"{role} {_label(tf)}: sent with the wrong wire type (number {tf.number}); expected "
            f"{tf.expected()} ({tf.spec.scalar.proto_name})"
        )
    return InvalidInputError(f"{role} {_label(tf)} is required: expected {tf.expected()}")


def _values_to_array(
    tf: TensorField, values: Any, count: int, where: str, error: type[MeshError]
) -> np.ndarray:
    scalar = tf.spec.scalar
    if scalar.numpy == np.dtype(object):
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
        return arr
    if scalar.lo is None:
        return np.array(values, dtype=scalar.numpy)
    wide = np.array(values, dtype=np.int64)
    if count and (int(wide.min()) < scalar.lo or int(wide.max()) > scalar.hi):  # type: ignore[operator]
        bad = int(wide[(wide < scalar.lo) | (wide > scalar.hi)][0])  # type: ignore[operator]
        raise error(
            f"{where} {_label(tf)}: value {bad} is out of range for {scalar.name} "
            f"([{scalar.lo}, {scalar.hi}])"
        )
    return wide.astype(scalar.numpy)


def _flat_shape(tf: TensorField, count: int, where: str, error: type[MeshError]) -> tuple[int, ...]:
    spec = tf.spec
    assert spec.shape is not None
    if not spec.shape:
        if count != 1:
            raise error(f"{where} {_label(tf)}: got {count} values; expected {tf.expected()}")
        return ()
    size = spec.row_size
    rows, rest = divmod(count, size)
    if rest or (spec.shape[0] >= 0 and rows != spec.shape[0]):
        raise error(f"{where} {_label(tf)}: got {count} values; expected {tf.expected()}")
    return (rows, *spec.shape[1:])


def _check_nested_shape(
    tf: TensorField, shape: tuple[int, ...], where: str, error: type[MeshError]
) -> None:
    spec_shape = tf.spec.shape
    if spec_shape is None:
        return
    ok = len(shape) == len(spec_shape) and all(
        want < 0 or want == got for want, got in zip(spec_shape, shape, strict=True)
    )
    if not ok:
        raise error(f"{where} {_label(tf)}: shape {list(shape)} does not match {list(spec_shape)}")


def _decode_field(
    msg: message.Message, tf: TensorField, limits: Limits, where: str, error: type[MeshError]
) -> np.ndarray | None:
    """The array of `tf` in `msg`, or None when the field is empty."""
    if tf.nested:
        if not msg.HasField(tf.field):
            return None
        sub = getattr(msg, tf.field)
        shape = tuple(int(d) for d in sub.shape)
        count = check_shape(f"{tf.field}.shape", shape, limits)
        if count != len(sub.values):
            raise error(
                f"{where} {_label(tf)}: {len(sub.values)} values do not fill shape "
                f"{list(shape)} ({count} values expected)"
            )
        _check_nested_shape(tf, shape, where, error)
        return _values_to_array(tf, sub.values, count, where, error).reshape(shape)
    values = getattr(msg, tf.field)
    count = len(values)
    if not count:
        return None
    check_shape(tf.field, (count,), limits)
    shape = _flat_shape(tf, count, where, error)
    return _values_to_array(tf, values, count, where, error).reshape(shape)


def _decode_tensors(
    msg: message.Message,
    fields: tuple[TensorField, ...],
    limits: Limits,
    where: str,
    error: type[MeshError],
    required: bool,
) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for tf in fields:
        arr = _decode_field(msg, tf, limits, where, error)
        if arr is not None:
            arrays[tf.name] = arr
        elif required and not tf.spec.optional:
            raise _missing(msg, tf, where)
    return arrays


def _message_type_check(
    contract: Contract, msg: message.Message, cls: type[message.Message]
) -> None:
    if msg.DESCRIPTOR is not cls.DESCRIPTOR:
        raise InvalidInputError(
            f"{contract.kind} {contract.name!r}: expected a {cls.DESCRIPTOR.full_name} message, "
            f"got {msg.DESCRIPTOR.full_name}"
        )


def rows_of(contract: Contract, request: message.Message) -> int:
    """Rows a typed request carries, read without decoding (for admission): dim 0 of its first
    present input, 1 when it has no batched input."""
    for tf in contract.inputs:
        spec = tf.spec
        if tf.nested:
            if request.HasField(tf.field):
                shape = getattr(request, tf.field).shape
                if shape:
                    return max(int(shape[0]), 0)
            continue
        count = len(getattr(request, tf.field))
        if count and spec.shape:
            return count // spec.row_size
    return 1


def decode_request(
    contract: Contract, request: message.Message, limits: Limits = DEFAULT_LIMITS
) -> TypedRequest:
    """The arrays and fixed fields of a typed request; every required input must be present."""
    _message_type_check(contract, request, contract.request_class)
    r: Any = request
    check_string("request id", r.request_id, limits, "max_string_chars")
    routing_key, attributes = "", {}
    if contract.kind == "plan":
        check_string("routing_key", r.routing_key, limits, "max_string_chars")
        if r.attributes:
            check_count("attributes", len(r.attributes), limits, "max_attributes")
            check_strings("attribute key", r.attributes, limits, "max_name_chars")
            check_strings("attribute value", r.attributes.values(), limits, "max_string_chars")
            attributes = dict(r.attributes)
        routing_key = r.routing_key
    arrays = _decode_tensors(request, contract.inputs, limits, "input", InvalidInputError, True)
    return TypedRequest(
        arrays=arrays,
        request_id=r.request_id,
        timeout_ms=r.timeout_ms,
        routing_key=routing_key,
        attributes=attributes,
    )


def decode_response(
    contract: Contract, response: message.Message, limits: Limits = DEFAULT_LIMITS
) -> TypedResponse:
    """The arrays and fixed fields of a typed response (outputs left empty are left out)."""
    _message_type_check(contract, response, contract.response_class)
    r: Any = response
    status = None
    if r.HasField("status"):
        s = r.status
        status = StreamStatus(s.code, s.message, s.retry_pushback_ms)
    arrays = _decode_tensors(response, contract.outputs, limits, "output", InvalidInputError, False)
    if contract.kind == "model":
        return TypedResponse(arrays=arrays, request_id=r.request_id, status=status)
    return TypedResponse(
        arrays=arrays,
        request_id=r.request_id,
        status=status,
        decisions=dict(r.decisions),
        plan_version=r.plan_version,
        trace_id=r.trace_id,
    )


def _as_array(tf: TensorField, value: Any, where: str, error: type[MeshError]) -> np.ndarray:
    scalar = tf.spec.scalar
    if scalar.numpy == np.dtype(object):
        arr = np.asarray(value, dtype=object)
        want: type = bytes if scalar.proto_name == "bytes" else str
        flat = arr.reshape(-1)
        for i, item in enumerate(flat):
            if isinstance(item, want):
                continue
            if want is bytes and isinstance(item, str):
                flat[i] = item.encode("utf-8")
            elif want is str and isinstance(item, bytes):
                try:
                    flat[i] = item.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise error(f"{where} {_label(tf)}: element {i} is not UTF-8") from exc
            else:
                raise error(
                    f"{where} {_label(tf)}: element {i} is {type(item).__name__}; expected "
                    f"{want.__name__}"
                )
        return arr
    arr = np.asarray(value)
    if arr.dtype != scalar.numpy:
        if not np.can_cast(arr.dtype, scalar.numpy, "same_kind") or arr.dtype == np.dtype(object):
            raise error(
                f"{where} {_label(tf)}: {arr.dtype} values cannot be sent as {scalar.name} "
                f"(expected {tf.expected()})"
            )
        arr = arr.astype(scalar.numpy)
    return arr


def _set_field(
    msg: message.Message, tf: TensorField, value: Any, where: str, error: type[MeshError]
) -> None:
    arr = _as_array(tf, value, where, error)
    spec = tf.spec
    if tf.nested:
        if spec.shape is not None:
            _check_nested_shape(tf, tuple(arr.shape), where, error)
        sub = getattr(msg, tf.field)
        sub.values.extend(arr.reshape(-1).tolist())
        sub.shape.extend(arr.shape)
        if not arr.size:
            sub.SetInParent()
        return
    assert spec.shape is not None
    ok = arr.size == 1 if not spec.shape else tuple(arr.shape[1:]) == spec.shape[1:]
    if ok and spec.shape and spec.shape[0] >= 0:
        ok = arr.shape[0] == spec.shape[0]
    if not ok or (spec.shape and arr.ndim == 0):
        raise error(
            f"{where} {_label(tf)}: array of shape {list(arr.shape)}; expected {tf.expected()} "
            f"(shape {list(spec.shape)})"
        )
    getattr(msg, tf.field).extend(arr.reshape(-1).tolist())


def _encode(
    contract: Contract,
    cls: type[message.Message],
    fields: tuple[TensorField, ...],
    arrays: Mapping[str, Any],
    fixed: dict[str, Any],
    where: str,
    error: type[MeshError],
    strict: bool,
) -> message.Message:
    known = {tf.name for tf in fields}
    if strict:
        unknown = sorted(set(arrays) - known)
        if unknown:
            names = ", ".join(repr(n) for n in sorted(known))
            raise error(
                f"{contract.kind} {contract.name!r} has no {where} {quote(unknown[0])} "
                f"(its {where}s: {names})"
            )
    try:
        msg = cls(**{k: v for k, v in fixed.items() if v})
    except (TypeError, ValueError) as exc:
        raise error(f"{contract.kind} {contract.name!r}: bad fixed field: {exc}") from exc
    for tf in fields:
        value = arrays.get(tf.name)
        if value is None:
            if not tf.spec.optional:
                raise error(f"{where} {_label(tf)} is required: expected {tf.expected()}")
            continue
        _set_field(msg, tf, value, where, error)
    return msg


def encode_request(contract: Contract, arrays: Mapping[str, Any], **fixed: Any) -> message.Message:
    """A typed request from tensor name -> array-like (cast when numpy can do it without changing
    kind: int -> float passes, float -> int does not) and the fixed fields by name
    (``request_id``, ``timeout_ms``; plans also ``routing_key``, ``attributes``)."""
    return _encode(
        contract,
        contract.request_class,
        contract.inputs,
        arrays,
        fixed,
        "input",
        InvalidInputError,
        strict=True,
    )


def encode_response(contract: Contract, arrays: Mapping[str, Any], **fixed: Any) -> message.Message:
    """A typed response from the outputs a server produced and the fixed fields (``request_id``,
    ``status`` as a StreamStatus; plans also ``decisions``, ``plan_version``, ``trace_id``).
    Arrays outside the contract are not sent; a contract output missing or not fitting its spec
    is an InternalError (the server broke its own contract)."""
    status = fixed.pop("status", None)
    if status is not None:
        fixed["status"] = {
            "code": status.code,
            "message": status.message,
            "retry_pushback_ms": status.retry_pushback_ms,
        }
        return _encode(
            contract, contract.response_class, (), {}, fixed, "output", InternalError, False
        )
    return _encode(
        contract,
        contract.response_class,
        contract.outputs,
        arrays,
        fixed,
        "output",
        InternalError,
        strict=False,
    )
