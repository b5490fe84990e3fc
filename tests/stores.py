"""Helpers for tests against the local PostgreSQL / Redis / NATS services (skip when absent)."""

from __future__ import annotations

import os
import socket
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = [
    "NATS_URL",
    "PG_DSN",
    "REDIS_URL",
    "require_service",
    "span_exporter",
    "unique_name",
]

PG_DSN = os.environ.get("MESHSERVE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MESHSERVE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("MESHSERVE_TEST_NATS_URL", "nats://127.0.0.1:4222")

_exporter = InMemorySpanExporter()
_installed = False


def require_service(name: str, host: str, port: int) -> None:
    """Skip the test with a clear reason when nothing listens on `host`:`port`."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError as exc:
        pytest.skip(f"{name} is not running on {host}:{port} ({exc}); start it to run this test")


def unique_name(prefix: str) -> str:
    """A table / key prefix / stream name no other test or rerun uses."""
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def span_exporter() -> InMemorySpanExporter:
    """An in-memory exporter on the process' SDK tracer provider (installed once), cleared."""
    global _installed
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not _installed:
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        _installed = True
    _exporter.clear()
    return _exporter
