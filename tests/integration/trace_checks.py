"""Checks on the shape of meshserve traces, shared by the JSON-lines and the OTLP tests.

The contract they check (orchestrator/datapath/spans.py, modelsvc/core.py): every request's own
trace holds, for each of its model calls, one CLIENT span per attempt under the step that made
the call (RPC semantic-convention name and attributes), and under the successful attempt the
replica's ``modelsvc.request`` span - that request's share of the batch - linked to the
``modelsvc.batch`` span that ran it (which links back).
"""

from __future__ import annotations

from dataclasses import dataclass

from meshserve.telemetry import SpanRecord

MODEL_RPC_PREFIX = "meshserve.v1.ModelService/"
GRPC_OK = "0"
GRPC_CANCELLED = "1"


def by_trace(spans: list[SpanRecord]) -> dict[str, list[SpanRecord]]:
    out: dict[str, list[SpanRecord]] = {}
    for span in spans:
        out.setdefault(span.trace_id, []).append(span)
    return out


def ancestors(span: SpanRecord, by_id: dict[str, SpanRecord]) -> list[SpanRecord]:
    chain = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span)
    return chain


@dataclass(frozen=True)
class ModelCall:
    """One model call of one request, as its own trace shows it."""

    step: str
    model: str
    attempts: list[SpanRecord]  # CLIENT spans in attempt order
    share: SpanRecord  # the replica's modelsvc.request under the successful attempt
    batch: SpanRecord  # the replica's modelsvc.batch the share is linked to


def model_calls(
    trace: list[SpanRecord], all_spans: list[SpanRecord], step: str, model: str
) -> ModelCall:
    """The call of `model` made by step `step` in `trace`, checked against the contract."""
    by_id = {s.span_id: s for s in trace}
    (step_span,) = [s for s in trace if s.name == f"step {step}"]
    attempts = sorted(
        (
            s
            for s in trace
            if s.kind == "CLIENT"
            and s.name.startswith(MODEL_RPC_PREFIX)
            and s.attributes.get("meshserve.model") == model
            and step_span in ancestors(s, by_id)
        ),
        key=lambda s: int(s.attributes["meshserve.attempt"]),
    )
    where = f"trace {trace[0].trace_id} step {step} model {model}"
    assert attempts, f"{where}: no CLIENT span for the model call"
    for span in attempts:
        attrs = span.attributes
        method = span.name.removeprefix(MODEL_RPC_PREFIX)
        assert attrs["rpc.system"] == "grpc", (where, attrs)
        assert attrs["rpc.service"] == "meshserve.v1.ModelService", (where, attrs)
        assert attrs["rpc.method"] == method and method in ("InferStream", "Infer"), where
        assert attrs["server.address"] and int(attrs["server.port"]) > 0, (where, attrs)
        assert "rpc.grpc.status_code" in attrs, (where, attrs)
    numbers = [int(s.attributes["meshserve.attempt"]) for s in attempts]
    assert numbers[0] == 1 and len(set(numbers)) == len(numbers), (where, numbers)
    ok = [s for s in attempts if s.attributes["rpc.grpc.status_code"] == GRPC_OK]
    assert len(ok) == 1, (where, [(s.attributes, s.status) for s in attempts])
    for other in (s for s in attempts if s is not ok[0]):
        # A failed attempt is an error; a cancelled one lost a hedge race (or its caller left).
        if other.attributes["rpc.grpc.status_code"] != GRPC_CANCELLED:
            assert other.status == "ERROR", (where, other)
    shares = [
        s for s in trace if s.name == "modelsvc.request" and s.parent_span_id == ok[0].span_id
    ]
    assert len(shares) == 1, (where, shares)
    share = shares[0]
    assert share.service == model, (where, share.service)
    batches = {(s.trace_id, s.span_id): s for s in all_spans if s.name == "modelsvc.batch"}
    linked = [
        batches[(ln.trace_id, ln.span_id)]
        for ln in share.links
        if (ln.trace_id, ln.span_id) in batches
    ]
    assert len(linked) == 1, (where, share.links)
    batch = linked[0]
    assert share.span_id in batch.linked_span_ids, (where, "the batch does not link back")
    return ModelCall(step, model, attempts, share, batch)
