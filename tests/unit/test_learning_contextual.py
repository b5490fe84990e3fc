"""LinUCB against a simulated contextual problem with a known best arm per context: its regret
beats the context-free bandits'; its state round-trips through KV documents and feedback tokens;
the bandit-policy table matches the proto enum."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.learning import LearningHub
from meshserve.orchestrator.learning.bandits import BANDIT_POLICIES, BanditState, choose
from meshserve.orchestrator.learning_port import Feedback
from meshserve.v1 import plan_pb2
from tests.unit.memkv import MemoryKV

ARMS = ["left", "right", "up"]
WEIGHTS = np.array([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])  # arm k pays sigmoid(w_k . x)


def regret(policy: str, rounds: int, seed: int) -> float:
    """Cumulative expected regret over `rounds` requests with features x ~ U[-1, 1]^2."""
    rng, world = np.random.default_rng(seed), np.random.default_rng(seed + 100)
    state, total = BanditState(), 0.0
    for _ in range(rounds):
        x = world.uniform(-1, 1, size=2)
        p = 1 / (1 + np.exp(-(WEIGHTS @ x)))
        arm = choose(state, "", ARMS, policy, 0.1, rng, features=list(x))
        k = ARMS.index(arm)
        total += float(p.max() - p[k])
        reward = float(world.random() < p[k])
        contextual = BANDIT_POLICIES.get(policy).contextual
        state = state.rewarded("", arm, reward, list(x) if contextual else None)
    return total


def test_linucb_regret_beats_the_context_free_bandits():
    rounds, seeds = 1500, (1, 2, 3)
    linucb = np.mean([regret("linucb", rounds, s) for s in seeds])
    thompson = np.mean([regret("thompson", rounds, s) for s in seeds])
    greedy = np.mean([regret("epsilon_greedy", rounds, s) for s in seeds])
    assert linucb < 0.5 * min(thompson, greedy), (linucb, thompson, greedy)


def test_linucb_needs_features_and_keeps_their_dimension():
    state = BanditState()
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidInputError, match="is contextual"):
        choose(state, "", ARMS, "linucb", 0.0, rng)
    with pytest.raises(InvalidInputError, match="finite numbers"):
        choose(state, "", ARMS, "linucb", 0.0, rng, features=[float("nan")])
    state = state.rewarded("", "left", 1.0, [1.0, 2.0])
    with pytest.raises(InvalidInputError, match="learned over 2 features, this request has 3"):
        choose(state, "", ARMS, "linucb", 0.0, rng, features=[1.0, 2.0, 3.0])
    again = BanditState.from_json(json.loads(json.dumps(state.to_json())))
    np.testing.assert_array_equal(again.linear[("", "left")].a, state.linear[("", "left")].a)


async def test_features_travel_in_the_token_to_another_hub():
    kv = MemoryKV()
    one, two = LearningHub(kv), LearningHub(kv)
    await one.start()
    await two.start()
    arm = await one.choose_arm(
        plan="p", step="s", arms=ARMS, policy="linucb", epsilon=0.0, context="",
        request_id="r", seed=1, features=[0.5, -0.25],
    )  # fmt: skip
    outcome = await two.apply_feedback(Feedback("r", reward=1.0, token=one.token_for("r")))
    assert outcome.applied == ("p/s",)
    learned = two.bandits.bandits[("p", "s")].state.linear[("", arm)]
    np.testing.assert_allclose(learned.b, [0.5, -0.25, 1.0])
    await one.reload()
    assert one.digest() == two.digest()
    await one.stop()
    await two.stop()


def test_the_policy_table_matches_the_bandit_policy_enum():
    names = {
        v.name.removeprefix("BANDIT_POLICY_").lower()
        for v in plan_pb2.BanditPolicy.DESCRIPTOR.values
        if v.number != plan_pb2.BANDIT_POLICY_UNSPECIFIED
    }
    assert set(BANDIT_POLICIES) == names
