"""Terminal renderings of traces: a waterfall for one trace, a table of the slowest traces."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from meshserve.telemetry.records import SpanRecord, TraceSummary, start_order

__all__ = ["render_slowest", "render_waterfall"]

_LABEL_WIDTH = 46
_SERVICE_WIDTH = 18
_SHOWN_ATTRIBUTES = (
    "meshserve.model",
    "meshserve.endpoint",
    "meshserve.attempt",
    "meshserve.retry_reason",
    "meshserve.batch_size",
    "rpc.grpc.status_code",
)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _tree(spans: Sequence[SpanRecord]) -> tuple[list[SpanRecord], dict[str, list[SpanRecord]]]:
    """Roots and children. A span whose parent is absent but which links to a present span (a
    batch serving this trace's requests) is drawn under the first span it links to."""
    by_id = {s.span_id: s for s in spans}
    children: dict[str, list[SpanRecord]] = {}
    roots: list[SpanRecord] = []
    for span in spans:
        if span.parent_span_id in by_id and span.parent_span_id != span.span_id:
            children.setdefault(span.parent_span_id, []).append(span)
            continue
        anchor = next((sid for sid in span.linked_span_ids if sid in by_id), None)
        if anchor is not None and anchor != span.span_id:
            children.setdefault(anchor, []).append(span)
        else:
            roots.append(span)
    roots.sort(key=start_order)
    for kids in children.values():
        kids.sort(key=start_order)
    return roots, children


def _bar(span: SpanRecord, t0: int, total: int, width: int) -> str:
    if total <= 0:
        return "|" + "=" * width + "|"
    start = int((span.start_unix_nano - t0) / total * width)
    end = int((span.end_unix_nano - t0) / total * width)
    start = min(max(start, 0), width - 1)
    end = min(max(end, start + 1), width)
    return "|" + " " * start + "=" * (end - start) + " " * (width - end) + "|"


def render_waterfall(trace_id: str, spans: Sequence[SpanRecord], *, bar_width: int = 40) -> str:
    """A waterfall of `spans`: one line per span, indented by depth, with its service, offset
    from the trace start, duration and a bar; errors and key attributes on the line below."""
    if not spans:
        return f"trace {trace_id}: no spans"
    t0 = min(s.start_unix_nano for s in spans)
    t1 = max(s.end_unix_nano for s in spans)
    total = t1 - t0
    services = sorted({s.service for s in spans if s.service})
    errors = sum(1 for s in spans if s.status == "ERROR")
    lines = [
        f"trace {trace_id}  {total / 1e6:.2f} ms  {len(spans)} spans  "
        f"{errors} errors  services: {', '.join(services) or '-'}",
        f"{'span':<{_LABEL_WIDTH}} {'service':<{_SERVICE_WIDTH}} {'start ms':>9} "
        f"{'dur ms':>9}  timeline",
    ]
    roots, children = _tree(spans)
    seen: set[int] = set()

    def walk(span: SpanRecord, depth: int, via_link: bool) -> None:
        if id(span) in seen:  # a malformed file could make a cycle
            return
        seen.add(id(span))
        marker = "~> " if via_link else ""
        mark = " !" if span.status == "ERROR" else ""
        label = _clip("  " * depth + marker + span.name + mark, _LABEL_WIDTH)
        service = _clip(span.service or "-", _SERVICE_WIDTH)
        offset_ms = (span.start_unix_nano - t0) / 1e6
        lines.append(
            f"{label:<{_LABEL_WIDTH}} {service:<{_SERVICE_WIDTH}} {offset_ms:>9.2f} "
            f"{span.duration_ms:>9.2f}  {_bar(span, t0, total, bar_width)}"
        )
        notes = [f"{k}={span.attributes[k]}" for k in _SHOWN_ATTRIBUTES if k in span.attributes]
        if span.links:
            notes.append(f"links={len(span.links)}")
        if span.status == "ERROR":
            notes.append(f"ERROR: {span.status_message or '(no message)'}")
        if notes:
            lines.append(" " * (2 * depth + 4) + _clip("  ".join(notes), 110))
        for child in children.get(span.span_id, ()):
            walk(child, depth + 1, child.parent_span_id != span.span_id)

    for root in roots:
        walk(root, 0, False)
    return "\n".join(lines)


def render_slowest(summaries: Sequence[TraceSummary]) -> str:
    """A table of traces, slowest first as given."""
    if not summaries:
        return "no traces recorded yet"
    lines = [f"{'trace id':<32}  {'duration ms':>11}  {'status':<6}  {'started (UTC)':<23}  root"]
    for s in summaries:
        started = datetime.fromtimestamp(s.start_unix_nano / 1e9, tz=UTC).strftime(
            "%Y-%m-%d %H:%M:%S.%f"
        )[:-3]
        lines.append(
            f"{s.trace_id:<32}  {s.duration_ms:>11.2f}  {s.status:<6}  {started:<23}  {s.root_name}"
        )
    return "\n".join(lines)
