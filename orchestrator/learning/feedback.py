"""Feedback as a value, its outcome, and the durable "already applied" markers (exactly once).

``LearningHub.apply_feedback(Feedback) -> FeedbackOutcome`` is the one entry point that applies
feedback: the Feedback RPC calls it, and so must any other feedback source (a stream consumer).

Exactly once, per request and step: applying feedback to a step is one Consul transaction that
writes the step's new state with check-and-set *and* creates the marker
``<prefix>-applied/<bucket>/<digest of request id, kind, step>`` (cas=0, "only create"). Either
both happen or neither; a marker that already exists means the step had this request's
feedback already (a retry, a duplicate, the same feedback sent to two orchestrators), and the
outcome says so instead of applying it again. The bucket is ``floor(issued_s / bucket_s)`` of
the request's issue time (carried in its token), so a request's marker has one key whichever
orchestrator applies it; buckets older than the retention window are deleted whole
(`prune_buckets`), which is why feedback older than the window is refused.
"""

from __future__ import annotations

import hashlib
import json

from meshserve.names import kv_key
from meshserve.orchestrator.learning.decisions import Record
from meshserve.orchestrator.learning.tokens import Decisions
from meshserve.orchestrator.learning_port import Feedback, FeedbackOutcome

__all__ = [
    "Feedback",
    "FeedbackOutcome",
    "marker_for",
    "marker_key",
    "marker_value",
    "stale_buckets",
]


def _bucket(issued_s: float, bucket_s: float) -> int:
    return int(issued_s // bucket_s)


def marker_key(
    prefix: str, request_id: str, kind: str, key: str, issued_s: float, bucket_s: float
) -> str:
    """The KV key whose existence says "this request's feedback reached this step"."""
    digest = hashlib.sha256(f"{request_id}\0{kind}\0{key}".encode()).hexdigest()[:40]
    return kv_key(prefix, str(_bucket(issued_s, bucket_s)), digest)


def marker_for(
    prefix: str, decisions: Decisions, record: Record, bucket_s: float
) -> tuple[str, bytes]:
    """(key, value) of the marker of `record` of the request in `decisions`."""
    rid, issued = decisions.request_id, decisions.issued_s
    return (
        marker_key(prefix, rid, record.kind, record.key, issued, bucket_s),
        marker_value(rid, record.kind, record.key, issued),
    )


def marker_value(request_id: str, kind: str, key: str, issued_s: float) -> bytes:
    return json.dumps(
        {"request_id": request_id[:200], "kind": kind, "key": key, "issued_s": issued_s},
        separators=(",", ":"),
    ).encode()


def stale_buckets(
    buckets: list[int], now_s: float, retention_s: float, bucket_s: float
) -> list[int]:
    """Buckets no accepted token can fall into any more (one bucket of margin for skew)."""
    oldest_live = _bucket(now_s - retention_s, bucket_s) - 1
    return [b for b in buckets if b < oldest_live]
