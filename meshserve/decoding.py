"""Undecodable request bytes answered INVALID_ARGUMENT, not UNKNOWN with a logged traceback.

grpc.aio answers a request whose bytes do not parse as the method's message with UNKNOWN and
logs a traceback per call. `tolerant(server)` registers servicers (``add_XServicer_to_server
(servicer, tolerant(server))``) with request deserializers that return an `Undecodable`
marker instead of raising (one rate-limited log line, ``meshserve.logs``); the servicer's
``map_errors`` / ``map_stream_errors`` decorator turns the marker into INVALID_ARGUMENT naming
the message type and the byte count. Only unary requests are wrapped: a streamed request item
that does not parse still ends its stream the way grpc does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from meshserve.errors import InvalidInputError
from meshserve.logs import rate_limited

__all__ = ["Undecodable", "tolerant", "tolerant_handler"]

log = logging.getLogger(__name__)


class Undecodable:
    """What a tolerant deserializer returns for bytes that are not the expected message."""

    __slots__ = ("error", "size", "type_name")

    def __init__(self, type_name: str, size: int, error: str) -> None:
        self.type_name = type_name
        self.size = size
        self.error = error

    def to_error(self) -> InvalidInputError:
        """The INVALID_ARGUMENT error answering the call."""
        return InvalidInputError(
            f"request body ({self.size} bytes) is not a valid {self.type_name} message "
            f"({self.error})"
        )


def _tolerant_deserializer(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    owner = getattr(deserialize, "__self__", None)
    type_name = getattr(owner, "DESCRIPTOR", None)
    name = type_name.full_name if type_name is not None else "request"

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, RecursionError on absurd nesting, ...
            rate_limited(
                log, "undecodable", "undecodable %s (%d bytes): %s", name, len(data),
                type(exc).__name__,
            )  # fmt: skip
            return Undecodable(name, len(data), type(exc).__name__)

    return decode


def tolerant_handler(handler: Any) -> Any:
    """`handler` with a tolerant request deserializer (unary requests only)."""
    if handler is None or handler.request_streaming or handler.request_deserializer is None:
        return handler
    return handler._replace(
        request_deserializer=_tolerant_deserializer(handler.request_deserializer)
    )


class _TolerantGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self._inner = inner
        self._cache: dict[str, Any] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method = handler_call_details.method
        found = self._cache.get(method)
        if found is None:
            found = tolerant_handler(self._inner.service(handler_call_details))
            if found is not None:
                self._cache[method] = found
        return found


class _TolerantRegistrar:
    """What the generated ``add_XServicer_to_server`` functions call, wrapping each handler."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(tuple(_TolerantGeneric(h) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        self._server.add_registered_method_handlers(
            service, {name: tolerant_handler(h) for name, h in handlers.items()}
        )


def tolerant(server: Any) -> Any:
    """A stand-in for `server` to pass to ``add_XServicer_to_server`` (see module docstring)."""
    return _TolerantRegistrar(server)
