"""Feedback from a real NATS JetStream into a real LearningHub (state in the real Consul agent):
every reward applied exactly once although some are published twice and redelivered, malformed and
unmatched messages dead-lettered with the reason, nothing lost."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit

import nats
import pytest

from meshserve.orchestrator.feedback_stream import (
    APPLIED,
    DEAD_LETTERED,
    DUPLICATE,
    FeedbackApplier,
    FeedbackStreamConfig,
    FeedbackStreamConsumer,
)
from meshserve.orchestrator.learning import HubConfig, LearningHub
from meshserve.registry import KV, ConsulConfig
from tests.stores import NATS_URL, require_service, unique_name
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

ARGS = {"plan": "p", "step": "pick", "arms": ["a", "b"], "policy": "thompson", "epsilon": 0.0}


@pytest.fixture
async def hub(consul_addr):
    async with KV(ConsulConfig(consul_addr)) as kv:
        learning = LearningHub(kv, config=HubConfig(kv_prefix=f"test/{uuid.uuid4().hex[:8]}/l/"))
        await learning.start()
        yield learning
        await learning.stop()


@pytest.fixture
async def stream():
    parts = urlsplit(NATS_URL)
    require_service("NATS", parts.hostname or "127.0.0.1", parts.port or 4222)
    name = unique_name("FEEDBACK").upper()
    config = FeedbackStreamConfig(
        url=NATS_URL, stream=name, subject=f"{name}.in", dead_letter_subject=f"{name}.dead",
        durable=f"{name}-orch", fetch_wait_s=0.2, retry_delay_s=0.1,
    )  # fmt: skip
    nc = await nats.connect(NATS_URL)
    try:
        yield config, nc
    finally:
        js = nc.jetstream()
        try:
            await js.delete_stream(name)
        except Exception:
            pass
        await nc.close()


async def test_stream_feedback_applied_exactly_once_and_malformed_dead_lettered(hub, stream):
    config, nc = stream
    js = nc.jetstream()
    ids = [f"req-{i}" for i in range(30)]
    for rid in ids:
        await hub.choose_arm(**ARGS, context="", request_id=rid, seed=3)
    consumer = FeedbackStreamConsumer(hub, config)
    await consumer.start()  # creates the stream
    try:
        good = [json.dumps({"request_id": rid, "reward": 1.0 if i % 2 else 0.0}).encode()
                for i, rid in enumerate(ids)]  # fmt: skip
        for data in good:
            await js.publish(config.subject, data)
        for data in good[:5]:  # the publisher retried: the same feedback twice
            await js.publish(config.subject, data)
        malformed = [b"not json", b'{"request_id": "req-1"}', b'{"request_id": "x", "reward": 7}',
                     b'[1, 2]', b'{"request_id": "req-2", "reward": "high"}']  # fmt: skip
        for data in malformed:
            await js.publish(config.subject, data)
        await js.publish(config.subject, json.dumps({"request_id": "nobody", "label": 1}).encode())
        total = len(good) + 5 + len(malformed) + 1

        await wait_until(lambda: sum(consumer.counts.values()) >= total, 30.0, "all handled")
        assert consumer.counts[APPLIED] == 30
        assert consumer.counts[DUPLICATE] == 5
        assert consumer.counts[DEAD_LETTERED] == len(malformed) + 1
        arms = hub.bandit_stats()[0].arms
        assert sum(a.pulls for a in arms) == 30
        assert sum(a.alpha + a.beta - 2 for a in arms) == 30  # each reward applied once
        assert sum(a.reward_sum for a in arms) == 15

        dead = await js.pull_subscribe(config.dead_letter_subject, durable=f"{config.stream}-dlq")
        letters = await dead.fetch(len(malformed) + 1, timeout=5)
        reasons = sorted(m.headers["Meshserve-Reason"] for m in letters)
        assert reasons == ["malformed"] * len(malformed) + ["unmatched"]
        assert sorted(m.data for m in letters if m.headers["Meshserve-Reason"] == "malformed") == (
            sorted(malformed)
        )
        for m in letters:
            await m.ack()
        info = await js.consumer_info(config.stream, config.durable)
        assert info.num_pending == 0 and info.num_ack_pending == 0  # nothing left behind
    finally:
        await consumer.stop()


async def test_redelivery_after_a_lost_ack_is_not_applied_twice(hub):
    applier = FeedbackApplier(hub)
    await hub.choose_arm(**ARGS, context="", request_id="once", seed=1)
    data = json.dumps({"request_id": "once", "reward": 1.0}).encode()
    assert (await applier.handle(data, deliveries=1)).kind == APPLIED
    again = await applier.handle(data, deliveries=2)  # JetStream redelivered: our ack was lost
    assert again.kind == DUPLICATE
    assert sum(a.alpha + a.beta - 2 for a in hub.bandit_stats()[0].arms) == 1
