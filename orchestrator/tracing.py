"""Whether spans are worth creating: the hot path skips span work while no tracer provider is
installed.

Modules create spans through the OpenTelemetry API (``trace.get_tracer(__name__)``), which is a
no-op until a process installs a provider (``meshserve.telemetry.setup_telemetry`` at its edge,
or ``trace.set_tracer_provider`` in a test). A no-op span still costs a context manager, a
contextvars attach/detach and the attribute calls; ``spans_on()`` lets a per-request path skip
all of that. The global provider can be set only once, so a True answer is cached.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER

__all__ = ["spans_on", "spans_wanted"]

_NOOP_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
# trace.get_tracer_provider() reads os.environ on every call while no provider is set; the
# variable it looks for is read once here instead.
_PROVIDER_FROM_ENV = OTEL_PYTHON_TRACER_PROVIDER in os.environ
_on = False


def spans_on() -> bool:
    """True once a real tracer provider is the global one (cheap: one global read after)."""
    global _on
    if _on:
        return True
    if not _PROVIDER_FROM_ENV and getattr(trace, "_TRACER_PROVIDER", False) is None:
        return False  # nothing installed yet
    _on = not isinstance(trace.get_tracer_provider(), _NOOP_PROVIDERS)
    return _on


def spans_wanted() -> bool:
    """spans_on(), unless the current trace is known to be unsampled: under a parent-based
    sampler every child of an unsampled span is dropped anyway, so the hot path skips creating
    them (sampled-out requests then cost about what tracing off costs)."""
    if not spans_on():
        return False
    ctx = trace.get_current_span().get_span_context()
    return not ctx.is_valid or ctx.trace_flags.sampled
