"""A bounded in-memory buffer of recent traces: a SpanProcessor that keeps the last N traces.

Spans are grouped by trace id in arrival order; when a span of a new trace arrives and N traces
are held, the trace that was *started* longest ago is evicted (FIFO on first span). Each trace
keeps at most `max_spans_per_trace` spans. A span with links into another buffered trace (a
batch span linking the requests it served) is also listed with that trace, so a request's trace
shows the batch that executed it. ``on_end`` only appends a reference under a lock; conversion
to records happens when a trace is read.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import format_trace_id

from meshserve.errors import InvalidInputError, NotFoundError
from meshserve.telemetry.records import (
    SpanRecord,
    TraceSummary,
    span_from_readable,
    start_order,
    summarize,
)

__all__ = ["TraceBuffer", "get_trace", "set_buffer", "slowest"]

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class _Trace:
    spans: list[ReadableSpan] = field(default_factory=list)
    linked: list[ReadableSpan] = field(default_factory=list)


class TraceBuffer(SpanProcessor):
    """Keeps the spans of the last `max_traces` traces; thread safe."""

    def __init__(self, max_traces: int = 256, max_spans_per_trace: int = 512) -> None:
        if max_traces < 1 or max_spans_per_trace < 1:
            raise ValueError("max_traces and max_spans_per_trace must be >= 1")
        self.max_traces = max_traces
        self.max_spans_per_trace = max_spans_per_trace
        self._traces: OrderedDict[int, _Trace] = OrderedDict()
        self._lock = threading.Lock()
        self.dropped_spans = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        with self._lock:
            entry = self._entry(ctx.trace_id)
            if len(entry.spans) < self.max_spans_per_trace:
                entry.spans.append(span)
            else:
                self.dropped_spans += 1
            for link in span.links:
                if link.context.trace_id == ctx.trace_id:
                    continue
                # The linked request is usually still running (a batch ends before the calls it
                # served), so its trace is created here if it is not buffered yet.
                other = self._entry(link.context.trace_id)
                if len(other.linked) < self.max_spans_per_trace and (
                    not other.linked or other.linked[-1] is not span
                ):
                    other.linked.append(span)

    def _entry(self, trace_id: int) -> _Trace:
        entry = self._traces.get(trace_id)
        if entry is None:
            entry = self._traces[trace_id] = _Trace()
            while len(self._traces) > self.max_traces:
                self._traces.popitem(last=False)
        return entry

    def shutdown(self) -> None:
        with self._lock:
            self._traces.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._traces)

    def get_trace(self, trace_id: str) -> list[SpanRecord]:
        """Spans of one trace (plus spans of other traces linking into it), by start time.

        Raises InvalidInputError for a malformed id and NotFoundError when it is not buffered.
        """
        key = _parse_trace_id(trace_id)
        with self._lock:
            entry = self._traces.get(key)
            spans = [] if entry is None else [*entry.spans, *entry.linked]
        if not spans:
            raise NotFoundError(
                f"trace {trace_id} is not among the {self.max_traces} most recent traces "
                "kept by this process"
            )
        records = [span_from_readable(s) for s in spans]
        return sorted(records, key=start_order)

    def slowest(self, n: int = 10) -> list[TraceSummary]:
        """Summaries of the `n` buffered traces with the longest root span, slowest first."""
        if n < 0:
            raise InvalidInputError(f"slowest: n must be >= 0, got {n}")
        with self._lock:
            snapshot = [(tid, list(e.spans)) for tid, e in self._traces.items() if e.spans]
        summaries: list[TraceSummary] = []
        for tid, spans in snapshot:
            summary = summarize(format_trace_id(tid), [span_from_readable(s) for s in spans])
            if summary is not None:
                summaries.append(summary)
        summaries.sort(key=lambda s: s.duration_ms, reverse=True)
        return summaries[:n]


def _parse_trace_id(trace_id: str) -> int:
    text = trace_id.strip().lower()
    if not _TRACE_ID.match(text) or int(text, 16) == 0:
        raise InvalidInputError(
            f"trace id {trace_id!r} is malformed; "
            "expected 32 lowercase hex characters, not all zero"
        )
    return int(text, 16)


_installed: TraceBuffer | None = None


def set_buffer(buffer: TraceBuffer | None) -> None:
    """Make `buffer` the one `get_trace`/`slowest` read (setup_telemetry does this)."""
    global _installed
    _installed = buffer


def get_trace(trace_id: str) -> list[SpanRecord]:
    """Spans of a recent trace held by this process (see TraceBuffer.get_trace).

    Raises NotFoundError when tracing or the buffer is off in this process.
    """
    if _installed is None:
        raise NotFoundError(
            "this process keeps no trace buffer (tracing is off or MESHSERVE_TRACE_BUFFER=0)"
        )
    return _installed.get_trace(trace_id)


def slowest(n: int = 10) -> list[TraceSummary]:
    """The `n` slowest recent traces held by this process; empty when no buffer is installed."""
    if _installed is None:
        return []
    return _installed.slowest(n)
