"""Install OpenTelemetry tracing in a process: ``setup_telemetry`` at the process edge.

Until it runs (or when tracing is switched off) the OpenTelemetry API every module uses is a
no-op, and ``server_interceptors()``/``client_interceptors()`` return no interceptors at all.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from meshserve.telemetry._state import set_tracing_enabled, tracing_enabled
from meshserve.telemetry.buffer import TraceBuffer, set_buffer
from meshserve.telemetry.config import TelemetryConfig
from meshserve.telemetry.jsonl import JsonLinesSpanExporter, trace_file_name

__all__ = ["Telemetry", "build_tracer_provider", "setup_telemetry", "tracing_enabled"]

logger = logging.getLogger(__name__)

_installed: list[TracerProvider] = []  # what setup_telemetry installed (at most one)


@dataclass(frozen=True)
class Telemetry:
    """What setup_telemetry installed; call ``shutdown()`` when the process stops."""

    config: TelemetryConfig
    provider: TracerProvider | None = None
    buffer: TraceBuffer | None = None
    trace_file: str = ""

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        if self.provider is None:
            return True
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Export what is pending and stop the exporters (idempotent)."""
        if self.provider is not None:
            self.provider.shutdown()


def build_tracer_provider(
    config: TelemetryConfig,
    resource: Resource,
    *,
    exporter: SpanExporter | None = None,
    trace_file: str = "",
) -> tuple[TracerProvider, TraceBuffer | None]:
    """A TracerProvider with the processors `config` asks for (not installed globally).

    `exporter` (e.g. an InMemorySpanExporter in tests) is added behind a BatchSpanProcessor, next
    to the OTLP/console/JSON-lines exporters the config selects. Exporters run on the batch
    processors' worker threads, sized by ``config.export_*``; the request path only appends the
    finished span to their queues (and to the trace buffer).
    """
    sampler = None
    if config.sample_ratio is not None:
        sampler = ParentBased(TraceIdRatioBased(config.sample_ratio))
    provider = TracerProvider(resource=resource, sampler=sampler)
    processors: list[SpanProcessor] = []
    buffer = None
    if config.buffer_max_traces > 0:
        buffer = TraceBuffer(config.buffer_max_traces, config.buffer_max_spans_per_trace)
        processors.append(buffer)
    exporters: list[SpanExporter] = [] if exporter is None else [exporter]
    if config.otlp:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    if config.console:
        exporters.append(ConsoleSpanExporter())
    if trace_file:
        exporters.append(JsonLinesSpanExporter(trace_file))
    processors.extend(
        BatchSpanProcessor(
            e,
            max_queue_size=config.export_queue_max_spans,
            schedule_delay_millis=config.export_delay_ms,
            max_export_batch_size=config.export_batch_max_spans,
        )
        for e in exporters
    )
    for processor in processors:
        provider.add_span_processor(processor)
    return provider, buffer


def setup_telemetry(
    service_name: str,
    instance_id: str,
    version: str,
    *,
    exporter: SpanExporter | None = None,
    config: TelemetryConfig | None = None,
    buffer_max_traces: int = 0,
) -> Telemetry:
    """Install tracing for this process and return a handle to shut it down.

    Resource attributes: ``service.name``, ``service.instance.id``, ``service.version``.
    Exporters follow the environment (see TelemetryConfig.from_env): OTLP gRPC when
    ``OTEL_EXPORTER_OTLP_ENDPOINT``/``OTEL_TRACES_EXPORTER=otlp`` say so, ``console``, a JSON-lines
    file (``MESHSERVE_TRACE_FILE``) or a per-process file in ``MESHSERVE_TRACE_DIR``; `exporter`
    is added too. ``OTEL_SDK_DISABLED=true`` or ``MESHSERVE_TRACING=off`` installs nothing.
    `buffer_max_traces` > 0 keeps that many recent traces for ``get_trace``/``slowest``
    (the orchestrator does; ``MESHSERVE_TRACE_BUFFER`` overrides it); it is only used when
    `config` is None (otherwise pass ``TelemetryConfig.from_env(buffer_max_traces=N)``).

    With nothing to export to (no exporter, file or buffer) nothing is installed either.
    Call it once per process: OpenTelemetry allows one global tracer provider; a second call
    logs a warning and returns a handle that owns nothing.
    """
    config = config or TelemetryConfig.from_env(buffer_max_traces=buffer_max_traces)
    if not config.active(extra_exporter=exporter is not None):
        logger.info(
            "tracing is off (%s)",
            "nothing to export to" if config.enabled else "OTEL_SDK_DISABLED / MESHSERVE_TRACING",
        )
        return Telemetry(config=config)
    if _installed:
        logger.warning("setup_telemetry called twice in one process: keeping the first provider")
        return Telemetry(config=config)
    trace_file = config.trace_file
    if not trace_file and config.trace_dir:
        trace_file = str(Path(config.trace_dir) / trace_file_name(service_name, instance_id))
    resource = Resource.create(
        {
            "service.name": service_name,
            "service.instance.id": instance_id,
            "service.version": version,
            "process.pid": os.getpid(),
        }
    )
    provider, buffer = build_tracer_provider(
        config, resource, exporter=exporter, trace_file=trace_file
    )
    trace.set_tracer_provider(provider)
    _installed.append(provider)
    set_buffer(buffer)
    set_tracing_enabled(True)
    logger.info(
        "tracing on: service=%s instance=%s otlp=%s console=%s file=%s buffer=%d",
        service_name,
        instance_id,
        config.otlp,
        config.console,
        trace_file or "-",
        config.buffer_max_traces,
    )
    return Telemetry(config=config, provider=provider, buffer=buffer, trace_file=trace_file)
