"""A JSON-lines span exporter (one finished span per line) and a reader that merges the files of
every process in a trace directory into one trace.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from meshserve.telemetry.records import SpanRecord, span_from_dict, span_from_readable, span_to_dict

__all__ = ["JsonLinesSpanExporter", "read_spans", "read_trace", "trace_file_name"]

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def trace_file_name(service_name: str, instance_id: str, pid: int | None = None) -> str:
    """``<service>-<instance>-<pid>.jsonl`` with characters unsafe in file names replaced."""
    pid = os.getpid() if pid is None else pid
    return _UNSAFE.sub("_", f"{service_name}-{instance_id}-{pid}") + ".jsonl"


class JsonLinesSpanExporter(SpanExporter):
    """Appends spans to `path`, one JSON object per line (see records.span_to_dict).

    Each export writes whole lines in one call, so files from concurrent processes never mix;
    readers tolerate a torn last line.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in shutdown
        self._lock = threading.Lock()
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        text = "".join(
            json.dumps(span_to_dict(span_from_readable(s)), separators=(",", ":")) + "\n"
            for s in spans
        )
        with self._lock:
            if self._closed:
                return SpanExportResult.FAILURE
            try:
                self._file.write(text)
                self._file.flush()
            except OSError as exc:
                logger.warning("cannot write spans to %s: %s", self.path, exc)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            if not self._closed:
                self._file.flush()
        return True


def read_spans(paths: Iterable[str | os.PathLike[str]]) -> Iterator[SpanRecord]:
    """Every span in the given JSON-lines files (a file, or a directory of ``*.jsonl``).

    Malformed lines (a torn last line while a process is writing) are skipped with a debug log.
    """
    for entry in paths:
        path = Path(entry)
        files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
        for file in files:
            try:
                lines = file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                logger.warning("cannot read %s: %s", file, exc)
                continue
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    yield span_from_dict(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    logger.debug("%s:%d: skipping malformed span: %s", file, number, exc)


def read_trace(paths: Iterable[str | os.PathLike[str]], trace_id: str) -> list[SpanRecord]:
    """The spans of `trace_id` from every file, plus spans of other traces that link into it
    (batches) and their descendants; sorted by start time, duplicates removed."""
    trace_id = trace_id.strip().lower()
    everything = {(s.trace_id, s.span_id): s for s in read_spans(paths)}
    own = {key: s for key, s in everything.items() if s.trace_id == trace_id}
    own_ids = {s.span_id for s in own.values()}
    chosen = dict(own)
    frontier = {
        key
        for key, s in everything.items()
        if s.trace_id != trace_id
        and any(ln.trace_id == trace_id and ln.span_id in own_ids for ln in s.links)
    }
    while frontier:
        chosen.update({key: everything[key] for key in frontier})
        parents = {(tid, sid) for tid, sid in frontier}
        frontier = {
            key
            for key, s in everything.items()
            if key not in chosen and (s.trace_id, s.parent_span_id) in parents
        }
    return sorted(chosen.values(), key=lambda s: (s.start_unix_nano, -s.end_unix_nano))
