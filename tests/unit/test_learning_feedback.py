"""Feedback anywhere, exactly once: tokens signed by one hub and applied by another, duplicates
reported, forged / foreign / expired tokens refused, old markers pruned (in-memory KV below the
hub; tests/integration/test_learning_group.py runs the same with real orchestrators)."""

from __future__ import annotations

import hashlib
import hmac
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshserve.errors import InvalidInputError, NotFoundError
from meshserve.orchestrator.learning import HubConfig, LearningHub
from meshserve.orchestrator.learning.decisions import Record
from meshserve.orchestrator.learning.tokens import Decisions, TokenSigner
from meshserve.orchestrator.learning_port import Feedback
from tests.unit.memkv import MemoryKV

ARGS = {"plan": "p", "step": "pick", "arms": ["a", "b"], "policy": "thompson", "epsilon": 0.0}


async def two_hubs(kv: MemoryKV, now: list[float]) -> tuple[LearningHub, LearningHub]:
    hubs = (
        LearningHub(kv, wall_clock=lambda: now[0], instance_id="one"),
        LearningHub(kv, wall_clock=lambda: now[0], instance_id="two"),
    )
    for hub in hubs:
        await hub.start()
    return hubs


def updates(kv: MemoryKV) -> int:
    data = json.loads(kv.data["meshserve/learning/bandits/p/pick"].value)
    return sum(int(a["updates"]) for a in data["arms"])


async def test_a_token_from_one_hub_is_applied_once_by_another():
    kv, now = MemoryKV(), [1_000_000.0]
    one, two = await two_hubs(kv, now)
    await one.choose_arm(**ARGS, context="", request_id="r1", seed=1)
    token = one.token_for("r1")
    assert token and one.token_for("unknown") == b""
    first = await two.apply_feedback(Feedback("r1", reward=1.0, token=token))
    assert first.applied == ("p/pick",) and not first.duplicate
    # the same feedback again, to either hub, with or without the token: said, not applied
    for hub, tok in ((two, token), (one, token), (one, b"")):
        again = await hub.apply_feedback(Feedback("r1", reward=1.0, token=tok))
        assert again.duplicate and again.already_applied == ("p/pick",)
    assert updates(kv) == 1
    with pytest.raises(NotFoundError, match="send the response's feedback_token"):
        await two.apply_feedback(Feedback("r1", reward=1.0))  # two never saw r1 and has no token
    for hub in (one, two):
        await hub.stop()


async def test_labels_reach_a_learner_created_on_another_hub():
    kv, now = MemoryKV(), [1_000_000.0]
    one, two = await two_hubs(kv, now)
    params = {"n_features": 4, "n_classes": 2, "export_every": 0}
    await one.observe("digits", "q1", np.array([1.0, 2.0, 3.0, 4.5]), params)
    outcome = await two.apply_feedback(Feedback("q1", label=1, token=one.token_for("q1")))
    assert outcome.applied == ("digits",)
    assert two.learner("digits").model.updates == 1
    for hub in (one, two):
        await hub.stop()


async def test_bad_tokens_are_refused_with_a_reason():
    kv, now = MemoryKV(), [1_000_000.0]
    one, two = await two_hubs(kv, now)
    await one.choose_arm(**ARGS, context="", request_id="r1", seed=1)
    token = one.token_for("r1")
    forged = token[:-40] + bytes([token[-40] ^ 1]) + token[-39:]
    with pytest.raises(InvalidInputError, match="signature does not verify"):
        await two.apply_feedback(Feedback("r1", reward=1.0, token=forged))
    with pytest.raises(InvalidInputError, match="belongs to request 'r1', not 'r2'"):
        await two.apply_feedback(Feedback("r2", reward=1.0, token=token))
    with pytest.raises(InvalidInputError, match="not a meshserve v1 token"):
        await two.apply_feedback(Feedback("r1", reward=1.0, token=b"\x07garbage"))
    other = TokenSigner([b"another-group-key-0123456789"])
    foreign = other.issue(Decisions("r1", now[0], (Record("bandit", "p/pick", ("", "a")),)))
    with pytest.raises(InvalidInputError, match="key this orchestrator does not have"):
        await two.apply_feedback(Feedback("r1", reward=1.0, token=foreign))
    with pytest.raises(NotFoundError, match="has no learner observation"):
        await two.apply_feedback(Feedback("r1", label=3, token=token))
    now[0] += 3601
    with pytest.raises(NotFoundError, match="feedback is accepted for 3600s"):
        await two.apply_feedback(Feedback("r1", reward=1.0, token=token))
    assert "meshserve/learning/bandits/p/pick" not in kv.data
    for hub in (one, two):
        await hub.stop()


async def test_old_marker_buckets_are_pruned():
    kv, now = MemoryKV(), [100_000.0]
    hub = LearningHub(kv, config=HubConfig(retention_s=100.0), wall_clock=lambda: now[0])
    await hub.start()
    for i in range(3):
        await hub.choose_arm(**ARGS, context="", request_id=f"r{i}", seed=1)
        await hub.feedback(f"r{i}", reward=1.0)
    markers = [k for k in kv.data if k.startswith("meshserve/learning-applied/")]
    assert len(markers) == 3
    assert await hub.prune_markers() == 0  # still inside the window
    now[0] += 350
    assert await hub.prune_markers() == 1
    assert not [k for k in kv.data if k.startswith("meshserve/learning-applied/")]
    await hub.stop()


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(payload=st.one_of(json_values, st.binary(max_size=200)))
def test_a_validly_signed_hostile_payload_is_refused_cleanly(payload):
    """Even with the key (a bug elsewhere, a leaked key), a payload is decoded or refused with
    InvalidInputError / NotFoundError; nothing else escapes."""
    key = b"k" * 32
    body = bytes([1]) + hashlib.sha256(key).digest()[:4]
    body += payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    token = body + hmac.digest(key, body, "sha256")
    try:
        TokenSigner([key]).verify(token, "r")
    except (InvalidInputError, NotFoundError):
        pass


async def test_a_reset_reaches_every_hub_and_old_tokens_still_count_once():
    kv, now = MemoryKV(), [1_000_000.0]
    one, two = await two_hubs(kv, now)
    for i in range(3):
        await one.choose_arm(**ARGS, context="", request_id=f"r{i}", seed=1)
    await one.feedback("r0", reward=1.0)
    await two.reload()
    assert await two.reset(plan="p", step="pick")
    assert updates(kv) == 0
    await one.reload()
    assert one.digest() == two.digest()
    assert sum(a.pulls for a in one.bandit_stats()[0].arms) == 0  # a new generation
    # feedback for a request served before the reset still applies once
    assert await two.feedback("r1", reward=1.0, token=one.token_for("r1")) == ["p/pick"]
    assert updates(kv) == 1
    assert not await two.reset(plan="p", step="other")
    with pytest.raises(InvalidInputError, match="name a bandit"):
        await two.reset(plan="p")
    for hub in (one, two):
        await hub.stop()
