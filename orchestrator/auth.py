"""Bearer-token authentication for the Admin service: one server interceptor.

Every method under ``/meshserve.v1.Admin/`` needs metadata ``authorization: Bearer <token>``;
a missing or wrong token is answered UNAUTHENTICATED before the servicer runs. Other services
(Orchestrator, health, reflection) pass through.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

__all__ = ["ADMIN_PREFIX", "BearerTokenInterceptor"]

ADMIN_PREFIX = "/meshserve.v1.Admin/"


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Checks the Admin token in constant time; with no token configured every Admin call fails."""

    def __init__(self, token: str, prefix: str = ADMIN_PREFIX) -> None:
        self._expected = f"Bearer {token}".encode() if token else b""
        self._prefix = prefix

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method or ""
        if not method.startswith(self._prefix):
            return await continuation(handler_call_details)
        problem = self._problem(handler_call_details.invocation_metadata or ())
        if problem is None:
            return await continuation(handler_call_details)
        return _deny(problem)

    def _problem(self, metadata: Any) -> str | None:
        if not self._expected:
            return "admin calls are disabled: the orchestrator has no admin token configured"
        values = [v for k, v in metadata if k == "authorization"]
        if not values:
            return "missing 'authorization: Bearer <token>' metadata"
        if len(values) > 1:
            return f"{len(values)} 'authorization' headers: send exactly one ('Bearer <token>')"
        value = values[0]
        given = value.encode() if isinstance(value, str) else bytes(value)
        if not hmac.compare_digest(given, self._expected):
            return "wrong admin token (expected 'authorization: Bearer <token>')"
        return None


def _deny(message: str) -> grpc.RpcMethodHandler[Any, Any]:
    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(abort)
