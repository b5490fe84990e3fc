"""gRPC aio interceptors that carry W3C trace context in metadata and record RPC spans.

They are opentelemetry-instrumentation-grpc's aio interceptors (RPC semantic conventions:
``rpc.system``, ``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``), with a filter that
leaves out calls that would only add noise or never-ending spans:

- ``grpc.health.v1.Health/*`` (Consul checks every replica every second) and server reflection;
- long-lived bidi streams whose items carry their own traceparents
  (``/meshserve.v1.ModelService/InferStream``; see propagation.py);
- ``Admin.GetTrace``/``Admin.ListTraces`` (reading the trace buffer).

Both functions return an empty list while tracing is off, so a disabled process pays nothing.
Use them where servers and channels are built::

    server = grpc.aio.server(interceptors=server_interceptors())
    channel = grpc.aio.insecure_channel(target, interceptors=client_interceptors())
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from meshserve.telemetry._state import tracing_enabled

__all__ = ["UNTRACED_METHODS", "UNTRACED_SERVICES", "client_interceptors", "server_interceptors"]

UNTRACED_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
UNTRACED_METHODS = (
    "/meshserve.v1.ModelService/InferStream",
    # Reading traces must not fill the trace buffer with traces of reading traces.
    "/meshserve.v1.Admin/GetTrace",
    "/meshserve.v1.Admin/ListTraces",
)


def _method_of(details: Any) -> str:
    method = getattr(details, "method", "") or getattr(details, "full_method", "")
    return method.decode() if isinstance(method, bytes) else str(method)


def _traced(extra_untraced: Iterable[str] = ()) -> Any:
    skip_methods = frozenset((*UNTRACED_METHODS, *extra_untraced))
    skip_services = tuple(f"/{service}/" for service in UNTRACED_SERVICES)

    def predicate(details: Any) -> bool:
        method = _method_of(details)
        return method not in skip_methods and not method.startswith(skip_services)

    return predicate


def server_interceptors(
    extra_untraced: Iterable[str] = (), *, enabled: bool | None = None
) -> list[grpc.aio.ServerInterceptor]:
    """Interceptors for ``grpc.aio.server(interceptors=...)``: one SERVER span per RPC, child of
    the caller's traceparent. `extra_untraced`: more full method names to leave out.

    `enabled` (default: whether setup_telemetry installed a provider) lets a server be built
    before setup_telemetry runs (e.g. when the instance id depends on the bound port): pass
    ``TelemetryConfig.from_env().active()``; the interceptors' tracer follows the global
    provider once it is installed."""
    if not (tracing_enabled() if enabled is None else enabled):
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(filter_=_traced(extra_untraced))]


def client_interceptors(
    extra_untraced: Iterable[str] = (), *, enabled: bool | None = None
) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for ``grpc.aio.*_channel(interceptors=...)``: one CLIENT span per RPC and the
    ``traceparent`` metadata that continues the trace on the server (`enabled`: as above)."""
    if not (tracing_enabled() if enabled is None else enabled):
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(filter_=_traced(extra_untraced)))
