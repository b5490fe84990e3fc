"""Telemetry settings, read from the environment once at the process edge.

The standard OpenTelemetry variables keep their meaning:

- ``OTEL_SDK_DISABLED=true``: no tracer provider is installed; the API stays a no-op.
- ``OTEL_TRACES_EXPORTER``: comma-separated ``otlp``, ``console``, ``none``.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: turn on OTLP gRPC export
  when ``OTEL_TRACES_EXPORTER`` is unset (the exporter reads the rest of ``OTEL_EXPORTER_OTLP_*``).
- ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``:
  the batch span processor's delay and sizes (defaults below, larger than the SDK's, so a busy
  process exports in few large batches and does not drop spans at thousands of spans a second).
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: the SDK's sampler. When unset,
  meshserve samples like ``parentbased_traceidratio`` with ratio ``MESHSERVE_TRACE_SAMPLE_RATIO``
  (default 0.1): a caller's sampled traceparent is always followed (so a client that traces a
  request gets every hop of it), and 1 in 10 requests that arrive without one start a recorded
  trace. A trace is recorded by every process or by none, and sampled-out requests cost about
  what tracing off costs (recording every span costs ~40% of orchestrator throughput on 2 cores).
  ``OTEL_TRACES_SAMPLER=parentbased_always_on`` records everything.

meshserve adds:

- ``MESHSERVE_TRACING=off``: same as ``OTEL_SDK_DISABLED=true``.
- ``MESHSERVE_TRACE_FILE=PATH``: append every finished span to PATH as one JSON object per line.
- ``MESHSERVE_TRACE_DIR=DIR``: the same, into ``DIR/<service>-<instance>-<pid>.jsonl``; the
  ``meshserve trace`` command merges every process's file in DIR.
- ``MESHSERVE_TRACE_BUFFER=N``: keep the last N traces in memory (0 = no buffer).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["TelemetryConfig"]

_FALSE = {"0", "false", "no", "off", "disabled"}
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class TelemetryConfig:
    """What a process exports and keeps.

    Attributes:
        enabled: install a tracer provider at all; False leaves the OpenTelemetry API a no-op.
        otlp: export with OTLP gRPC (endpoint and headers from ``OTEL_EXPORTER_OTLP_*``).
        console: print spans on stdout (development only).
        trace_file: append spans as JSON lines to this file ("" = off).
        trace_dir: append spans as JSON lines to a per-process file in this directory ("" = off).
        buffer_max_traces: traces kept in memory for ``get_trace``/``slowest`` (0 = none).
        buffer_max_spans_per_trace: spans kept per buffered trace; later ones are dropped.
        export_delay_ms: longest time a finished span waits before it is exported.
        export_queue_max_spans: spans waiting for export; beyond it new spans are dropped.
        export_batch_max_spans: spans per export call (a full batch is exported at once).
        sample_ratio: parent-based head sampling ratio (None: OTEL_TRACES_SAMPLER decides).
    """

    enabled: bool = True
    otlp: bool = False
    console: bool = False
    trace_file: str = ""
    trace_dir: str = ""
    buffer_max_traces: int = 0
    buffer_max_spans_per_trace: int = 512
    export_delay_ms: int = 1000
    export_queue_max_spans: int = 16384
    export_batch_max_spans: int = 2048
    # Head sampling ratio for requests without a sampled parent; None = the SDK reads
    # OTEL_TRACES_SAMPLER itself.
    sample_ratio: float | None = None

    @property
    def exports(self) -> bool:
        """Whether finished spans go anywhere (an exporter or the buffer)."""
        return (
            self.otlp
            or self.console
            or bool(self.trace_file or self.trace_dir)
            or (self.buffer_max_traces > 0)
        )

    def active(self, extra_exporter: bool = False) -> bool:
        """Install a provider only when it is enabled and spans have somewhere to go: a process
        with nothing to export pays nothing for tracing."""
        return self.enabled and (self.exports or extra_exporter)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, buffer_max_traces: int = 0
    ) -> TelemetryConfig:
        """Read the ``OTEL_*``/``MESHSERVE_*`` variables described in the module docstring.

        `buffer_max_traces` is the process's default (the orchestrator keeps a buffer, model
        services do not); ``MESHSERVE_TRACE_BUFFER`` overrides it.
        """
        env = os.environ if environ is None else environ
        disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE
        switch = env.get("MESHSERVE_TRACING", "").strip().lower()
        if switch in _FALSE:
            disabled = True
        exporters = {
            part.strip().lower()
            for part in env.get("OTEL_TRACES_EXPORTER", "").split(",")
            if part.strip()
        }
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT", ""
        )
        otlp = "otlp" in exporters or (not exporters and bool(endpoint))
        buffer_text = env.get("MESHSERVE_TRACE_BUFFER", "").strip()
        if buffer_text:
            try:
                buffer_max_traces = int(buffer_text)
            except ValueError:
                raise ValueError(
                    f"MESHSERVE_TRACE_BUFFER={buffer_text!r} is not an integer; "
                    "expected the number of traces to keep (0 = none)"
                ) from None
        if buffer_max_traces < 0:
            raise ValueError(f"MESHSERVE_TRACE_BUFFER must be >= 0, got {buffer_max_traces}")
        delay_ms = _positive_int(env, "OTEL_BSP_SCHEDULE_DELAY", cls.export_delay_ms)
        queue_max = _positive_int(env, "OTEL_BSP_MAX_QUEUE_SIZE", cls.export_queue_max_spans)
        batch_max = _positive_int(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", cls.export_batch_max_spans)
        sample_ratio: float | None = None
        if not env.get("OTEL_TRACES_SAMPLER", "").strip():
            ratio_text = env.get("MESHSERVE_TRACE_SAMPLE_RATIO", "").strip() or "0.1"
            try:
                sample_ratio = float(ratio_text)
            except ValueError:
                raise ValueError(
                    f"MESHSERVE_TRACE_SAMPLE_RATIO={ratio_text!r} is not a number in [0, 1]"
                ) from None
            if not 0.0 <= sample_ratio <= 1.0:
                raise ValueError(
                    f"MESHSERVE_TRACE_SAMPLE_RATIO must be in [0, 1], got {ratio_text}"
                )
        return cls(
            enabled=not disabled,
            sample_ratio=sample_ratio,
            otlp=otlp,
            console="console" in exporters,
            trace_file=env.get("MESHSERVE_TRACE_FILE", "").strip(),
            trace_dir=env.get("MESHSERVE_TRACE_DIR", "").strip(),
            buffer_max_traces=buffer_max_traces,
            export_delay_ms=delay_ms,
            export_queue_max_spans=queue_max,
            export_batch_max_spans=min(batch_max, queue_max),
        )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value
