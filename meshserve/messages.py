"""Protobuf messages filled from plain objects whose attribute names are the message's fields.

Converters of read-only views (stats, snapshots, trace summaries) would otherwise repeat every
field name twice. `fill` copies each *scalar* field the message declares from the same-named
attribute of `source` (attributes the message lacks are ignored; message-typed, map and
repeated fields are the caller's, through `overrides`). For admin and observability paths, not
per-request code.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["fill"]

M = TypeVar("M", bound=Message)


def _scalar_fields(message_cls: type[Message]) -> tuple[str, ...]:
    return tuple(
        f.name
        for f in message_cls.DESCRIPTOR.fields
        if f.type != FieldDescriptor.TYPE_MESSAGE and not f.is_repeated
    )


def fill(message_cls: type[M], source: object, **overrides: Any) -> M:
    """``message_cls(**{field: source.field for every scalar field}, **overrides)``."""
    values = {
        name: getattr(source, name)
        for name in _scalar_fields(message_cls)
        if name not in overrides and hasattr(source, name)
    }
    return message_cls(**values, **overrides)
