"""The one place where meshserve errors become HTTP responses (next to grpc_errors.py).

Every HTTP surface (the orchestrator's JSON ingress, the replicas' KServe V2 REST) answers a
failure with the status of `HTTP_STATUS` for its gRPC code and a JSON body::

    {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "...",
               "field": "inputs.input", "expected": "float32 [-1, 64]"}}

``field``/``expected`` are present when the error is a `FieldError`. Overload (429, 503) carries
``Retry-After`` (whole seconds, the retry pushback rounded up, at least 1). A size limit that the
same request would hit again (``LimitExceededError``) is 413, a body that did not arrive in
time 408, a body of another content type 415. The message is the
same bounded text the gRPC status would carry (`status_from_exception`): no traceback, ever.
"""

from __future__ import annotations

import math
from typing import Any

import grpc

from meshserve.errors import InvalidInputError, MeshError
from meshserve.grpc_errors import status_from_exception
from meshserve.names import quote

__all__ = ["HTTP_STATUS", "FieldError", "error_body", "http_status"]

S = grpc.StatusCode
# grpc-gateway's table (google.rpc.Code -> HTTP), the one used by every meshserve HTTP door.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    S.OK: 200,
    S.CANCELLED: 499,
    S.UNKNOWN: 500,
    S.INVALID_ARGUMENT: 400,
    S.DEADLINE_EXCEEDED: 504,
    S.NOT_FOUND: 404,
    S.ALREADY_EXISTS: 409,
    S.PERMISSION_DENIED: 403,
    S.UNAUTHENTICATED: 401,
    S.RESOURCE_EXHAUSTED: 429,
    S.FAILED_PRECONDITION: 400,
    S.ABORTED: 409,
    S.OUT_OF_RANGE: 400,
    S.UNIMPLEMENTED: 501,
    S.INTERNAL: 500,
    S.UNAVAILABLE: 503,
    S.DATA_LOSS: 500,
}
# Failures whose reason says more than their code: a size limit the same request hits again
# (Payload Too Large, never retried), a body that did not arrive in time, a body type not read.
_BY_REASON = {"limit_exceeded": 413, "body_timeout": 408, "unsupported_media_type": 415}


class FieldError(InvalidInputError):
    """INVALID_ARGUMENT about one field of a JSON body: which field, and what was expected."""

    def __init__(self, field: str, problem: str, expected: str = "") -> None:
        self.field = field
        self.expected = expected
        tail = f" (expected {expected})" if expected and expected not in problem else ""
        named = problem if quote(field) in problem else f"field {quote(field)}: {problem}"
        super().__init__(f"{named}{tail}")


def http_status(exc: BaseException) -> int:
    """The HTTP status for any exception (500 for those outside the error tree)."""
    if isinstance(exc, MeshError):
        return _BY_REASON.get(exc.reason) or HTTP_STATUS.get(exc.code, 500)
    return HTTP_STATUS.get(status_from_exception(exc)[0], 500)


def error_body(
    exc: BaseException, *, v2: bool = False
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, JSON body, extra headers) answering `exc`. `v2`: the KServe V2 REST form
    ``{"error": "<message>"}`` that V2 clients (tritonclient.http) parse."""
    code, message, pushback_ms = status_from_exception(exc)
    status = http_status(exc)
    error: dict[str, Any] = {"code": status, "status": code.name, "message": message}
    if v2:
        return status, {"error": message}, _headers(status, pushback_ms)
    if isinstance(exc, FieldError):
        error["field"] = exc.field
        if exc.expected:
            error["expected"] = exc.expected
    return status, {"error": error}, _headers(status, pushback_ms)


def _headers(status: int, pushback_ms: int | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if status in (429, 503):
        seconds = math.ceil(pushback_ms / 1000) if pushback_ms else 1
        headers["Retry-After"] = str(max(1, seconds))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="meshserve"'
    return headers
