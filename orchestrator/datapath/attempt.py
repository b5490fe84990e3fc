"""The outcome of one attempt against one replica, as the router needs it to decide a retry."""

from __future__ import annotations

import grpc

from meshserve.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidInputError,
    MeshError,
    NotFoundError,
    OverloadedError,
    UnavailableError,
)
from meshserve.grpc_errors import code_from_int, status_from_exception

__all__ = ["REPLICA_FAULT_CODES", "AttemptError", "attempt_error_from_rpc", "to_mesh_error"]

# Codes that say something about the replica (count toward outlier ejection).
REPLICA_FAULT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)


class AttemptError(Exception):
    """One attempt failed. `reason` names why for spans and metrics ("unavailable",
    "stream_broken", "resource_exhausted", ...)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        retry_pushback_ms: int | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason or code.name.lower()
        self.retry_pushback_ms = retry_pushback_ms

    @classmethod
    def from_status(cls, code: int, message: str, pushback_ms: int = 0) -> AttemptError:
        """From an in-band stream item status."""
        return cls(code_from_int(code), message, retry_pushback_ms=pushback_ms or None)

    @property
    def is_replica_fault(self) -> bool:
        return self.code in REPLICA_FAULT_CODES


def attempt_error_from_rpc(exc: grpc.aio.AioRpcError) -> AttemptError:
    code, message, pushback = status_from_exception(exc)
    return AttemptError(code, message, retry_pushback_ms=pushback)


_BY_CODE: dict[grpc.StatusCode, type[MeshError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OverloadedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def to_mesh_error(model: str, err: AttemptError) -> MeshError:
    """The MeshError the caller sees for a final failed attempt (status kept, model named)."""
    cls = _BY_CODE.get(err.code)
    if cls is None:
        mapped = InternalError(f"model '{model}' failed: {err.code.name}: {err.message}")
        mapped.code = err.code  # keep the model's own status (FAILED_PRECONDITION, ...)
        return mapped
    return cls(f"model '{model}': {err.message}", retry_pushback_ms=err.retry_pushback_ms)
