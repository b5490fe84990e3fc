"""The one tracing switch: meshserve.telemetry.tracing_enabled, and NO_SPAN for the off path."""

from __future__ import annotations

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from meshserve.telemetry import (
    EMPTY_CONTEXT,
    NO_SPAN,
    _state,
    context_from_traceparent,
    tracing_enabled,
)

SAMPLED = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
UNSAMPLED = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-00"


@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(_state, "_enabled", False)
    monkeypatch.setattr(_state, "_PROVIDER_FROM_ENV", False)


def test_off_until_a_provider_is_installed(nothing_installed: None) -> None:
    assert not tracing_enabled()
    assert not tracing_enabled(EMPTY_CONTEXT)
    assert not tracing_enabled(context_from_traceparent(SAMPLED))


def test_a_global_sdk_provider_turns_it_on(
    nothing_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", trace.NoOpTracerProvider())
    assert not tracing_enabled()  # a no-op provider records nothing
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", TracerProvider())
    assert tracing_enabled()
    assert _state._enabled  # cached: the global provider cannot be replaced


def test_a_sampled_out_parent_turns_it_off_for_its_children(
    nothing_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_state, "_enabled", True)  # what setup_telemetry records
    assert tracing_enabled()  # no current span: a new trace, the sampler decides
    assert tracing_enabled(context_from_traceparent(SAMPLED))
    unsampled = context_from_traceparent(UNSAMPLED)
    assert not tracing_enabled(unsampled)
    assert tracing_enabled(EMPTY_CONTEXT)  # "is an SDK installed" ignores the current span
    token = otel_context.attach(unsampled)
    try:
        assert not tracing_enabled()
        assert tracing_enabled(EMPTY_CONTEXT)  # propagation still carries the decision
    finally:
        otel_context.detach(token)


def test_no_span_yields_none_and_does_not_swallow_errors() -> None:
    with NO_SPAN as span:
        assert span is None
    with pytest.raises(KeyError), NO_SPAN:
        raise KeyError("x")
