"""meshserve's error tree. Each failure kind is one class mapped to one gRPC status code.

Servers raise these from their transport-free cores; one interceptor/decorator per server turns
them into the call's status (see ``meshserve.grpc_errors``). Clients raise ``MeshServeError``
carrying the status of a failed call.
"""

from __future__ import annotations

import grpc

__all__ = [
    "AlreadyExistsError",
    "CheckAndSetError",
    "DeadlineExceededError",
    "InternalError",
    "InvalidInputError",
    "MeshError",
    "MeshServeError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "UnauthenticatedError",
    "UnavailableError",
]


class MeshError(Exception):
    """Base of every error a meshserve server maps to a gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, retry_pushback_ms: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_pushback_ms = retry_pushback_ms


class InvalidInputError(MeshError):
    """The request is malformed: wrong name, dtype, shape, byte length, plan wiring..."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(MeshError):
    """A named plan, model, version or request id does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(MeshError):
    """Creating something that already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class CheckAndSetError(MeshError):
    """A check-and-set write lost to a concurrent writer (stale index or version)."""

    code = grpc.StatusCode.ABORTED


class OverloadedError(MeshError):
    """A bounded queue or size limit was hit; retry after `retry_pushback_ms`."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(MeshError):
    """The request's deadline passed before it could be served."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UnavailableError(MeshError):
    """No ready endpoint, a draining server, or an unreachable dependency."""

    code = grpc.StatusCode.UNAVAILABLE


class UnauthenticatedError(MeshError):
    """Missing or wrong credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(MeshError):
    """Authenticated but not allowed."""

    code = grpc.StatusCode.PERMISSION_DENIED


class InternalError(MeshError):
    """A bug or an unexpected failure; the message never carries a traceback."""

    code = grpc.StatusCode.INTERNAL


class MeshServeError(Exception):
    """Raised by meshserve clients when a call fails; carries the gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
