"""Finished spans as plain data: what the trace buffer returns, the JSON-lines files hold and the
waterfall renders. Ids are lowercase hex (32 chars for traces, 16 for spans), as in W3C traceparent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode, format_span_id, format_trace_id

__all__ = [
    "LinkRecord",
    "SpanRecord",
    "TraceSummary",
    "attr_text",
    "root_spans",
    "span_from_dict",
    "span_from_readable",
    "span_to_dict",
    "start_order",
    "summarize",
]


@dataclass(frozen=True)
class LinkRecord:
    """A link from a span to another span, possibly in another trace."""

    trace_id: str
    span_id: str


@dataclass(frozen=True)
class SpanRecord:
    """One finished span."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    start_unix_nano: int
    end_unix_nano: int
    status: str = "UNSET"  # "OK" | "ERROR" | "UNSET"
    status_message: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    links: tuple[LinkRecord, ...] = ()
    kind: str = "INTERNAL"
    instance: str = ""

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_unix_nano - self.start_unix_nano) / 1e6

    @property
    def linked_span_ids(self) -> tuple[str, ...]:
        return tuple(link.span_id for link in self.links)


@dataclass(frozen=True)
class TraceSummary:
    """One trace in a list of recent traces: its root span's name, duration and status."""

    trace_id: str
    root_name: str
    duration_ms: float
    start_unix_nano: int
    status: str
    span_count: int


def start_order(span: SpanRecord) -> tuple[int, int]:
    """Sort key of spans in a trace: by start time, the longer first on a tie (parents first)."""
    return span.start_unix_nano, -span.end_unix_nano


def attr_text(value: Any) -> str:
    """An attribute value as text (sequences comma-joined), as records and files hold it."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def span_from_readable(span: ReadableSpan) -> SpanRecord:
    """Convert an SDK span (finished) into a record; attribute values become strings."""
    ctx = span.context
    assert ctx is not None
    resource = span.resource.attributes if span.resource is not None else {}
    status_code = span.status.status_code
    status = "ERROR" if status_code is StatusCode.ERROR else status_code.name
    links = tuple(
        LinkRecord(format_trace_id(link.context.trace_id), format_span_id(link.context.span_id))
        for link in span.links
    )
    return SpanRecord(
        trace_id=format_trace_id(ctx.trace_id),
        span_id=format_span_id(ctx.span_id),
        parent_span_id=format_span_id(span.parent.span_id) if span.parent is not None else "",
        name=span.name,
        service=str(resource.get("service.name", "")),
        instance=str(resource.get("service.instance.id", "")),
        start_unix_nano=int(span.start_time or 0),
        end_unix_nano=int(span.end_time or span.start_time or 0),
        status=status,
        status_message=span.status.description or "",
        attributes={k: attr_text(v) for k, v in (span.attributes or {}).items()},
        links=links,
        kind=span.kind.name,
    )


def span_to_dict(span: SpanRecord) -> dict[str, Any]:
    """The JSON object written per line by the JSON-lines exporter."""
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "service": span.service,
        "instance": span.instance,
        "kind": span.kind,
        "start_unix_nano": span.start_unix_nano,
        "end_unix_nano": span.end_unix_nano,
        "status": span.status,
        "status_message": span.status_message,
        "attributes": dict(span.attributes),
        "links": [{"trace_id": ln.trace_id, "span_id": ln.span_id} for ln in span.links],
    }


def span_from_dict(data: Mapping[str, Any]) -> SpanRecord:
    """Inverse of span_to_dict; raises KeyError/TypeError/ValueError on a malformed object."""
    return SpanRecord(
        trace_id=str(data["trace_id"]),
        span_id=str(data["span_id"]),
        parent_span_id=str(data.get("parent_span_id", "")),
        name=str(data["name"]),
        service=str(data.get("service", "")),
        instance=str(data.get("instance", "")),
        kind=str(data.get("kind", "INTERNAL")),
        start_unix_nano=int(data["start_unix_nano"]),
        end_unix_nano=int(data["end_unix_nano"]),
        status=str(data.get("status", "UNSET")),
        status_message=str(data.get("status_message", "")),
        attributes={str(k): str(v) for k, v in dict(data.get("attributes", {})).items()},
        links=tuple(
            LinkRecord(str(ln["trace_id"]), str(ln["span_id"])) for ln in data.get("links", ())
        ),
    )


def root_spans(spans: Sequence[SpanRecord], trace_id: str = "") -> list[SpanRecord]:
    """Spans of `trace_id` (default: any) whose parent is not among `spans`, earliest first."""
    ids = {s.span_id for s in spans}
    roots = [
        s for s in spans if (not trace_id or s.trace_id == trace_id) and s.parent_span_id not in ids
    ]
    return sorted(roots, key=start_order)


def summarize(trace_id: str, spans: Iterable[SpanRecord]) -> TraceSummary | None:
    """Summary of one trace: the root is its earliest parentless span (longest on a tie)."""
    own = [s for s in spans if s.trace_id == trace_id]
    if not own:
        return None
    roots = root_spans(own, trace_id)
    root = roots[0] if roots else min(own, key=lambda s: s.start_unix_nano)
    start = min(s.start_unix_nano for s in own)
    end = max(s.end_unix_nano for s in own)
    return TraceSummary(
        trace_id=trace_id,
        root_name=root.name,
        duration_ms=root.duration_ms if roots else max(0, end - start) / 1e6,
        start_unix_nano=root.start_unix_nano,
        status=root.status,
        span_count=len(own),
    )
