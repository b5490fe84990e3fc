"""A real OTLP/gRPC trace receiver for tests: ``TraceService/Export`` from the
``opentelemetry-proto`` service definitions, served by grpc.aio on a loopback port in a thread of
its own (so it keeps receiving while the test's own event loops come and go).

Processes export to it with ``OTEL_EXPORTER_OTLP_ENDPOINT=<receiver.endpoint>`` through the
SDK's real OTLP exporter; received spans become `SpanRecord`s (attribute values as strings, like
the JSON-lines files), so the same trace checks read both.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from meshserve.telemetry import LinkRecord, SpanRecord

__all__ = ["OtlpReceiver"]

_STATUS = {
    trace_pb2.Status.STATUS_CODE_UNSET: "UNSET",
    trace_pb2.Status.STATUS_CODE_OK: "OK",
    trace_pb2.Status.STATUS_CODE_ERROR: "ERROR",
}


def _value(value: common_pb2.AnyValue) -> str:
    kind = value.WhichOneof("value")
    return "" if kind is None else str(getattr(value, kind))


def _attributes(pairs: Any) -> dict[str, str]:
    return {kv.key: _value(kv.value) for kv in pairs}


def spans_of(request: trace_service_pb2.ExportTraceServiceRequest) -> list[SpanRecord]:
    """The spans of one Export call as SpanRecords."""
    out = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(
                    SpanRecord(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        service=resource.get("service.name", ""),
                        instance=resource.get("service.instance.id", ""),
                        start_unix_nano=span.start_time_unix_nano,
                        end_unix_nano=span.end_time_unix_nano,
                        status=_STATUS.get(span.status.code, "UNSET"),
                        status_message=span.status.message,
                        attributes=_attributes(span.attributes),
                        links=tuple(
                            LinkRecord(ln.trace_id.hex(), ln.span_id.hex()) for ln in span.links
                        ),
                        kind=trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                    )
                )
    return out


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """``with OtlpReceiver() as receiver:`` then point exporters at ``receiver.endpoint``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[SpanRecord] = []
        self.exports = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._port = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = spans_of(request)
        with self._lock:
            self._spans.extend(received)
            self.exports += 1
        return trace_service_pb2.ExportTraceServiceResponse()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)
        self._port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._ready.set()
        await self._stop.wait()
        await server.stop(grace=1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def spans(self) -> list[SpanRecord]:
        with self._lock:
            return list(self._spans)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("OTLP receiver did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)
