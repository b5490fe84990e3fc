"""The one place where meshserve errors become gRPC statuses (and back).

Servers: ``map_errors`` / ``map_stream_errors`` decorate servicer methods, ``abort_with`` aborts
a call, ``error_to_status`` fills a failed stream item's in-band status. Any exception that is
not a ``MeshError`` becomes INTERNAL naming only its type (never a traceback).
Clients: ``from_rpc_error`` and ``error_from_status`` rebuild the same ``MeshError`` class from
a call's status or an item's in-band status (``meshserve.errors.error_for_status``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from meshserve.decoding import Undecodable
from meshserve.errors import MeshError, error_for_status
from meshserve.logs import rate_limited
from meshserve.v1 import tensor_pb2

__all__ = [
    "RETRY_PUSHBACK_KEY",
    "STATUS_MESSAGE_MAX_CHARS",
    "abort_with",
    "code_from_int",
    "error_from_status",
    "error_to_status",
    "from_rpc_error",
    "map_errors",
    "map_stream_errors",
    "status_from_exception",
]

log = logging.getLogger(__name__)

RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
# Longest status message sent (see _bounded); messages quote bounded input, this is the net.
STATUS_MESSAGE_MAX_CHARS = 1024
_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]


def code_from_int(value: int) -> grpc.StatusCode:
    """grpc.StatusCode for its integer value (UNKNOWN for anything else)."""
    return _BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)


def _bounded(message: str) -> str:
    """At most STATUS_MESSAGE_MAX_CHARS characters: a message that echoes too much of a request
    would overflow the caller's metadata limit (grpc-message is percent-encoded, up to 12 bytes
    per character) and arrive as a confusing RESOURCE_EXHAUSTED instead."""
    if len(message) <= STATUS_MESSAGE_MAX_CHARS:
        return message
    return f"{message[:STATUS_MESSAGE_MAX_CHARS]}... ({len(message)} characters)"


def status_from_exception(exc: BaseException) -> tuple[grpc.StatusCode, str, int | None]:
    """(code, message, retry_pushback_ms) for any exception; unknown ones become INTERNAL."""
    if isinstance(exc, MeshError):
        return exc.code, _bounded(exc.message), exc.retry_pushback_ms
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code(), _bounded(exc.details() or ""), _pushback_of(exc)
    rate_limited(
        log, f"unexpected {type(exc).__name__}", "unexpected error", level=logging.ERROR,
        exc_info=exc,
    )  # fmt: skip
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})", None


def error_to_status(exc: BaseException) -> tensor_pb2.Status:
    """In-band Status for a failed stream item."""
    code, message, pushback = status_from_exception(exc)
    return tensor_pb2.Status(code=code.value[0], message=message, retry_pushback_ms=pushback or 0)


async def abort_with(context: Context, exc: BaseException) -> None:
    """Abort the call with the status for `exc` (and retry pushback trailer when set)."""
    code, message, pushback = status_from_exception(exc)
    if pushback is not None:
        context.set_trailing_metadata(((RETRY_PUSHBACK_KEY, str(pushback)),))
    await context.abort(code, message)


def map_errors(
    method: Callable[[Any, Req, Context], Awaitable[Resp]],
) -> Callable[[Any, Req, Context], Awaitable[Resp]]:
    """Decorate a unary servicer method so exceptions become precise gRPC statuses."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: Context) -> Resp:
        try:
            if isinstance(request, Undecodable):  # bytes that were not the message (tolerant())
                raise request.to_error()
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_with(context, exc)
            raise  # unreachable: abort raises

    return wrapper


def map_stream_errors(
    method: Callable[[Any, Req, Context], AsyncIterator[Resp]],
) -> Callable[[Any, Req, Context], AsyncIterator[Resp]]:
    """Like map_errors, for response-streaming servicer methods (async generators)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: Context) -> AsyncIterator[Resp]:
        try:
            if isinstance(request, Undecodable):
                raise request.to_error()
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
            except (TypeError, ValueError):
                return None
    return None


def from_rpc_error(exc: grpc.aio.AioRpcError) -> MeshError:
    """Client side: the MeshError class for a failed call's status, pushback trailer kept."""
    return error_for_status(exc.code(), exc.details() or "", retry_pushback_ms=_pushback_of(exc))


def error_from_status(status: tensor_pb2.Status) -> MeshError:
    """Client side: the MeshError for a stream item's in-band status."""
    return error_for_status(
        code_from_int(status.code),
        status.message,
        retry_pushback_ms=status.retry_pushback_ms or None,
    )
