"""Deprecated aliases of the one tracing switch, ``meshserve.telemetry.tracing_enabled``.

Kept so that imports written before the switch moved into the telemetry kernel keep working;
new code imports ``tracing_enabled`` from ``meshserve.telemetry``.
"""

from __future__ import annotations

from meshserve.telemetry import EMPTY_CONTEXT, tracing_enabled

__all__ = ["spans_on", "spans_wanted"]

spans_wanted = tracing_enabled
"""Alias of ``tracing_enabled()``: an SDK is installed and the current span is not sampled out."""


def spans_on() -> bool:
    """``tracing_enabled(EMPTY_CONTEXT)``: an SDK tracer provider is installed (sampling aside)."""
    return tracing_enabled(EMPTY_CONTEXT)
