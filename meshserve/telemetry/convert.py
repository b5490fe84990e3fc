"""Trace records <-> ``meshserve.v1.admin_pb2`` (Admin.GetTrace / Admin.ListTraces).

The orchestrator's Admin servicer answers with::

    admin_pb2.Trace        <- trace_to_proto(trace_id, telemetry.get_trace(trace_id))
    ListTracesResponse     <- traces_to_proto(telemetry.slowest(request.slowest or 10))

and ``meshserve trace`` reads them back with spans_from_proto / summaries_from_proto.
"""

from __future__ import annotations

from collections.abc import Iterable

from meshserve.messages import fill
from meshserve.telemetry.records import LinkRecord, SpanRecord, TraceSummary
from meshserve.v1 import admin_pb2

__all__ = [
    "span_to_proto",
    "spans_from_proto",
    "summaries_from_proto",
    "trace_to_proto",
    "traces_to_proto",
]


def span_to_proto(span: SpanRecord) -> admin_pb2.SpanRecord:
    attributes = dict(span.attributes)
    if span.instance:
        attributes.setdefault("service.instance.id", span.instance)
    if span.kind:
        attributes.setdefault("span.kind", span.kind)
    # SpanRecord has no trace id field: a span of another trace (a batch linking into this one)
    # keeps its own trace id as an attribute.
    attributes.setdefault("trace_id", span.trace_id)
    return admin_pb2.SpanRecord(
        span_id=span.span_id,
        parent_span_id=span.parent_span_id,
        name=span.name,
        service=span.service,
        start_unix_nano=span.start_unix_nano,
        end_unix_nano=span.end_unix_nano,
        status=span.status,
        status_message=span.status_message,
        attributes=attributes,
        linked_span_ids=[link.span_id for link in span.links],
    )


def trace_to_proto(trace_id: str, spans: Iterable[SpanRecord]) -> admin_pb2.Trace:
    return admin_pb2.Trace(trace_id=trace_id, spans=[span_to_proto(s) for s in spans])


def traces_to_proto(summaries: Iterable[TraceSummary]) -> admin_pb2.ListTracesResponse:
    return admin_pb2.ListTracesResponse(traces=[fill(admin_pb2.TraceSummary, s) for s in summaries])


def spans_from_proto(message: admin_pb2.Trace) -> list[SpanRecord]:
    spans = []
    for p in message.spans:
        attributes = dict(p.attributes)
        trace_id = attributes.pop("trace_id", message.trace_id)
        instance = attributes.pop("service.instance.id", "")
        kind = attributes.pop("span.kind", "INTERNAL")
        spans.append(
            SpanRecord(
                trace_id=trace_id,
                span_id=p.span_id,
                parent_span_id=p.parent_span_id,
                name=p.name,
                service=p.service,
                instance=instance,
                kind=kind,
                start_unix_nano=p.start_unix_nano,
                end_unix_nano=p.end_unix_nano,
                status=p.status,
                status_message=p.status_message,
                attributes=attributes,
                # The proto keeps span ids only; links into this trace are what matter here.
                links=tuple(LinkRecord(message.trace_id, sid) for sid in p.linked_span_ids),
            )
        )
    return spans


def summaries_from_proto(message: admin_pb2.ListTracesResponse) -> list[TraceSummary]:
    return [
        TraceSummary(
            trace_id=t.trace_id,
            root_name=t.root_name,
            duration_ms=t.duration_ms,
            start_unix_nano=t.start_unix_nano,
            status=t.status,
            span_count=0,
        )
        for t in message.traces
    ]
