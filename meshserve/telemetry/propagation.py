"""W3C trace context for stream items, and spans that join many requests (batches).

gRPC calls carry ``traceparent`` in their metadata (see interceptors.py). Items on a long-lived
stream cannot: the streaming batcher puts each caller's traceparent in the item
(``InferRequest.traceparents``), and the server starts its spans from them:

- ``current_traceparent()`` on the calling side, inside the caller's span;
- ``start_request_span(name, traceparents)`` on the serving side for one item: a child of the
  first caller, linked to the others;
- ``start_batch_span(name, traceparents)`` around the call that serves many items: a new root
  span linked to every request span (OpenTelemetry's batch-processing convention).

All of them cost next to nothing when tracing is off (the API hands out non-recording spans and
``current_traceparent()`` returns "").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from meshserve.telemetry._state import EMPTY_CONTEXT, tracing_enabled

__all__ = [
    "context_from_traceparent",
    "current_traceparent",
    "links_from_traceparents",
    "span_context_from_traceparent",
    "start_batch_span",
    "start_request_span",
    "traceparent_of",
    "traceparent_sampled",
]

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACER_NAME = "meshserve.telemetry"


def current_traceparent() -> str:
    """The W3C traceparent of the current span, or "" when there is no recording span."""
    return traceparent_of(trace.get_current_span().get_span_context())


def traceparent_of(span_context: SpanContext) -> str:
    """Format a span context as ``00-<trace id>-<span id>-<flags>`` ("" if invalid)."""
    if not span_context.is_valid:
        return ""
    sc = span_context
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}"


def context_from_traceparent(traceparent: str) -> Context | None:
    """A context whose current span is the remote span `traceparent` names; None if malformed."""
    if not traceparent:
        return None
    ctx = _PROPAGATOR.extract({"traceparent": traceparent})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def traceparent_sampled(traceparent: str) -> bool:
    """Whether a W3C traceparent (``00-<trace>-<span>-<flags>``) has the sampled flag, read from
    its last field without building a context: the cheap test before parsing one."""
    flags = traceparent[-2:]
    try:
        return bool(int(flags, 16) & 1) if len(traceparent) >= 55 else False
    except ValueError:
        return False


def span_context_from_traceparent(traceparent: str) -> SpanContext | None:
    """The remote span context `traceparent` names; None if empty or malformed."""
    ctx = context_from_traceparent(traceparent)
    return None if ctx is None else trace.get_current_span(ctx).get_span_context()


def links_from_traceparents(traceparents: Iterable[str]) -> list[Link]:
    """One span link per distinct valid traceparent (malformed ones are skipped)."""
    seen: set[tuple[int, int]] = set()
    links: list[Link] = []
    for tp in traceparents:
        sc = span_context_from_traceparent(tp)
        if sc is not None and (sc.trace_id, sc.span_id) not in seen:
            seen.add((sc.trace_id, sc.span_id))
            links.append(Link(sc))
    return links


@contextmanager
def start_batch_span(
    name: str,
    traceparents: Iterable[str],
    *,
    attributes: Mapping[str, AttributeValue] | None = None,
    tracer: trace.Tracer | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """Start (as current) a root span linked to every request span named in `traceparents`.

    Duplicate and malformed traceparents are ignored. Children created inside the block
    (e.g. ``modelsvc.inference``) belong to the batch's trace.
    """
    tracer = tracer or trace.get_tracer(_TRACER_NAME)
    # A root span: only whether an SDK is installed matters, not the current span's sampling.
    links = links_from_traceparents(traceparents) if tracing_enabled(EMPTY_CONTEXT) else []
    attrs: dict[str, Any] = dict(attributes or {})
    attrs.setdefault("meshserve.batch_links", len(links))
    with tracer.start_as_current_span(
        name, context=Context(), kind=kind, links=links, attributes=attrs
    ) as span:
        yield span


@contextmanager
def start_request_span(
    name: str,
    traceparents: Iterable[str],
    *,
    attributes: Mapping[str, AttributeValue] | None = None,
    tracer: trace.Tracer | None = None,
    kind: SpanKind = SpanKind.SERVER,
) -> Iterator[Span]:
    """Start (as current) a span for one stream item: a child of the first valid traceparent,
    linked to the other callers whose rows the item carries. A root span when none is valid."""
    tracer = tracer or trace.get_tracer(_TRACER_NAME)
    parents = list(traceparents)
    parent_ctx: Context | None = None
    for tp in parents:
        parent_ctx = context_from_traceparent(tp)
        if parent_ctx is not None:
            break
    parent_sc = (
        None if parent_ctx is None else trace.get_current_span(parent_ctx).get_span_context()
    )
    links = [
        ln
        for ln in links_from_traceparents(parents)
        if parent_sc is None or ln.context.span_id != parent_sc.span_id
    ]
    with tracer.start_as_current_span(
        name,
        context=parent_ctx if parent_ctx is not None else Context(),
        kind=kind,
        links=links,
        attributes=dict(attributes or {}),
    ) as span:
        yield span
