"""A JSON-lines span exporter (one finished span per line) and a reader that merges the files of
every process in a trace directory into one trace.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from json.encoder import encode_basestring_ascii
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from meshserve.telemetry.records import SpanRecord, attr_text, span_from_dict, start_order

__all__ = ["JsonLinesSpanExporter", "read_spans", "read_trace", "trace_file_name"]

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def trace_file_name(service_name: str, instance_id: str, pid: int | None = None) -> str:
    """``<service>-<instance>-<pid>.jsonl`` with characters unsafe in file names replaced."""
    pid = os.getpid() if pid is None else pid
    return _UNSAFE.sub("_", f"{service_name}-{instance_id}-{pid}") + ".jsonl"


# The C string encoder json.dumps uses (quotes and escapes; ASCII output).
_str: Callable[[str], str] = encode_basestring_ascii


class _LineWriter:
    """Formats finished SDK spans as JSON lines, straight from the span: no intermediate
    SpanRecord or dict, one f-string with every string escaped by the C JSON string encoder; the
    resource's service name and instance id are encoded once per resource. The object written is
    exactly ``records.span_to_dict(records.span_from_readable(span))``.
    """

    def __init__(self) -> None:
        self._resource: Resource | None = None
        self._names = ("", "")

    def _resource_names(self, resource: Resource | None) -> tuple[str, str]:
        if resource is not self._resource:
            attrs = resource.attributes if resource is not None else {}
            self._resource = resource
            self._names = (
                _str(str(attrs.get("service.name", ""))),
                _str(str(attrs.get("service.instance.id", ""))),
            )
        return self._names

    def line(self, span: ReadableSpan) -> str:
        ctx = span.context
        assert ctx is not None
        parent = span.parent
        service, instance = self._resource_names(span.resource)
        status = span.status
        code = status.status_code
        start = span.start_time or 0
        attributes = span.attributes
        links = span.links
        attrs = (
            ",".join(
                [
                    f"{_str(k)}:{_str(v if type(v) is str else attr_text(v))}"
                    for k, v in attributes.items()
                ]
            )
            if attributes
            else ""
        )
        linked = (
            ",".join(
                [
                    f'{{"trace_id":"{ln.context.trace_id:032x}",'
                    f'"span_id":"{ln.context.span_id:016x}"}}'
                    for ln in links
                ]
            )
            if links
            else ""
        )
        return (
            f'{{"trace_id":"{ctx.trace_id:032x}","span_id":"{ctx.span_id:016x}",'
            f'"parent_span_id":"{"" if parent is None else f"{parent.span_id:016x}"}",'
            f'"name":{_str(span.name)},"service":{service},"instance":{instance},'
            f'"kind":"{span.kind.name}","start_unix_nano":{start},'
            f'"end_unix_nano":{span.end_time or start},'
            f'"status":"{"ERROR" if code is StatusCode.ERROR else code.name}",'
            f'"status_message":{_str(status.description or "")},'
            f'"attributes":{{{attrs}}},"links":[{linked}]}}\n'
        )


class JsonLinesSpanExporter(SpanExporter):
    """Appends spans to `path`, one JSON object per line (see records.span_to_dict).

    Runs on the batch span processor's worker thread, off the request path; each line is built
    straight from the SDK span and encoded by the C JSON encoder (~3 us a span). Each export
    writes whole lines in one call, so files from concurrent processes never mix; readers
    tolerate a torn last line.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in shutdown
        self._lock = threading.Lock()
        self._closed = False
        self._lines = _LineWriter()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        line = self._lines.line
        text = "".join([line(s) for s in spans])
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
        frontier = {
            key
            for key, s in everything.items()
            if key not in chosen and (s.trace_id, s.parent_span_id) in frontier
        }
    return sorted(chosen.values(), key=start_order)
