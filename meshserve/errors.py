"""meshserve's one error tree: a root, ``MeshError``, and one class per gRPC status code.

Each class knows its status (the class attribute ``code``); ``ERROR_CLASSES`` is the one table
code -> class and ``error_for_status`` builds the error for a status. Servers raise these from
their transport-free cores and ``meshserve.grpc_errors`` turns them into the call's status;
clients (the SDK, the orchestrator's data path) rebuild the same class from the status they
receive, so ``except InvalidInputError`` works on both sides of a call.

An error is created once, where the failure is seen. The layers it passes through add where it
happened *in place* with ``add_context`` (plan, step, model, replica, logic function), and
``message`` reads outermost first::

    plan 'digits-pipeline' step 'mlp' model 'mlp' replica 'mlp-127.0.0.1-4567': input ...
    plan 'outer' step 'sub' > plan 'inner' step 'mlp' model 'mlp' replica 'r1': input ...

``MeshServeError`` is an alias of the root, kept for ``except MeshServeError`` in user code.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import ClassVar, Self

import grpc

__all__ = [
    "ERROR_CLASSES",
    "AlreadyExistsError",
    "CheckAndSetError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidInputError",
    "MeshError",
    "MeshServeError",
    "NotFoundError",
    "OutOfRangeError",
    "OverloadedError",
    "PermissionDeniedError",
    "RequestCancelledError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "error_for_status",
]


class MeshError(Exception):
    """Root of every meshserve error; ``code`` is the gRPC status it maps to.

    ``detail`` is the text given at creation, ``message`` the same text behind the location
    added with ``add_context``. ``reason`` names the failure for spans and metrics (default:
    the code's name in lower case). ``retry_pushback_ms`` travels as the
    ``grpc-retry-pushback-ms`` trailer (or in-band in a stream item's status).
    """

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    # Location, filled in place by add_context (class defaults: nothing allocated until set).
    model: str = ""
    replica: str = ""
    logic: str = ""
    frames: tuple[tuple[str, str], ...] = ()  # (plan, step), innermost first
    request_id: str = ""  # the stream item the error answers (SDK's execute_stream)

    def __init__(
        self, message: str, *, retry_pushback_ms: int | None = None, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.detail = message
        self.retry_pushback_ms = retry_pushback_ms
        self._reason = reason

    @property
    def reason(self) -> str:
        """Why the call failed, for spans and metrics ("stream_broken", "unavailable"...)."""
        return self._reason or self.code.name.lower()

    @property
    def plan(self) -> str:
        """The innermost plan the error happened in ("" when unknown)."""
        return self.frames[0][0] if self.frames else ""

    @property
    def step(self) -> str:
        """The innermost step the error happened in ("" when unknown)."""
        return self.frames[0][1] if self.frames else ""

    @property
    def message(self) -> str:
        """The detail behind where it happened: ``plan 'p' step 's' model 'm': detail``."""
        where = self.where()
        return f"{where}: {self.detail}" if where else self.detail

    def __str__(self) -> str:
        return self.message

    def where(self) -> str:
        """The location part of the message, outermost plan first ("" without context).

        A name the detail already starts with (``model 'm': ...`` from the data path,
        ``plan 'p' input ...`` from input checks) is not repeated in front of it.
        """
        detail = self.detail
        inner = [
            word
            for word in (
                f"model '{self.model}'" if self.model else "",
                f"logic '{self.logic}'" if self.logic else "",
                f"replica '{self.replica}'" if self.replica else "",
            )
            if word and not detail.startswith(word)
        ]
        parts = []
        for plan, step in reversed(self.frames):
            words = [f"plan '{plan}'"] if plan else []
            if step:
                words.append(f"step '{step}'")
            parts.append(words)
        if parts:
            parts[-1].extend(inner)
            if parts[-1] == [f"plan '{self.frames[0][0]}'"] and detail.startswith(parts[-1][0]):
                parts.pop()
        else:
            parts.append(inner)
        return " > ".join(" ".join(words) for words in parts if words)

    def add_context(
        self,
        *,
        plan: str = "",
        step: str = "",
        model: str = "",
        replica: str = "",
        logic: str = "",
    ) -> Self:
        """Record where the error happened, in place; returns the same error.

        Model, replica and logic are kept from the first layer that names them. A plan/step
        fills the innermost frame when it does not contradict it; a different plan or step is
        an outer frame (a plan step that ran another plan) and is added outside it.
        """
        if model and not self.model:
            self.model = model
        if replica and not self.replica:
            self.replica = replica
        if logic and not self.logic:
            self.logic = logic
        if plan or step:
            frames = self.frames
            if frames:
                top_plan, top_step = frames[-1]
                if (not plan or plan == top_plan or not top_plan) and (
                    not step or step == top_step or not top_step
                ):
                    self.frames = (*frames[:-1], (top_plan or plan, top_step or step))
                    return self
            self.frames = (*frames, (plan, step))
        return self

    def copy(self) -> Self:
        """An independent copy (one per caller when a batch failure fans out to many)."""
        return copy.copy(self)


class RequestCancelledError(MeshError):
    """The call was cancelled (by its caller or a shutdown). Not asyncio.CancelledError."""

    code = grpc.StatusCode.CANCELLED


class UnknownError(MeshError):
    """A failure whose kind is unknown (an unrecognised status from a peer)."""

    code = grpc.StatusCode.UNKNOWN


class InvalidInputError(MeshError):
    """The request is malformed: wrong name, dtype, shape, byte length, plan wiring..."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(MeshError):
    """The request's deadline passed before it could be served."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(MeshError):
    """A named plan, model, version or request id does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(MeshError):
    """Creating something that already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(MeshError):
    """Authenticated but not allowed."""

    code = grpc.StatusCode.PERMISSION_DENIED


class OverloadedError(MeshError):
    """A bounded queue or size limit was hit; retry after `retry_pushback_ms`."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(MeshError):
    """The system is not in the state the operation needs (e.g. a model not loaded yet)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class CheckAndSetError(MeshError):
    """A check-and-set write lost to a concurrent writer (stale index or version)."""

    code = grpc.StatusCode.ABORTED


class OutOfRangeError(MeshError):
    """A value past the valid range (an offset, an index)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(MeshError):
    """The operation is not implemented by this server."""

    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(MeshError):
    """A bug or an unexpected failure; the message never carries a traceback."""

    code = grpc.StatusCode.INTERNAL


class UnavailableError(MeshError):
    """No ready endpoint, a draining server, or an unreachable dependency."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLossError(MeshError):
    """Unrecoverable loss or corruption of data."""

    code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(MeshError):
    """Missing or wrong credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


MeshServeError = MeshError
"""Alias of the root, MeshError (clients used to raise it): ``except MeshServeError`` works."""

ERROR_CLASSES: Mapping[grpc.StatusCode, type[MeshError]] = {
    cls.code: cls
    for cls in (
        RequestCancelledError,
        UnknownError,
        InvalidInputError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        OverloadedError,
        FailedPreconditionError,
        CheckAndSetError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
}
"""The one table gRPC status code -> error class (every code except OK)."""


def error_for_status(
    code: grpc.StatusCode,
    message: str,
    *,
    retry_pushback_ms: int | None = None,
    reason: str = "",
) -> MeshError:
    """The error for a failed status (OK, which is no failure, gives an UnknownError)."""
    return ERROR_CLASSES.get(code, UnknownError)(
        message, retry_pushback_ms=retry_pushback_ms, reason=reason
    )
