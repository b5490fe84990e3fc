"""The terminal waterfall and the slowest-traces table."""

from __future__ import annotations

from meshserve.telemetry import LinkRecord, SpanRecord, TraceSummary
from meshserve.telemetry.render import render_slowest, render_waterfall

TID = "a" * 32
OTHER = "b" * 32
MS = 1_000_000


def _span(sid, parent, name, start_ms, end_ms, service="orchestrator", **kw):
    return SpanRecord(
        trace_id=kw.pop("trace_id", TID),
        span_id=sid,
        parent_span_id=parent,
        name=name,
        service=service,
        start_unix_nano=start_ms * MS,
        end_unix_nano=end_ms * MS,
        **kw,
    )


def test_waterfall_nests_children_marks_errors_and_draws_linked_batches():
    spans = [
        _span("1" * 16, "", "plan demo", 0, 100),
        _span("2" * 16, "1" * 16, "step clf", 10, 90),
        _span(
            "3" * 16,
            "2" * 16,
            "model.call digits",
            12,
            80,
            attributes={"meshserve.endpoint": "127.0.0.1:5000", "meshserve.attempt": "1"},
        ),
        _span("4" * 16, "3" * 16, "modelsvc.request", 20, 70, service="digits"),
        _span(
            "5" * 16,
            "",
            "modelsvc.batch",
            30,
            60,
            service="digits",
            trace_id=OTHER,
            links=(LinkRecord(TID, "4" * 16),),
            attributes={"meshserve.batch_size": "8"},
        ),
        _span(
            "6" * 16,
            "1" * 16,
            "step check",
            90,
            100,
            status="ERROR",
            status_message="InvalidInputError: bad row",
        ),
    ]
    text = render_waterfall(TID, spans, bar_width=20)
    lines = text.splitlines()
    assert lines[0].startswith(f"trace {TID}  100.00 ms  6 spans  1 errors")
    assert "services: digits, orchestrator" in lines[0]
    names = [ln for ln in lines[2:] if ln.endswith("|")]
    labels = [ln[:46].rstrip() for ln in names]
    assert labels == [
        "plan demo",
        "  step clf",
        "    model.call digits",
        "      modelsvc.request",
        "        ~> modelsvc.batch",
        "  step check !",
    ]
    assert "meshserve.endpoint=127.0.0.1:5000" in text and "meshserve.batch_size=8" in text
    assert "ERROR: InvalidInputError: bad row" in text
    root_line = names[0]
    assert root_line.endswith("|" + "=" * 20 + "|")
    batch_line = names[4]
    assert batch_line.endswith("|" + " " * 6 + "=" * 6 + " " * 8 + "|")


def test_waterfall_without_spans_and_slowest_table():
    assert render_waterfall(TID, []) == f"trace {TID}: no spans"
    assert render_slowest([]) == "no traces recorded yet"
    table = render_slowest(
        [TraceSummary(TID, "plan demo", 12.5, 1_700_000_000 * 10**9, "ERROR", 3)]
    )
    header, row = table.splitlines()
    assert header.split()[:2] == ["trace", "id"]
    assert row.startswith(TID) and "12.50" in row and "ERROR" in row
    assert "2023-11-14 22:13:20.000" in row and row.endswith("plan demo")
