"""The one place where meshserve errors become gRPC statuses (and back)."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from meshserve.errors import MeshError, MeshServeError
from meshserve.v1 import tensor_pb2

__all__ = [
    "RETRY_PUSHBACK_KEY",
    "abort_with",
    "code_from_int",
    "error_to_status",
    "from_rpc_error",
    "map_errors",
    "map_stream_errors",
    "status_from_exception",
]

log = logging.getLogger(__name__)

RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def code_from_int(value: int) -> grpc.StatusCode:
    """grpc.StatusCode for its integer value (UNKNOWN for anything else)."""
    return _BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)


def status_from_exception(exc: BaseException) -> tuple[grpc.StatusCode, str, int | None]:
    """(code, message, retry_pushback_ms) for any exception; unknown ones become INTERNAL."""
    if isinstance(exc, MeshError):
        return exc.code, exc.message, exc.retry_pushback_ms
    if isinstance(exc, MeshServeError):
        return exc.code, exc.message, None
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code(), exc.details() or "", _pushback_of(exc)
    log.error("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})", None


def error_to_status(exc: BaseException) -> tensor_pb2.Status:
    """In-band Status for a failed stream item."""
    code, message, pushback = status_from_exception(exc)
    return tensor_pb2.Status(code=code.value[0], message=message, retry_pushback_ms=pushback or 0)


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """Abort the call with the status for `exc` (and retry pushback trailer when set)."""
    code, message, pushback = status_from_exception(exc)
    if pushback is not None:
        context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(pushback)),))
    await context.abort(code, message)


def map_errors(
    method: Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    """Decorate a unary servicer method so exceptions become precise gRPC statuses."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_with(context, exc)
            raise  # unreachable: abort raises

    return wrapper


def map_stream_errors(
    method: Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    """Like map_errors, for response-streaming servicer methods (async generators)."""

    @functools.wraps(method)
    async def wrapper(
        self: Any, request: Req, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Resp]:
        try:
            async for item in method(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_with(context, exc)

    return wrapper


def _pushback_of(exc: grpc.aio.AioRpcError) -> int | None:
    for key, value in exc.trailing_metadata() or ():
        if key == RETRY_PUSHBACK_KEY:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def from_rpc_error(exc: grpc.aio.AioRpcError) -> MeshServeError:
    """Client-side: the MeshServeError for a failed call."""
    return MeshServeError(exc.code(), exc.details() or "")
