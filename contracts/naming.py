"""Proto identifiers and field numbers derived from meshserve names, deterministically.

- A package segment (`package_segment`) is the model/plan name in lower case with every run of
  characters outside ``[a-z0-9]`` replaced by ``_`` (``digits-pipeline`` -> ``digits_pipeline``),
  prefixed with ``n_`` when it would start with a digit.
- A service name (`service_name`) is the name in UpperCamelCase (``digits-pipeline`` ->
  ``DigitsPipeline``, ``3d-net`` -> ``N3dNet``).
- A field name (`field_names`) is the tensor name in lower_snake_case (``inputIds`` ->
  ``input_ids``, ``dense/BiasAdd:0`` -> ``dense_bias_add_0``), ``t_`` in front of a leading digit,
  ``_tensor`` after a proto/common language keyword, and ``_2``, ``_3``... after a name already
  taken (by a fixed field such as ``request_id`` or an earlier tensor in sorted order).
- A field number (`field_numbers`) is a hash of the tensor's own name (FNV-1a 32 bit) folded
  into ``[FIRST_TENSOR_FIELD, 2^29 - 1]`` minus protobuf's reserved 19000-19999; a taken number
  moves to the next free one, tensors taken in sorted name order. So a tensor keeps its number
  whatever other tensors come and go (unless two names collide, about one pair in 10^7 for a
  few dozen tensors, which the compatibility check then reports as a renumbered field).
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable

__all__ = [
    "FIRST_TENSOR_FIELD",
    "MAX_FIELD_NUMBER",
    "field_names",
    "field_numbers",
    "package_segment",
    "service_name",
]

FIRST_TENSOR_FIELD = 16  # 1-15 are meshserve's fixed fields (request_id, routing_key, ...)
MAX_FIELD_NUMBER = (1 << 29) - 1
_RESERVED = range(19000, 20000)
_SPAN = MAX_FIELD_NUMBER - FIRST_TENSOR_FIELD + 1 - len(_RESERVED)

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_IDENT = re.compile(r"[^a-z0-9]+")
# Words that generated code in common languages cannot take as a field or accessor name as is.
_KEYWORDS = frozenset(keyword.kwlist) | {
    "bool",
    "bytes",
    "case",
    "char",
    "const",
    "default",
    "double",
    "enum",
    "extends",
    "final",
    "float",
    "func",
    "goto",
    "int",
    "interface",
    "long",
    "new",
    "null",
    "option",
    "package",
    "private",
    "protected",
    "public",
    "repeated",
    "reserved",
    "short",
    "static",
    "string",
    "struct",
    "switch",
    "syntax",
    "this",
    "throw",
    "true",
    "false",
    "typename",
    "union",
    "var",
    "void",
}


def _snake(name: str) -> str:
    return _NON_IDENT.sub("_", _CAMEL.sub("_", name).lower()).strip("_")


def package_segment(name: str) -> str:
    """`name` as one segment of a proto package (see the module docstring)."""
    segment = _NON_IDENT.sub("_", name.lower()).strip("_") or "n"
    return f"n_{segment}" if segment[0].isdigit() else segment


def service_name(name: str) -> str:
    """`name` in UpperCamelCase, a valid proto identifier."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", name) if w]
    camel = "".join(w[0].upper() + w[1:] for w in words) or "N"
    return f"N{camel}" if camel[0].isdigit() else camel


def _identifier(name: str) -> str:
    ident = _snake(name) or "tensor"
    if ident[0].isdigit():
        ident = f"t_{ident}"
    if ident in _KEYWORDS:
        ident = f"{ident}_tensor"
    return ident


def field_names(tensors: Iterable[str], taken: Iterable[str] = ()) -> dict[str, str]:
    """Tensor name -> field name for every tensor, none equal to another or to `taken`."""
    used = set(taken)
    out: dict[str, str] = {}
    for tensor in sorted(set(tensors)):
        base = _identifier(tensor)
        ident, n = base, 1
        while ident in used:
            n += 1
            ident = f"{base}_{n}"
        used.add(ident)
        out[tensor] = ident
    return out


def _fnv1a(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def _fold(h: int) -> int:
    number = FIRST_TENSOR_FIELD + h % _SPAN
    return number + len(_RESERVED) if number >= _RESERVED.start else number


def _next(number: int) -> int:
    number += 1
    if number in _RESERVED:
        number = _RESERVED.stop
    return FIRST_TENSOR_FIELD if number > MAX_FIELD_NUMBER else number


def field_numbers(tensors: Iterable[str]) -> dict[str, int]:
    """Tensor name -> field number (see the module docstring)."""
    used: set[int] = set()
    out: dict[str, int] = {}
    for tensor in sorted(set(tensors)):
        number = _fold(_fnv1a(tensor))
        while number in used:
            number = _next(number)
        used.add(number)
        out[tensor] = number
    return out
