"""Personalised bandits: per-user statistics learn each user's own best arm, at most
`max_users_in_memory` users in memory, evicted ones read back from KV unchanged, and the plan
step refuses requests that do not name their user (in-memory KV below the hub)."""

from __future__ import annotations

import numpy as np
import pytest

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.learning import HubConfig, LearningHub
from meshserve.orchestrator.learning.personal import PersonalConfig
from meshserve.orchestrator.steps.bandit import user_key
from tests.unit.memkv import MemoryKV

ARGS = {"plan": "p", "step": "s", "arms": ["a", "b"], "policy": "thompson", "epsilon": 0.0}


async def test_each_user_learns_its_own_arm_within_the_memory_bound():
    config = HubConfig(personal=PersonalConfig(max_users_in_memory=3))
    hub = LearningHub(MemoryKV(), config=config)
    await hub.start()
    users = [f"u{i}" for i in range(8)]
    world = np.random.default_rng(0)
    for n in range(40):
        for i, user in enumerate(users):
            rid = f"{user}-{n}"
            arm = await hub.choose_arm(**ARGS, context="", request_id=rid, seed=1, user=user)
            best = "a" if i % 2 else "b"
            reward = float(world.random() < (0.9 if arm == best else 0.1))
            await hub.feedback(rid, reward=reward)
            assert len(hub.bandits.personal_store("p", "s")) <= 3
    for i, user in enumerate(users):
        arms = await hub.personal_arms("p", "s", user)
        best = "a" if i % 2 else "b"
        assert arms[best].reward_sum / arms[best].updates > 0.5, (user, arms)
        assert sum(s.updates for s in arms.values()) == 40  # every reward once, none lost
    await hub.stop()


def test_the_user_comes_from_the_routing_key_or_an_attribute():
    assert user_key("routing_key", "alice", {}) == "alice"
    assert user_key("attribute:group", "", {"group": "g7"}) == "g7"
    with pytest.raises(InvalidInputError, match="needs a routing_key"):
        user_key("routing_key", "", {})
    with pytest.raises(InvalidInputError, match="needs the attribute 'group'"):
        user_key("attribute:group", "x", {})
    with pytest.raises(InvalidInputError, match="expected 'routing_key' or 'attribute:NAME'"):
        user_key("cookie", "x", {})
