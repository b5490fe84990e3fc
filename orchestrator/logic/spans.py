"""Spans of business-logic building blocks (SQL, feature store, HTTP), under the one switch.

`client_span` opens a CLIENT span (while ``meshserve.telemetry.tracing_enabled()``; else the
no-op ``NO_SPAN``) with OpenTelemetry semantic-convention attributes given by the caller. An
exception leaving the block is recorded and sets the span's status to ERROR (the SDK's default).
`db_attributes` builds the database conventions from a query text (never its values: lookups
bind keys as parameters, so the text holds placeholders only).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from meshserve.telemetry import NO_SPAN, tracing_enabled

__all__ = ["client_span", "db_attributes", "db_span_name"]

_tracer = trace.get_tracer(__name__)
_TABLE = re.compile(r"\bFROM\s+([A-Za-z_][\w.\"]*)", re.IGNORECASE)


@contextmanager
def client_span(name: str, attributes: Mapping[str, AttributeValue]) -> Iterator[trace.Span | None]:
    """A CLIENT span `name` with `attributes`, or None while tracing is off."""
    span_cm: AbstractContextManager[trace.Span | None] = (
        _tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes)
        if tracing_enabled()
        else NO_SPAN
    )
    with span_cm as span:
        yield span


def db_attributes(system: str, query: str, **extra: Any) -> dict[str, AttributeValue]:
    """``db.*`` attributes of `query` on `system` ("postgresql", "sqlite", "redis"), plus `extra`
    (``None`` values dropped). Both the current (``db.system.name``, ``db.operation.name``) and
    the older (``db.system``, ``db.operation``) names are set, for backends of either vintage.
    Computed once per distinct arguments (a lookup's query text does not change)."""
    return dict(_db_attributes(system, query, tuple(sorted(extra.items()))))


@functools.lru_cache(maxsize=1024)
def _db_attributes(
    system: str, query: str, extra: tuple[tuple[str, Any], ...]
) -> dict[str, AttributeValue]:
    operation = query.split(None, 1)[0].upper() if query.strip() else ""
    attrs: dict[str, Any] = {
        "db.system": system,
        "db.system.name": system,
        "db.operation": operation,
        "db.operation.name": operation,
        "db.query.text": query,
    }
    table = _TABLE.search(query)
    if table:
        attrs["db.collection.name"] = table.group(1).strip('"')
    attrs.update({k: v for k, v in extra if v is not None})
    return attrs


def db_span_name(attrs: Mapping[str, AttributeValue]) -> str:
    """``{operation} {collection}`` (or the system) as the database conventions name spans."""
    target = attrs.get("db.collection.name") or attrs.get("db.namespace") or attrs["db.system"]
    return f"{attrs['db.operation.name']!s} {target!s}".strip()
