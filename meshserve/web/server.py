"""An aiohttp application with meshserve's edge middleware, and the runner that serves it.

The middleware (outermost first) gives every request an id (``X-Request-Id``: the caller's
when it sends a short printable one, else a new one; echoed on the response), joins the
caller's W3C trace (``traceparent``/``tracestate``: the SERVER span of the request is a child of
it, so the plan's spans sit in the same trace as over gRPC) and turns every failure into the
JSON error of ``meshserve.http_errors`` (aiohttp's own 404/405/413 included).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from meshserve.http_errors import HTTP_STATUS, error_body
from meshserve.telemetry import tracing_enabled
from meshserve.web.config import HttpConfig

__all__ = ["REQUEST_ID", "REQUEST_ID_HEADER", "HttpServer", "base_app", "json_response"]

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)
CONFIG = web.AppKey("http_config", HttpConfig)
V2_ERRORS = web.AppKey("v2_errors", bool)
_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:/=+-]{1,128}")
_NAME_OF_STATUS = {status: code.name for code, status in reversed(HTTP_STATUS.items())}
_tracer = trace.get_tracer("meshserve.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A compact JSON response."""
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def _aiohttp_error(exc: web.HTTPException, v2: bool) -> web.Response:
    status = exc.status
    code = _NAME_OF_STATUS.get(status, "INVALID_ARGUMENT" if status < 500 else "INTERNAL")
    if status == 413:
        code = "RESOURCE_EXHAUSTED"
    message = exc.reason
    if status == 405:
        message = f"method {exc.method if hasattr(exc, 'method') else ''} not allowed here"
    if v2:
        return json_response({"error": message}, status)
    return json_response({"error": {"code": status, "status": code, "message": message}}, status)


def _route_of(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else request.path[:64]


@web.middleware
async def _edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = given if _REQUEST_ID_OK.fullmatch(given) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    span = None
    token = None
    if tracing_enabled():
        parent = propagate.extract(request.headers) if "traceparent" in request.headers else None
        span = _tracer.start_span(
            f"HTTP {request.method} {_route_of(request)}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.path[:256]},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _aiohttp_error(exc, request.app[V2_ERRORS])
        except Exception as exc:
            status, body, headers = error_body(exc, v2=request.app[V2_ERRORS])
            response = json_response(body, status, headers)
        response.headers.setdefault(REQUEST_ID_HEADER, request_id)
        if span is not None:
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {response.status}"))
        return response
    finally:
        if span is not None:
            span.end()
        if token is not None:
            otel_context.detach(token)


def base_app(config: HttpConfig, *, v2_errors: bool = False) -> web.Application:
    """An application with the edge middleware and the body size limit of `config`;
    `v2_errors`: error bodies in the KServe V2 form (``meshserve.http_errors.error_body``)."""
    app = web.Application(middlewares=[_edge], client_max_size=config.max_body_bytes)
    app[CONFIG] = config
    app[V2_ERRORS] = v2_errors
    return app


def config_of(request: web.Request) -> HttpConfig:
    """The HttpConfig of the application serving `request`."""
    return request.app[CONFIG]


class HttpServer:
    """Serves one application on the running event loop (next to a grpc.aio server)."""

    def __init__(self, app: web.Application, config: HttpConfig) -> None:
        self.config = config
        self._runner = web.AppRunner(
            app,
            access_log=None,
            keepalive_timeout=config.keepalive_timeout_s,
            max_line_size=config.max_header_bytes,
            max_field_size=config.max_header_bytes,
            lingering_time=1.0,  # after an early answer, read a refused body this long at most
            shutdown_timeout=5.0,
        )
        self.port = -1

    async def start(self) -> int:
        """Bind and serve; returns the bound port."""
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.config.host,
            self.config.port,
            reuse_port=self.config.reuse_port,
            backlog=1024,
        )
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or ()
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.config.port
        log.info("HTTP on %s:%d", self.config.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop accepting; requests in progress get the runner's shutdown timeout."""
        await self._runner.cleanup()
