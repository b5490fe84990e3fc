"""Thin gRPC servicers: protobuf in, `ModelCore` call, protobuf out.

`ModelServicer` serves meshserve.v1.ModelService, `V2Servicer` the Open Inference Protocol
(inference.GRPCInferenceService). Errors are mapped by meshserve.grpc_errors; per-item stream
failures travel in-band. Every Infer, ModelInfer and stream item passes the replica's
`Admission` first, before any tensor is decoded (modelsvc/admission.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import Token
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from meshserve.errors import InvalidInputError, MeshError, NotFoundError, OverloadedError
from meshserve.grpc_errors import error_to_status, map_errors, map_stream_errors
from meshserve.modelsvc import converters
from meshserve.modelsvc.admission import Admission
from meshserve.modelsvc.core import ModelCore
from meshserve.modelsvc.metrics import ModelMetrics
from meshserve.names import quote
from meshserve.streams import fan_out
from meshserve.telemetry import (
    EMPTY_CONTEXT,
    context_from_traceparent,
    traceparent_sampled,
    tracing_enabled,
)
from meshserve.v1 import grpc_predict_v2_pb2 as v2
from meshserve.v1 import grpc_predict_v2_pb2_grpc as v2_grpc
from meshserve.v1 import model_pb2, model_pb2_grpc

__all__ = ["CURRENT_CALLER", "Callers", "ModelServicer", "OverCore", "StreamItem", "V2Servicer"]

Q = TypeVar("Q")
R = TypeVar("R")

log = logging.getLogger(__name__)

# Requests one InferStream may have in flight before the server stops reading from it.
STREAM_MAX_IN_FLIGHT = 1024
# Longest client id (header value or peer) kept as an admission key.
_CLIENT_KEY_MAX_CHARS = 128
# The trace contexts of the callers whose rows one request carries (None: the current context).
Callers = Sequence[Context | None]
# The callers of a request that carries no trace context of its own: the current context.
CURRENT_CALLER: Final[tuple[None]] = (None,)


def _code_of(exc: BaseException) -> str:
    if isinstance(exc, MeshError):
        return exc.code.name
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    return "INTERNAL"


@contextlib.contextmanager
def _observed(metrics: ModelMetrics, method: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    except BaseException as exc:
        metrics.request_done(method, _code_of(exc), time.monotonic() - started)
        raise
    metrics.request_done(method, "OK", time.monotonic() - started)


def _attach_caller(carrier: Mapping[str, str]) -> Token[Context] | None:
    """Make the caller's W3C trace context in `carrier` current; returns the token to detach
    (None: no traceparent, or the tracing server interceptor already made its RPC span
    current). Only called while tracing_enabled()."""
    if "traceparent" not in carrier or trace.get_current_span().get_span_context().is_valid:
        return None
    return otel_context.attach(propagate.extract(carrier))


def _item_callers(traceparents: Sequence[str], stream_metadata: Mapping[str, str]) -> Callers:
    """The trace context of every sampled caller whose rows a stream item carries (its
    ``traceparents``; the stream's own metadata when it has none), while tracing_enabled().
    Sampled-out callers are skipped before any parsing: an item whose callers are all sampled
    out has none, and nothing is recorded for it."""
    if traceparents:
        return [
            c
            for tp in traceparents
            if traceparent_sampled(tp) and (c := context_from_traceparent(tp))
        ]
    if "traceparent" in stream_metadata:
        return (propagate.extract(dict(stream_metadata)),)
    return CURRENT_CALLER


def _further_callers(traceparents: Sequence[str]) -> Callers:
    """A unary call's callers: the current context (the RPC span, a child of the first caller),
    then every further caller whose rows a client-side micro-batch put in the request."""
    if len(traceparents) < 2:
        return CURRENT_CALLER
    further = (
        c
        for tp in traceparents[1:]
        if traceparent_sampled(tp) and (c := context_from_traceparent(tp))
    )
    return (None, *further)


def _no_traceparents() -> Sequence[str]:
    return ()


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {
        k: v if isinstance(v, str) else v.decode(errors="replace")
        for k, v in (context.invocation_metadata() or ())
    }


def _client_key(context: grpc.aio.ServicerContext[Any, Any], admission: Admission) -> str:
    """The admission key of the caller (only asked while a per-client limit is on): the
    configured client-id header when sent, else the transport peer; at most
    _CLIENT_KEY_MAX_CHARS."""
    header = admission.config.client_id_metadata
    if header:
        for key, value in context.invocation_metadata() or ():
            if key == header:
                text = value if isinstance(value, str) else value.decode(errors="replace")
                return "id:" + text[:_CLIENT_KEY_MAX_CHARS]
    return context.peer()[:_CLIENT_KEY_MAX_CHARS]


def _timeout_s(context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e9 else None


class OverCore:
    """What every servicer holds: the replica's core, metrics, element bound and admission, and
    the admission / tracing / metrics path every unary call and stream item takes."""

    def __init__(
        self, core: ModelCore, metrics: ModelMetrics, max_elements: int, admission: Admission
    ) -> None:
        self._core = core
        self._metrics = metrics
        self._max_elements = max_elements
        self._admission = admission

    async def _admitted(
        self,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        rows_of: Callable[[], int],
        run: Callable[[float | None, Callers], Awaitable[R]],
        traceparents_of: Callable[[], Sequence[str]] = _no_traceparents,
    ) -> R:
        """A unary call: admission first (before any tensor is decoded), the callers' trace
        contexts only while tracing is on (the RPC's own, then those of further callers a
        client-side micro-batch carries: `traceparents_of`), metrics by status;
        `run(call timeout, callers)` does the work."""
        # The hot path: no context managers, metadata read only while tracing is on (or a
        # per-client limit needs the client).
        started = time.monotonic()
        admission = self._admission
        rows = rows_of() if admission.counts_rows else 1
        client = _client_key(context, admission) if admission.per_client else ""
        try:
            admission.admit(rows, client)
        except OverloadedError:
            self._metrics.request_done(method, "RESOURCE_EXHAUSTED", time.monotonic() - started)
            raise
        token: Token[Context] | None = None
        callers: Callers = CURRENT_CALLER
        if tracing_enabled(EMPTY_CONTEXT):
            token, callers = _attach_caller(_metadata(context)), _further_callers(traceparents_of())
        try:
            response = await run(_timeout_s(context), callers)
        except BaseException as exc:
            self._metrics.request_done(method, _code_of(exc), time.monotonic() - started)
            raise
        finally:
            admission.release(rows, client)
            if token is not None:
                otel_context.detach(token)
        self._metrics.request_done(method, "OK", time.monotonic() - started)
        return response

    async def _stream(
        self,
        method: str,
        request_iterator: AsyncIterator[Q],
        context: grpc.aio.ServicerContext[Any, Any],
        item: StreamItem[Q, R],
    ) -> AsyncIterator[R]:
        """Items run concurrently (``meshserve.streams.fan_out``, at most STREAM_MAX_IN_FLIGHT),
        answered as they finish; a failed item gets its id and an in-band Status (an item
        refused by admission: RESOURCE_EXHAUSTED with its retry pushback)."""
        stream_metadata = _metadata(context)
        call_timeout_s = _timeout_s(context)
        admission = self._admission
        client = _client_key(context, admission) if admission.per_client else ""

        async def one(request: Q) -> R:
            started = time.monotonic()
            try:
                rows = item.rows_of(request) if admission.counts_rows else 1
                admission.admit(rows, client)
                try:
                    if not item.id_of(request):
                        raise InvalidInputError(
                            f"{method} items need an id (field {item.id_field!r})"
                        )
                    callers = (
                        _item_callers(item.traceparents(request), stream_metadata)
                        if tracing_enabled(EMPTY_CONTEXT)
                        else CURRENT_CALLER
                    )
                    response = await item.run(request, call_timeout_s, callers)
                finally:
                    admission.release(rows, client)
            except BaseException as exc:
                self._metrics.request_done(method, _code_of(exc), time.monotonic() - started)
                raise
            self._metrics.request_done(method, "OK", time.monotonic() - started)
            return response

        async for response in fan_out(
            request_iterator, one, max_in_flight=STREAM_MAX_IN_FLIGHT, on_error=item.failed
        ):
            yield response


@dataclass(frozen=True)
class StreamItem(Generic[Q, R]):
    """How a stream's items are read and answered (see `OverCore._stream`)."""

    rows_of: Callable[[Q], int]
    id_of: Callable[[Q], str]
    id_field: str
    traceparents: Callable[[Q], Sequence[str]]
    run: Callable[[Q, float | None, Callers], Awaitable[R]]
    failed: Callable[[Q, Exception], R]


class ModelServicer(OverCore, model_pb2_grpc.ModelServiceServicer):
    """meshserve.v1.ModelService over a ModelCore."""

    async def _infer(
        self,
        request: model_pb2.InferRequest,
        timeout_s: float | None,
        callers: Callers = CURRENT_CALLER,
    ) -> model_pb2.InferResponse:
        inputs, outputs, item_timeout_s = converters.request_from_proto(request, self._max_elements)
        if item_timeout_s is not None:
            timeout_s = item_timeout_s if timeout_s is None else min(timeout_s, item_timeout_s)
        result = await self._core.infer(inputs, outputs, timeout_s=timeout_s, callers=callers)
        return converters.response_to_proto(request.id, result, self._core.info.instance_id)

    @map_errors
    async def Infer(
        self, request: model_pb2.InferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> model_pb2.InferResponse:
        return await self._admitted(
            "Infer",
            context,
            lambda: converters.rows_of(request),
            lambda timeout_s, callers: self._infer(request, timeout_s, callers),
            lambda: request.traceparents,
        )

    @map_stream_errors
    async def InferStream(
        self,
        request_iterator: AsyncIterator[model_pb2.InferRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[model_pb2.InferResponse]:
        """See `OverCore._stream`."""

        def failed(request: model_pb2.InferRequest, exc: Exception) -> model_pb2.InferResponse:
            return model_pb2.InferResponse(
                id=request.id, status=error_to_status(exc), instance_id=self._core.info.instance_id
            )

        item = StreamItem(
            rows_of=converters.rows_of,
            id_of=lambda r: r.id,
            id_field="id",
            traceparents=lambda r: r.traceparents,
            run=self._infer,
            failed=failed,
        )
        async for response in self._stream("InferStream", request_iterator, context, item):
            yield response

    @map_errors
    async def GetMetadata(
        self, request: model_pb2.GetMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> model_pb2.ModelMetadata:
        return converters.metadata_to_proto(self._core.info)


class V2Servicer(OverCore, v2_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol (KServe V2) over the same ModelCore, batcher and admission;
    V2 REST (modelsvc/v2_rest.py) calls the same `infer`."""

    @property
    def core(self) -> ModelCore:
        return self._core

    def client_key(self, header_value: str, peer: str) -> str:
        """The admission key of a caller (see `_client_key`), for transports without a context."""
        if header_value and self._admission.config.client_id_metadata:
            return "id:" + header_value[:_CLIENT_KEY_MAX_CHARS]
        return peer[:_CLIENT_KEY_MAX_CHARS]

    @property
    def admission(self) -> Admission:
        return self._admission

    def check_model(self, name: str, version: str) -> None:
        """NotFoundError unless this replica serves model `name` (and `version`, when set)."""
        info = self._core.info
        if name != info.name:
            raise NotFoundError(
                f"model {quote(name)} is not served here (this replica serves '{info.name}')"
            )
        if version and version != info.version:
            raise NotFoundError(
                f"model {quote(name)} version {quote(version)} is not served here "
                f"(this replica serves version '{info.version}')"
            )

    @map_errors
    async def ServerLive(
        self, request: v2.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> v2.ServerLiveResponse:
        return v2.ServerLiveResponse(live=True)

    @map_errors
    async def ServerReady(
        self, request: v2.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=self._core.ready)

    @map_errors
    async def ModelReady(
        self, request: v2.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> v2.ModelReadyResponse:
        self.check_model(request.name, request.version)
        return v2.ModelReadyResponse(ready=self._core.ready)

    @map_errors
    async def ServerMetadata(
        self, request: v2.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> v2.ServerMetadataResponse:
        from meshserve import __version__

        return v2.ServerMetadataResponse(name="meshserve", version=__version__, extensions=[])

    @map_errors
    async def ModelMetadata(
        self, request: v2.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> v2.ModelMetadataResponse:
        self.check_model(request.name, request.version)
        return converters.v2_metadata_to_proto(self._core.info)

    @map_errors
    async def ModelInfer(
        self, request: v2.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> v2.ModelInferResponse:
        admission = self._admission
        return await self.infer(
            request,
            timeout_s=_timeout_s(context),
            client=_client_key(context, admission) if admission.per_client else "",
            carrier=_metadata(context) if tracing_enabled() else None,
        )

    async def infer(
        self,
        request: v2.ModelInferRequest,
        *,
        timeout_s: float | None,
        client: str = "",
        carrier: Mapping[str, str] | None = None,
        method: str = "ModelInfer",
    ) -> v2.ModelInferResponse:
        """One ModelInfer, transport-free (the gRPC method and V2 REST both call it): admission,
        the caller's trace (`carrier`: its metadata, when no span is current yet), validation,
        the batched core, the response; counted under `method`."""
        admission = self._admission
        rows = converters.v2_rows_of(request) if admission.counts_rows else 1
        with _observed(self._metrics, method):
            admission.admit(rows, client)
            token = _attach_caller(carrier) if carrier is not None else None
            try:
                self.check_model(request.model_name, request.model_version)
                inputs, outputs, raw = converters.v2_request_from_proto(request, self._max_elements)
                result = await self._core.infer(inputs, outputs, timeout_s=timeout_s)
                return converters.v2_response_to_proto(request, self._core.info, result, raw)
            finally:
                admission.release(rows, client)
                if token is not None:
                    otel_context.detach(token)
