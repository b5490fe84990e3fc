"""The process-wide tracing switch, set by setup_telemetry (apart, to avoid import cycles)."""

from __future__ import annotations

__all__ = ["set_tracing_enabled", "tracing_enabled"]

_enabled = False


def tracing_enabled() -> bool:
    """True once setup_telemetry installed an SDK tracer provider in this process."""
    return _enabled


def set_tracing_enabled(enabled: bool) -> None:
    global _enabled
    _enabled = enabled
