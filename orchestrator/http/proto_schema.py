"""JSON Schema of protobuf messages under the proto3 JSON mapping, from their descriptors.

The schema says what ``google.protobuf.json_format`` accepts and prints (field names as in the
.proto, which json_format prints with ``preserving_proto_field_name`` and parses along with the
lowerCamel json names): 64-bit integers as strings or numbers, floats as numbers or "NaN" /
"Infinity" strings, bytes as base64, enums by name, maps as objects, nested messages by
``$ref`` into the OpenAPI components (named by their full proto name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

__all__ = ["message_schema"]

F = FieldDescriptor
_REF = "#/components/schemas/"
_FLOAT = {"oneOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}
_INT64 = {"type": ["integer", "string"], "pattern": "^-?[0-9]+$"}
_SCALARS: dict[int, dict[str, Any]] = {
    F.TYPE_DOUBLE: _FLOAT,
    F.TYPE_FLOAT: _FLOAT,
    F.TYPE_INT64: _INT64,
    F.TYPE_SINT64: _INT64,
    F.TYPE_SFIXED64: _INT64,
    F.TYPE_UINT64: {**_INT64, "pattern": "^[0-9]+$"},
    F.TYPE_FIXED64: {**_INT64, "pattern": "^[0-9]+$"},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "minimum": 0, "format": "int64"},
    F.TYPE_FIXED32: {"type": "integer", "minimum": 0, "format": "int64"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
Describe = Callable[[Any], str]  # a FieldDescriptor -> its description


def _value(field: Any, out: dict[str, Any], describe: Describe) -> dict[str, Any]:
    if field.type == F.TYPE_MESSAGE:
        return {"$ref": _REF + message_schema(field.message_type, out, describe)}
    if field.type == F.TYPE_ENUM:
        return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    return dict(_SCALARS[field.type])


def _field(field: Any, out: dict[str, Any], describe: Describe) -> dict[str, Any]:
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": _value(message.fields_by_name["value"], out, describe),
        }
    elif field.is_repeated:
        schema = {"type": "array", "items": _value(field, out, describe)}
    else:
        schema = _value(field, out, describe)
    text = describe(field)
    if text:
        schema = {"allOf": [schema], "description": text} if "$ref" in schema else {
            **schema, "description": text}  # fmt: skip
    return schema


def message_schema(descriptor: Any, out: dict[str, Any], describe: Describe) -> str:
    """Add the schema of `descriptor` (and of the messages it uses) to `out`, keyed by full
    name; returns that name. `describe(field)` gives a field's description ("" for none)."""
    name = str(descriptor.full_name)
    if name in out:
        return name
    out[name] = {}  # placeholder: recursive messages refer to it
    out[name] = {
        "type": "object",
        "properties": {f.name: _field(f, out, describe) for f in descriptor.fields},
        "additionalProperties": False,
    }
    return name
