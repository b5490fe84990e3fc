"""Observability for every meshserve process: OpenTelemetry tracing, Prometheus metrics, and a
buffer of recent traces the orchestrator serves through Admin.GetTrace/ListTraces.

At a process edge::

    telemetry = setup_telemetry("orchestrator", instance_id, __version__, buffer_max_traces=256)
    server = grpc.aio.server(interceptors=server_interceptors())
    channel = grpc.aio.insecure_channel(target, interceptors=client_interceptors())
    metrics_port = start_metrics_server(args.metrics_port, args.host)
    ...
    telemetry.shutdown()

Everywhere else, only the OpenTelemetry API (``trace.get_tracer(__name__)``), the one tracing
switch (``tracing_enabled()``, with ``NO_SPAN`` for the path where it is off) and the helpers
for stream items and batches (``current_traceparent``, ``start_request_span``,
``start_batch_span``).
"""

from meshserve.telemetry._state import EMPTY_CONTEXT, NO_SPAN, tracing_enabled
from meshserve.telemetry.buffer import TraceBuffer, get_trace, slowest
from meshserve.telemetry.config import TelemetryConfig
from meshserve.telemetry.convert import (
    spans_from_proto,
    summaries_from_proto,
    trace_to_proto,
    traces_to_proto,
)
from meshserve.telemetry.interceptors import client_interceptors, server_interceptors
from meshserve.telemetry.jsonl import JsonLinesSpanExporter, read_spans, read_trace
from meshserve.telemetry.metrics import (
    METRICS_OFF,
    check_metric_names,
    set_build_info,
    start_metrics_server,
    stop_metrics_servers,
)
from meshserve.telemetry.propagation import (
    context_from_traceparent,
    current_traceparent,
    links_from_traceparents,
    span_context_from_traceparent,
    start_batch_span,
    start_request_span,
    traceparent_of,
    traceparent_sampled,
)
from meshserve.telemetry.provider import Telemetry, build_tracer_provider, setup_telemetry
from meshserve.telemetry.records import LinkRecord, SpanRecord, TraceSummary
from meshserve.telemetry.render import render_slowest, render_waterfall

__all__ = [
    "EMPTY_CONTEXT",
    "METRICS_OFF",
    "NO_SPAN",
    "JsonLinesSpanExporter",
    "LinkRecord",
    "SpanRecord",
    "Telemetry",
    "TelemetryConfig",
    "TraceBuffer",
    "TraceSummary",
    "build_tracer_provider",
    "check_metric_names",
    "client_interceptors",
    "context_from_traceparent",
    "current_traceparent",
    "get_trace",
    "links_from_traceparents",
    "read_spans",
    "read_trace",
    "render_slowest",
    "render_waterfall",
    "server_interceptors",
    "set_build_info",
    "setup_telemetry",
    "slowest",
    "span_context_from_traceparent",
    "spans_from_proto",
    "start_batch_span",
    "start_metrics_server",
    "start_request_span",
    "stop_metrics_servers",
    "summaries_from_proto",
    "trace_to_proto",
    "traceparent_of",
    "traceparent_sampled",
    "traces_to_proto",
    "tracing_enabled",
]
