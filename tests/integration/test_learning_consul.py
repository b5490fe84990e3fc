"""Learned state in a real Consul agent: durable feedback, restart resumes, CAS between writers,
feedback applied by a follower and seen by the leader (real LeaderElection), and a learner
version deployed as a real model service process that answers like the numpy weights."""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import numpy as np
import pytest
from sklearn.datasets import load_digits

from meshserve.orchestrator.learning import HubConfig, LearnerConfig, LearningHub
from meshserve.orchestrator.learning.personal import PersonalConfig
from meshserve.orchestrator.learning.rollout import DeployConfig, ProcessDeployer
from meshserve.orchestrator.learning_port import Feedback
from meshserve.orchestrator.store import TRAFFIC_PREFIX
from meshserve.orchestrator.traffic_kv import TrafficPolicies
from meshserve.registry import KV, ConsulConfig, EndpointWatcher, LeaderElection
from meshserve.tensors import from_numpy, to_numpy
from meshserve.v1 import model_pb2, model_pb2_grpc
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix() -> str:
    return f"test/{uuid.uuid4().hex[:8]}/learning/"


@pytest.fixture
async def kv(consul_addr):
    async with KV(ConsulConfig(consul_addr)) as store:
        yield store


ARGS = {"plan": "p", "step": "pick", "arms": ["a", "b"], "policy": "thompson", "epsilon": 0.0}


async def test_acknowledged_feedback_survives_a_restart(kv, prefix):
    hub = LearningHub(kv, config=HubConfig(kv_prefix=prefix))
    await hub.start()
    for i in range(20):
        await hub.choose_arm(**ARGS, context="gold" if i % 2 else "", request_id=f"r{i}", seed=5)
        await hub.feedback(f"r{i}", reward=float(i % 3 == 0))
    before = hub.bandit_stats()
    await hub.stop()  # nothing is flushed at stop: every ack was already persisted
    entry = await kv.get(f"{prefix}bandits/p/pick")
    assert entry is not None and json.loads(entry.value)["arms"]
    again = LearningHub(kv, config=HubConfig(kv_prefix=prefix))
    await again.start()
    after = again.bandit_stats()
    strip = lambda stats: [(a.context, a.arm, a.alpha, a.beta, a.reward_sum) for a in stats[0].arms]  # noqa: E731
    assert strip(after) == strip(before)
    assert sum(a.alpha + a.beta - 2 for a in after[0].arms) == 20
    await again.stop()


async def test_two_writers_never_lose_an_update(kv, prefix):
    one = LearningHub(kv, config=HubConfig(kv_prefix=prefix))
    two = LearningHub(kv, config=HubConfig(kv_prefix=prefix))
    await one.start()
    await two.start()
    for hub, rid in ((one, "x1"), (two, "x2"), (one, "x3"), (two, "x4")):
        arm = await hub.choose_arm(**{**ARGS, "arms": ["a"]}, context="", request_id=rid, seed=1)
        assert arm == "a"
        await hub.feedback(rid, reward=1.0)  # the stale writer reloads and re-applies
    data = json.loads((await kv.get(f"{prefix}bandits/p/pick")).value)
    assert data["arms"][0]["updates"] == 4 and data["arms"][0]["alpha"] == 5.0
    await one.stop()
    await two.stop()


async def test_a_follower_applies_feedback_and_the_leader_sees_it(kv, prefix, consul_addr):
    config = ConsulConfig(consul_addr)
    key = f"{prefix}leader"
    first = LeaderElection(config, key, "orch-1", ttl_s=10)
    second = LeaderElection(config, key, "orch-2", ttl_s=10)
    await first.start()
    await first.wait_until_leader(10)
    await second.start()
    leader = LearningHub(
        kv, config=HubConfig(kv_prefix=prefix, refresh_interval_s=0.2), leader=first
    )
    follower = LearningHub(
        kv, config=HubConfig(kv_prefix=prefix, refresh_interval_s=0.2), leader=second,
        instance_id="orch-2",
    )  # fmt: skip
    await leader.start()
    await follower.start()
    arm = await follower.choose_arm(**ARGS, context="", request_id="f1", seed=1)
    assert await follower.feedback("f1", reward=1.0) == ["p/pick"]
    # a token the follower issued, applied by the leader: already applied, so nothing twice
    token = follower.token_for("f1")
    outcome = await leader.apply_feedback(Feedback("f1", reward=1.0, token=token))
    assert outcome.duplicate

    # the leader picks the follower's write up from KV
    def alpha() -> float | None:
        return {a.arm: a.alpha for s in leader.bandit_stats() for a in s.arms}.get(arm)

    await wait_until(lambda: alpha() == 2.0, 5, f"the leader to see alpha 2.0 (at {alpha()})")
    await wait_until(lambda: leader.digest() == follower.digest(), 5, "equal digests")
    await follower.stop()
    await leader.stop()
    await second.stop()
    await first.stop()


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(1).permutation(len(y))
    return x[order].astype(np.float32), y[order]


@pytest.mark.slow
async def test_learner_version_is_deployed_and_serving(kv, prefix, consul_addr, digits, tmp_path):
    x, y = digits
    holdout = tmp_path / "holdout.npz"
    np.savez(holdout, x=x[1400:], y=y[1400:])
    config = ConsulConfig(consul_addr)
    model = f"online-{uuid.uuid4().hex[:6]}"
    policies = TrafficPolicies(kv, TRAFFIC_PREFIX)
    deployer = ProcessDeployer(
        config, DeployConfig(work_dir=str(tmp_path / "work")), policies.write
    )
    hub = LearningHub(kv, config=HubConfig(kv_prefix=prefix), deployer=deployer)
    await hub.start()
    try:
        await _deploy_and_check(hub, deployer, kv, config, model, holdout, x, y)
    finally:
        await hub.stop()  # stops the versions it started
    assert deployer.running() == []


async def _deploy_and_check(hub, deployer, kv, config, model, holdout, x, y):
    hub.add_learner(
        LearnerConfig(name="digits", model=model, export_every=0, holdout_path=str(holdout))
    )
    for i in range(300):
        await hub.observe("digits", f"q{i}", x[i])
        await hub.feedback(f"q{i}", label=int(y[i]))
    entry = await hub.rollout_now("digits")
    assert entry["status"] == "deployed" and entry["holdout_accuracy"] > 0.8, entry
    assert deployer.running() == [(model, "v1")]
    policy = json.loads((await kv.get(f"meshserve/traffic/{model}")).value)
    assert policy["version_weights"] == {"v1": 1.0}
    watcher = EndpointWatcher(config, model)
    await watcher.start()
    endpoint = (await watcher.wait_for(lambda eps: len(eps) == 1, 10))[0]
    await watcher.stop()
    assert endpoint.version == "v1"
    async with grpc.aio.insecure_channel(endpoint.target) as channel:
        reply = await model_pb2_grpc.ModelServiceStub(channel).Infer(
            model_pb2.InferRequest(inputs={"input": from_numpy(x[1400:1500])})
        )
    served = to_numpy(reply.outputs["label"])
    expected = hub.learner("digits").deployed_model.predict(x[1400:1500])
    np.testing.assert_array_equal(served, expected)


@pytest.mark.slow
async def test_ten_thousand_users_bounded_memory_durable_state(kv, prefix):
    """Per-user bandit statistics for 10k users in a real Consul: at most 500 users in memory,
    every reward applied once (the stored totals), and a new hub reads the same per-user state."""
    personal = PersonalConfig(max_users_in_memory=500)
    config = HubConfig(kv_prefix=prefix, personal=personal)
    hub = LearningHub(kv, config=config)
    await hub.start()
    args = {**ARGS, "policy": "thompson", "context": "", "seed": 3}
    users = [f"user-{i:05d}" for i in range(10_000)]
    peak = 0

    async def serve(user: str) -> None:
        nonlocal peak
        rid = f"req-{user}"
        arm = await hub.choose_arm(**args, request_id=rid, user=user)
        reward = 1.0 if arm == ("a" if int(user[-1]) % 2 else "b") else 0.0
        assert await hub.feedback(rid, reward=reward, token=hub.token_for(rid)) == ["p/pick"]
        peak = max(peak, len(hub.bandits.personal_store("p", "pick")))

    for start in range(0, len(users), 50):
        await asyncio.gather(*(serve(u) for u in users[start : start + 50]))
    assert peak <= 500
    docs = [json.loads(e.value) for e in await kv.list(config.personal_prefix)]
    stored = {d["user"]: d for d in docs}
    assert len(stored) == 10_000
    assert sum(int(v[1]) for e in stored.values() for v in e["arms"].values()) == 10_000
    sample = users[::97]
    before = {u: await hub.personal_arms("p", "pick", u) for u in sample}
    await hub.stop()

    again = LearningHub(kv, config=config)
    await again.start()
    for user in sample:
        after = await again.personal_arms("p", "pick", user)
        assert {a: (s.updates, s.alpha, s.beta) for a, s in after.items()} == {
            a: (s.updates, s.alpha, s.beta) for a, s in before[user].items()
        }
    await again.stop()
