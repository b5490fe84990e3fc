"""Bandit math and the hub's decision/feedback bookkeeping (in-memory KV below the hub)."""

from __future__ import annotations

import numpy as np
import pytest

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.learning import LearningHub
from meshserve.orchestrator.learning.bandits import ArmState, BanditState, choose, normalise_policy
from meshserve.orchestrator.learning.decisions import DecisionMemory, Record
from meshserve.orchestrator.learning_port import Feedback
from tests.unit.memkv import MemoryKV

ARMS = ["good", "bad"]
RATES = {"good": 0.8, "bad": 0.3}


def simulate(policy: str, n: int, seed: int, epsilon: float = 0.1) -> list[str]:
    state = BanditState()
    rng = np.random.default_rng(seed)
    world = np.random.default_rng(seed + 1)
    chosen = []
    for _ in range(n):
        arm = choose(state, "", ARMS, policy, epsilon, rng)
        reward = float(world.random() < RATES[arm])
        state.arms[("", arm)] = state.get("", arm).rewarded(reward)
        chosen.append(arm)
    return chosen


@pytest.mark.parametrize("policy", ["thompson", "epsilon_greedy"])
def test_converges_to_the_better_arm(policy):
    chosen = simulate(policy, 400, seed=7)
    assert chosen[-100:].count("good") > 85, chosen[-100:].count("good")


def test_seeded_choices_are_reproducible():
    assert simulate("thompson", 50, seed=3) == simulate("thompson", 50, seed=3)


def test_beta_update_and_epsilon_greedy_tries_unrated_arms_first():
    s = ArmState().rewarded(1.0).rewarded(0.25)
    assert (s.alpha, s.beta, s.updates, s.reward_sum) == (2.25, 1.75, 2, 1.25)
    state = BanditState({("", "a"): ArmState(updates=3, reward_sum=3.0)})
    rng = np.random.default_rng(0)
    assert choose(state, "", ["a", "b"], "epsilon_greedy", 0.0, rng) == "b"


def test_policy_names_and_bad_arguments():
    assert normalise_policy("BANDIT_POLICY_EPSILON_GREEDY") == "epsilon_greedy"
    assert normalise_policy(0) == "thompson"
    with pytest.raises(InvalidInputError, match="unknown bandit policy 'ucb'"):
        normalise_policy("ucb")
    with pytest.raises(InvalidInputError, match="epsilon must be in"):
        choose(BanditState(), "", ["a"], "epsilon_greedy", 2.0, np.random.default_rng(0))


def test_decision_memory_is_bounded_and_expires():
    now = [0.0]
    memory = DecisionMemory(max_requests=2, ttl_s=10, clock=lambda: now[0])
    for rid in ("r1", "r2", "r3"):
        memory.add(rid, Record("bandit", "p/s", ("", "a")))
    assert memory.take("r1", "bandit") == []  # evicted by size
    assert len(memory.take("r2", "bandit")) == 1
    assert memory.take("r2", "bandit") == []  # taken once
    now[0] = 11
    assert memory.take("r3", "bandit") == []  # expired


async def test_hub_feedback_updates_the_chosen_arm_per_context():
    kv = MemoryKV()
    hub = LearningHub(kv)
    await hub.start()
    args = {"plan": "p", "step": "pick", "arms": ARMS, "policy": "thompson", "epsilon": 0.0}
    a1 = await hub.choose_arm(**args, context="gold", request_id="r1", seed=1)
    a2 = await hub.choose_arm(**args, context="", request_id="r2", seed=1)
    assert await hub.feedback("r1", reward=1.0) == ["p/pick"]
    assert await hub.feedback("r2", reward=0.0) == ["p/pick"]
    arms = {(a.context, a.arm): a for a in hub.bandit_stats()[0].arms}
    assert arms[("gold", a1)].alpha == 2.0 and arms[("gold", a1)].pulls == 1
    assert arms[("", a2)].beta == 2.0
    again = await hub.apply_feedback(Feedback("r1", reward=1.0))  # a retry: said, not applied
    assert again.duplicate and again.already_applied == ("p/pick",) and again.applied == ()
    assert {(a.context, a.arm): a.alpha for a in hub.bandit_stats()[0].arms}[("gold", a1)] == 2.0
    with pytest.raises(InvalidInputError, match=r"reward 1.5 must be in \[0, 1\]"):
        await hub.feedback("r2", reward=1.5)
    with pytest.raises(InvalidInputError, match="exactly one of"):
        await hub.feedback("r2")
    # the persisted document reloads into an identical hub
    other = LearningHub(kv)
    await other.start()
    again = {(a.context, a.arm): a.alpha for a in other.bandit_stats()[0].arms}
    assert again == {k: v.alpha for k, v in arms.items()}
    await other.stop()
    await hub.stop()


async def test_a_follower_applies_feedback_too():
    class Follower:
        is_leader = False

    hub = LearningHub(MemoryKV(), leader=Follower(), instance_id="orch-2")
    await hub.start()
    await hub.choose_arm(
        plan="p", step="s", arms=ARMS, policy="thompson", epsilon=0, context="",
        request_id="r", seed=0,
    )  # fmt: skip
    assert await hub.feedback("r", reward=1.0) == ["p/s"]
    await hub.stop()


async def test_failed_persist_is_not_acknowledged_and_can_be_retried():
    kv = MemoryKV()
    hub = LearningHub(kv)
    await hub.start()
    await hub.choose_arm(
        plan="p", step="s", arms=ARMS, policy="thompson", epsilon=0, context="",
        request_id="r", seed=0,
    )  # fmt: skip
    kv.fail_next = True
    with pytest.raises(ConnectionError):
        await hub.feedback("r", reward=1.0)
    assert all(a.alpha == 1.0 for a in hub.bandit_stats()[0].arms)
    assert await hub.feedback("r", reward=1.0) == ["p/s"]  # nothing was marked applied
    await hub.stop()
