"""The CLIENT spans of one attempt: one in the trace of every caller whose rows it carries.

A micro-batch carries the rows of several callers, each with a trace of its own. So that every
caller's trace shows its own model call (and, on the replica, its own share of the batch), an
attempt records one CLIENT span per sampled caller, a child of that caller's span, named and
attributed by the RPC semantic conventions (``meshserve.v1.ModelService/InferStream``,
``rpc.system``, ``rpc.service``, ``rpc.method``, ``server.address``, ``server.port``,
``rpc.grpc.status_code``) plus ``meshserve.model``, ``meshserve.endpoint``,
``meshserve.attempt`` (1 = first try; retries and hedges are later attempts, each with its own
spans and ``meshserve.retry_reason``) and ``meshserve.batch_requests``.

The request then carries those spans' traceparents in caller order (``InferRequest.traceparents``),
and unary calls the first one in their metadata too. A caller that is sampled out gets no span,
but its (unsampled) traceparent still travels, so the replica records nothing for it either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode

from meshserve.errors import MeshError
from meshserve.orchestrator.datapath.replica import Replica
from meshserve.telemetry import traceparent_of
from meshserve.v1 import model_pb2

__all__ = ["MODEL_SERVICE", "NO_METADATA", "ClientSpans"]

MODEL_SERVICE = "meshserve.v1.ModelService"
NO_METADATA: tuple[tuple[str, str], ...] = ()
_OK = grpc.StatusCode.OK.value[0]
_CANCELLED = grpc.StatusCode.CANCELLED.value[0]


def _attributes(
    replica: Replica, model: str, attempt: int, reason: str, callers: int
) -> dict[str, str | int]:
    host, _, port = replica.endpoint.target.rpartition(":")
    attrs: dict[str, str | int] = {
        "rpc.system": "grpc",
        "rpc.service": MODEL_SERVICE,
        "rpc.method": replica.rpc_method,
        "server.address": host,
        "server.port": int(port) if port.isdigit() else 0,
        "meshserve.model": model,
        "meshserve.endpoint": replica.instance_id,
        "meshserve.attempt": attempt,
        "meshserve.batch_requests": callers,
    }
    if reason:
        attrs["meshserve.retry_reason"] = reason
    return attrs


class ClientSpans:
    """``with ClientSpans(...) as spans:`` around one attempt; sets the request's traceparents
    on entry, ends every span on exit (``failed(err)`` first when the attempt failed)."""

    __slots__ = ("metadata", "spans")

    def __init__(
        self,
        tracer: trace.Tracer,
        replica: Replica,
        model: str,
        attempt: int,
        reason: str,
        callers: Sequence[SpanContext | None],
        request: model_pb2.InferRequest,
    ) -> None:
        self.spans: list[Span] = []
        traceparents: list[str] = []
        attrs: dict[str, str | int] | None = None  # built for the first sampled caller only
        for parent in callers or (None,):
            if parent is not None and not parent.trace_flags.sampled:
                traceparents.append(traceparent_of(parent))  # sampled out: no span anywhere
                continue
            if attrs is None:
                attrs = _attributes(replica, model, attempt, reason, max(1, len(callers)))
            context = (
                None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
            )
            span = tracer.start_span(
                f"{MODEL_SERVICE}/{attrs['rpc.method']}",
                context=context,
                kind=SpanKind.CLIENT,
                attributes=attrs,
            )
            self.spans.append(span)
            traceparents.append(traceparent_of(span.get_span_context()))
        del request.traceparents[:]
        request.traceparents.extend(tp for tp in traceparents if tp)
        first = traceparents[0] if traceparents else ""
        self.metadata = (("traceparent", first),) if first else NO_METADATA

    def failed(self, err: MeshError) -> None:
        """Record the attempt's failure (status code and ERROR status) on every span."""
        for span in self.spans:
            span.set_attribute("rpc.grpc.status_code", err.code.value[0])
            span.set_status(Status(StatusCode.ERROR, err.reason))

    def __enter__(self) -> ClientSpans:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        for span in self.spans:
            if exc is None:
                span.set_attribute("rpc.grpc.status_code", _OK)
            elif isinstance(exc, asyncio.CancelledError):  # a lost hedge race, a caller gone
                span.set_attribute("rpc.grpc.status_code", _CANCELLED)
            span.end()
