"""TraceBuffer: bounded, grouped by trace, slowest by root duration, links into other traces."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, Status, StatusCode, format_trace_id

from meshserve.errors import InvalidInputError, NotFoundError
from meshserve.telemetry import TraceBuffer, trace_to_proto, traces_to_proto
from meshserve.telemetry.convert import spans_from_proto, summaries_from_proto


def _tracer(buffer: TraceBuffer):
    provider = TracerProvider(resource=Resource.create({"service.name": "orchestrator"}))
    provider.add_span_processor(buffer)
    return provider.get_tracer("test")


def _trace(tracer, name: str, duration_ns: int, start_ns: int = 1_000_000_000) -> str:
    root = tracer.start_span(f"plan {name}", start_time=start_ns)
    with tracer.start_as_current_span("step a", context=_ctx(root), start_time=start_ns + 10):
        pass
    root.end(end_time=start_ns + duration_ns)
    return format_trace_id(root.get_span_context().trace_id)


def _ctx(span):
    from opentelemetry import trace

    return trace.set_span_in_context(span)


def test_groups_spans_by_trace_and_keeps_parent_child():
    buffer = TraceBuffer(max_traces=4)
    tracer = _tracer(buffer)
    tid = _trace(tracer, "p", 5_000_000)
    spans = buffer.get_trace(tid)
    assert [s.name for s in spans] == ["plan p", "step a"]
    root, child = spans
    assert child.parent_span_id == root.span_id and root.parent_span_id == ""
    assert {s.service for s in spans} == {"orchestrator"}


def test_evicts_oldest_trace_beyond_capacity():
    buffer = TraceBuffer(max_traces=3)
    tracer = _tracer(buffer)
    ids = [_trace(tracer, str(i), 1_000_000) for i in range(5)]
    assert len(buffer) == 3
    for old in ids[:2]:
        with pytest.raises(NotFoundError, match="not among the 3 most recent"):
            buffer.get_trace(old)
    for kept in ids[2:]:
        assert buffer.get_trace(kept)


def test_spans_per_trace_are_capped():
    buffer = TraceBuffer(max_traces=2, max_spans_per_trace=3)
    tracer = _tracer(buffer)
    with tracer.start_as_current_span("root") as root:
        for i in range(10):
            with tracer.start_as_current_span(f"s{i}"):
                pass
    tid = format_trace_id(root.get_span_context().trace_id)
    assert len(buffer.get_trace(tid)) == 3
    assert buffer.dropped_spans == 8


def test_slowest_orders_by_root_duration_and_reports_status():
    buffer = TraceBuffer(max_traces=10)
    tracer = _tracer(buffer)
    durations_ms = [3, 40, 1, 25, 7]
    ids = {_trace(tracer, str(d), d * 1_000_000): d for d in durations_ms}
    failing = tracer.start_span("plan bad", start_time=1)
    failing.set_status(Status(StatusCode.ERROR, "step x failed"))
    failing.end(end_time=1 + 2_000_000)
    top = buffer.slowest(3)
    assert [ids[s.trace_id] for s in top] == [40, 25, 7]
    assert top[0].root_name == "plan 40" and top[0].duration_ms == pytest.approx(40.0)
    statuses = {s.root_name: s.status for s in buffer.slowest(100)}
    assert statuses["plan bad"] == "ERROR" and statuses["plan 3"] == "UNSET"
    assert buffer.slowest(0) == []


def test_batch_span_linking_into_a_buffered_trace_is_listed_with_it():
    buffer = TraceBuffer(max_traces=10)
    tracer = _tracer(buffer)
    requests = [tracer.start_span(f"request {i}") for i in range(3)]
    batch = tracer.start_span("batch", links=[Link(r.get_span_context()) for r in requests])
    batch.end()
    for r in requests:
        r.end()
    for r in requests:
        tid = format_trace_id(r.get_span_context().trace_id)
        names = [s.name for s in buffer.get_trace(tid)]
        assert sorted(names) == sorted([r.name, "batch"])


def test_malformed_trace_id_is_invalid_input():
    buffer = TraceBuffer()
    for bad in ("xyz", "0" * 32, "a" * 31, ""):
        with pytest.raises(InvalidInputError, match="32 lowercase hex"):
            buffer.get_trace(bad)


def test_proto_round_trip():
    buffer = TraceBuffer(max_traces=4)
    tracer = _tracer(buffer)
    tid = _trace(tracer, "p", 5_000_000)
    spans = buffer.get_trace(tid)
    message = trace_to_proto(tid, spans)
    assert message.trace_id == tid and len(message.spans) == 2
    back = spans_from_proto(message)
    assert [(s.span_id, s.parent_span_id, s.name, s.service) for s in back] == [
        (s.span_id, s.parent_span_id, s.name, s.service) for s in spans
    ]
    listed = summaries_from_proto(traces_to_proto(buffer.slowest(5)))
    assert listed[0].trace_id == tid and listed[0].root_name == "plan p"
