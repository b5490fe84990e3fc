"""The feedback applier (transport-free) and the consumer's start. Hostile messages: whatever
the bytes, the applier answers with an outcome (never an exception), malformed ones are
dead-lettered with a reason a person can act on, and a well-formed message reaches
Learning.apply_feedback exactly once per request id; unreachable NATS fails start() clearly."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from meshserve.errors import NotFoundError
from meshserve.orchestrator.feedback_stream import (
    APPLIED,
    DEAD_LETTERED,
    DUPLICATE,
    FeedbackApplier,
)
from meshserve.orchestrator.learning_port import Feedback, FeedbackOutcome


class Recording:
    """Learning that knows the ids r0..r9 (an in-memory stand-in above the real interface)."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, float | None, int | None]] = []

    async def choose_arm(self, **_: object) -> str:  # pragma: no cover - unused
        return ""

    def token_for(self, request_id: str) -> bytes:  # pragma: no cover - unused
        return b""

    async def apply_feedback(self, feedback: Feedback) -> FeedbackOutcome:
        request_id = feedback.request_id
        if request_id not in {f"r{i}" for i in range(10)} or any(
            r == request_id for r, _, _ in self.applied
        ):
            raise NotFoundError(f"request {request_id!r} has no pending decision")
        self.applied.append((request_id, feedback.reward, feedback.label))
        return FeedbackOutcome(request_id, ("p/step",))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
messages = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "request_id": st.one_of(
                st.sampled_from([f"r{i}" for i in range(10)]), st.text(max_size=300)
            )
        },
        optional={"reward": json_values, "label": json_values},
    ).map(lambda v: json.dumps(v).encode()),
)


_LOOP = asyncio.new_event_loop()  # one loop for every example (asyncio.run each is slow)


@settings(max_examples=60, deadline=None)
@given(st.lists(messages, max_size=12))
def test_any_message_gets_an_outcome_and_ids_apply_once(batch):
    learning = Recording()
    applier = FeedbackApplier(learning)

    async def run() -> list:
        return [await applier.handle(data) for data in batch]

    outcomes = _LOOP.run_until_complete(run())
    for outcome in outcomes:
        assert outcome.kind in (APPLIED, DUPLICATE, DEAD_LETTERED)
        if outcome.kind == DEAD_LETTERED:
            assert outcome.reason in ("malformed", "unmatched") and outcome.detail
            assert len(outcome.detail) < 1000
    ids = [r for r, _, _ in learning.applied]
    assert len(ids) == len(set(ids))
    assert sum(o.kind == APPLIED for o in outcomes) == len(ids)


async def test_unreachable_nats_is_unavailable_at_start_without_the_url():
    from meshserve.errors import UnavailableError
    from meshserve.orchestrator.feedback_stream import FeedbackStreamConfig, FeedbackStreamConsumer

    config = FeedbackStreamConfig(url="nats://user:s3cret@127.0.0.1:1", connect_timeout_s=1.0)
    consumer = FeedbackStreamConsumer(Recording(), config)
    try:
        await consumer.start()
    except UnavailableError as exc:
        assert "s3cret" not in exc.message and "meshserve.feedback" in exc.message
    else:  # pragma: no cover
        raise AssertionError("start() should fail")
    finally:
        await consumer.stop()
