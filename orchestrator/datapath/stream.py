"""One long-lived bidirectional ``InferStream`` to one endpoint, shared by many requests.

Contract:
- Requests carry a unique id; responses may come back in any order and are matched by id.
- At most `max_in_flight` requests are outstanding on the stream; further ones wait for a slot
  (backpressure) within their own timeout.
- An item answered with an in-band status fails only that item (the ``MeshError`` for its status).
- When the stream breaks (read/write error, server end), every outstanding item fails with
  ``UnavailableError(reason="stream_broken")`` so the router can retry it elsewhere;
  the next request re-opens the stream. Ids make a resubmission on another stream idempotent.
- A request whose timeout passes, or whose caller is cancelled (a hedge that lost), is
  abandoned; its late answer is dropped.
- One writer task per stream writes the queued requests in order. Callers never await a write:
  grpc.aio cancels the whole call when a task is cancelled inside ``write()``, so a caller
  cancelled mid-write (a lost hedge) would otherwise break the stream for everyone on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, TypeAlias

import grpc

from meshserve.errors import DeadlineExceededError, UnavailableError
from meshserve.grpc_errors import error_from_status
from meshserve.v1 import model_pb2

if TYPE_CHECKING:
    from meshserve.v1.model_pb2_grpc import ModelServiceAsyncStub

__all__ = ["StreamSession"]

log = logging.getLogger(__name__)

_Call: TypeAlias = "grpc.aio.StreamStreamCall[model_pb2.InferRequest, model_pb2.InferResponse]"


class StreamSession:
    """Multiplexes requests over one InferStream call (re-opened after a break)."""

    def __init__(self, stub: ModelServiceAsyncStub, target: str, max_in_flight: int) -> None:
        self._stub = stub
        self._target = target
        self._slots = asyncio.Semaphore(max_in_flight)
        self._call: _Call | None = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[model_pb2.InferResponse]] = {}
        self._outbox: asyncio.Queue[model_pb2.InferRequest] = asyncio.Queue()
        self._closed = False

    def _open(self) -> _Call:
        call = self._stub.InferStream(wait_for_ready=False)
        pending: dict[str, asyncio.Future[model_pb2.InferResponse]] = {}
        outbox: asyncio.Queue[model_pb2.InferRequest] = asyncio.Queue()
        self._pending = pending
        self._outbox = outbox
        self._call = call
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read(call, pending))
        self._writer = loop.create_task(self._write(call, pending, outbox))
        return call

    async def _write(
        self,
        call: _Call,
        pending: dict[str, asyncio.Future[model_pb2.InferResponse]],
        outbox: asyncio.Queue[model_pb2.InferRequest],
    ) -> None:
        try:
            while True:
                await call.write(await outbox.get())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._break(call, pending, f"write failed: {type(exc).__name__}")

    async def _read(
        self,
        call: _Call,
        pending: dict[str, asyncio.Future[model_pb2.InferResponse]],
    ) -> None:
        reason = "stream ended by the server"
        try:
            while True:
                resp = await call.read()
                if not isinstance(resp, model_pb2.InferResponse):
                    break  # grpc.aio.EOF
                fut = pending.pop(resp.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(resp)
        except asyncio.CancelledError:
            reason = "stream closed"
            raise
        except grpc.aio.AioRpcError as exc:
            reason = f"stream broken: {exc.code().name}: {exc.details()}"
        except Exception as exc:
            reason = f"stream broken: {type(exc).__name__}"
        finally:
            self._break(call, pending, reason)

    def _break(
        self,
        call: _Call,
        pending: dict[str, asyncio.Future[model_pb2.InferResponse]],
        reason: str,
    ) -> None:
        if self._call is call:
            writer = self._writer
            self._call = None
            self._reader = None
            self._writer = None
            if writer is not None and writer is not asyncio.current_task():
                writer.cancel()
        if pending:
            log.info(
                "stream to %s broke with %d outstanding: %s", self._target, len(pending), reason
            )
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(
                    UnavailableError(f"{reason} ({self._target})", reason="stream_broken")
                )
        pending.clear()
        call.cancel()

    async def infer(
        self, request: model_pb2.InferRequest, timeout_s: float
    ) -> model_pb2.InferResponse:
        """Send `request` (id set) and await its answer; raises the MeshError for its status."""
        if self._closed:
            raise UnavailableError("stream session closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            if self._slots.locked():
                await asyncio.wait_for(self._slots.acquire(), timeout_s)
            else:
                await self._slots.acquire()
        except TimeoutError:
            raise DeadlineExceededError(
                f"no free stream slot to {self._target} within the deadline"
            ) from None
        try:
            if self._call is None:
                self._open()
            pending = self._pending
            fut: asyncio.Future[model_pb2.InferResponse] = loop.create_future()
            pending[request.id] = fut
            self._outbox.put_nowait(request)
            # A timer fails the item at its deadline (cheaper than asyncio.wait_for).
            timer = loop.call_at(deadline, self._expire, pending, request.id, fut)
            try:
                resp = await fut
            except asyncio.CancelledError:  # a lost hedge race or a caller gone: forget it
                if pending.get(request.id) is fut:
                    del pending[request.id]
                raise
            finally:
                timer.cancel()
        finally:
            self._slots.release()
        if resp.HasField("status") and resp.status.code != 0:
            raise error_from_status(resp.status)
        return resp

    def _expire(
        self,
        pending: dict[str, asyncio.Future[model_pb2.InferResponse]],
        request_id: str,
        fut: asyncio.Future[model_pb2.InferResponse],
    ) -> None:
        if pending.get(request_id) is fut:
            del pending[request_id]
        if not fut.done():
            fut.set_exception(
                DeadlineExceededError(f"no answer from {self._target} within the deadline")
            )

    async def close(self) -> None:
        """Half-close the stream and stop reading (outstanding items fail as broken)."""
        self._closed = True
        call, reader, writer = self._call, self._reader, self._writer
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
        if call is not None:
            with contextlib.suppress(Exception):
                await call.done_writing()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
