"""The one tracing switch, ``tracing_enabled()``, and ``NO_SPAN`` for the path where it is off.

Apart from provider.py to avoid import cycles. Every "is tracing on?" question in meshserve is
this function; a hot path asks it once and skips all span work (spans, attribute dicts, context
attach/detach, traceparent parsing) when it says False::

    span_cm = tracer.start_as_current_span(name, attributes={...}) if tracing_enabled() else NO_SPAN
    with span_cm as span:  # span is None while tracing is off
        ...
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER

__all__ = ["EMPTY_CONTEXT", "NO_SPAN", "set_tracing_enabled", "tracing_enabled"]

# A context without a span: ``tracing_enabled(EMPTY_CONTEXT)`` asks only whether an SDK is
# installed (for a span that starts a new trace, building interceptors, propagation).
EMPTY_CONTEXT: Final = Context()

_NOOP_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
# trace.get_tracer_provider() reads os.environ on every call while no provider is set; the
# variable it looks for is read once here instead.
_PROVIDER_FROM_ENV = OTEL_PYTHON_TRACER_PROVIDER in os.environ
# An SDK tracer provider is the global one. The global provider can be set only once, so True
# is final: setup_telemetry sets it, and the first check after trace.set_tracer_provider does.
_enabled = False


def tracing_enabled(context: Context | None = None) -> bool:
    """Whether span work is wanted for a span started in `context` (default: the current one).

    True when both hold:

    1. an SDK tracer provider is installed in this process: ``setup_telemetry`` ran, or a
       real provider was set with ``trace.set_tracer_provider`` (tests, embedding apps);
    2. the span current in `context` would not drop its children: there is none (a new trace:
       the sampler decides) or it is sampled. Under parent-based sampling (the SDK default,
       and what ``TelemetryConfig.sample_ratio`` installs) a child of an unsampled span is never
       recorded, so a sampled-out request costs about what tracing off costs.

    False means a span started there would not be recorded: skip it and its attributes.
    ``tracing_enabled(EMPTY_CONTEXT)`` asks only (1), e.g. whether to propagate the current
    span context, sampled or not, to a stream item. Cost while off: a global read and a
    module attribute lookup.
    """
    if not _enabled:
        if not _PROVIDER_FROM_ENV and getattr(trace, "_TRACER_PROVIDER", None) is None:
            return False  # nothing installed yet (the common "off")
        if not _provider_is_sdk():
            return False
    span_context = trace.get_current_span(context).get_span_context()
    return not span_context.is_valid or span_context.trace_flags.sampled


def _provider_is_sdk() -> bool:
    global _enabled
    _enabled = not isinstance(trace.get_tracer_provider(), _NOOP_PROVIDERS)
    return _enabled


def set_tracing_enabled(enabled: bool) -> None:
    """Record that setup_telemetry installed (True) a provider; False only for tests."""
    global _enabled
    _enabled = enabled


class _NoSpan(AbstractContextManager[None]):
    """A ``with`` target that does nothing and yields None (two calls, no allocation)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        return None


NO_SPAN: Final = _NoSpan()
"""Use instead of a span's context manager while ``tracing_enabled()`` is False."""
