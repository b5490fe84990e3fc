"""Online learning through a real orchestrator process, real model services and a real Consul:
a bandit over two models converges to the one rewarded more; an online learner's accuracy rises
with labelled feedback and each new version is deployed and serves; SIGKILL the orchestrator after
feedback was acknowledged and the restarted one has the same posteriors and weights."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest
import yaml

from meshserve.orchestrator.learning import SoftmaxRegression
from meshserve.tensors import from_numpy, to_numpy
from meshserve.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.integration.learning_helpers import (
    arms_of,
    model_service,
    orchestrator,
    stats,
    wait_stats,
    warm_up,
)
from tests.waiting import unless_unavailable, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def digits(models_dir):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(11).permutation(len(y))
    return x[order].astype(np.float32), y[order].astype(np.int64)


async def test_bandit_converges_and_survives_restart(spawn, consul_addr, models_dir, tmp_path):
    plan = f"bandit-{uuid.uuid4().hex[:6]}"
    plan_dir = tmp_path / "plans"
    plan_dir.mkdir()
    plan_file = plan_dir / "bandit.yaml"
    spec = [{"name": "input", "dtype": "float32", "shape": [-1, 64]}]
    (plan_dir / "warm.yaml").write_text(  # calls both models (the caller discovers them lazily)
        yaml.safe_dump(
            {
                "name": f"{plan}-warm",
                "inputs": spec,
                "steps": [
                    {"name": "a", "model": "logreg", "inputs": {"input": "input.input"}},
                    {"name": "b", "model": "forest", "inputs": {"input": "input.input"}},
                ],
                "outputs": {"a": "a.label", "b": "b.label"},
            }
        )
    )
    plan_file.write_text(
        yaml.safe_dump(
            {
                "name": plan,
                "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 64]}],
                "steps": [
                    {
                        "name": "pick",
                        "inputs": {"input": "input.input"},
                        "bandit": {
                            "policy": "thompson",
                            "seed": 7,
                            "arms": [
                                {"name": "logreg", "model": "logreg"},
                                {"name": "forest", "model": "forest"},
                            ],
                        },
                    }
                ],
                "outputs": {"label": "pick.label"},
            }
        )
    )
    model_service(spawn, consul_addr, models_dir, "logreg")
    model_service(spawn, consul_addr, models_dir, "forest")
    orch = orchestrator(spawn, consul_addr, plan_dir, tmp_path / "work")
    await wait_stats(orch.address, lambda s: s.leader, 40)
    data = np.load(models_dir / "digits_test.npz")["X"][:1].astype(np.float32)
    await warm_up(orch.address, f"{plan}-warm", data)
    world = np.random.default_rng(3)
    reward_rate = {"logreg": 0.9, "forest": 0.3}
    chosen: list[str] = []
    async with grpc.aio.insecure_channel(orch.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        for i in range(200):
            reply = await stub.Execute(
                orchestrator_pb2.ExecuteRequest(
                    id=f"{plan}-{i}", plan=plan, inputs={"input": from_numpy(data)}
                ),
                timeout=10,
            )
            arm = reply.decisions["pick"]
            chosen.append(arm)
            ack = await stub.Feedback(
                orchestrator_pb2.FeedbackRequest(
                    request_id=reply.id, reward=float(world.random() < reward_rate[arm])
                ),
                timeout=10,
            )
            assert ack.accepted and list(ack.applied_to) == [f"{plan}/pick"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Feedback(orchestrator_pb2.FeedbackRequest(request_id="nope", reward=1.0))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "'nope' is not known to this orchestrator" in err.value.details()
    share = chosen[-60:].count("logreg") / 60
    assert share > 0.9, (share, chosen)
    before = arms_of(await stats(orch.address), plan)
    assert sum(a[2] for a in before) == 200  # pulls
    orch.kill()  # SIGKILL: no graceful anything
    restarted = orchestrator(spawn, consul_addr, plan_dir, tmp_path / "work2")
    after = arms_of(await stats(restarted.address), plan)
    assert after == before


async def test_online_learner_improves_deploys_and_survives_restart(
    spawn, consul_addr, tmp_path, digits
):
    x, y = digits
    uid = uuid.uuid4().hex[:6]
    learner, model, learn_plan, serve_plan = (
        f"digits-{uid}",
        f"online-{uid}",
        f"learn-{uid}",
        f"serve-{uid}",
    )
    holdout = tmp_path / "holdout.npz"
    np.savez(holdout, x=x[1300:], y=y[1300:])
    plans = tmp_path / "plans"
    plans.mkdir()
    spec = [{"name": "input", "dtype": "float32", "shape": [-1, 64]}]
    (plans / "learn.yaml").write_text(
        yaml.safe_dump(
            {
                "name": learn_plan,
                "inputs": spec,
                "steps": [
                    {
                        "name": "observe",
                        "inputs": {"input": "input.input"},
                        "logic": {
                            "function": "learner.observe",
                            "params": {
                                "learner": learner,
                                "features": "input",
                                "model": model,
                                "export_every": 100,
                                "holdout_path": str(holdout),
                                "min_accuracy": 0.5,
                            },
                        },
                    }
                ],
                "outputs": {"echo": "observe.input"},
            }
        )
    )
    (plans / "serve.yaml").write_text(
        yaml.safe_dump(
            {
                "name": serve_plan,
                "inputs": spec,
                "steps": [{"name": "predict", "model": model, "inputs": {"input": "input.input"}}],
                "outputs": {"label": "predict.label"},
            }
        )
    )
    orch = orchestrator(spawn, consul_addr, plans, tmp_path / "work")
    await wait_stats(orch.address, lambda s: s.leader, 40)

    def learner_of(s):
        return next((item for item in s.learners if item.name == learner), None)

    accuracies = []
    async with grpc.aio.insecure_channel(orch.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        for version in (1, 2, 3):
            for i in range((version - 1) * 100, version * 100):
                reply = await stub.Execute(
                    orchestrator_pb2.ExecuteRequest(
                        id=f"{uid}-{i}", plan=learn_plan, inputs={"input": from_numpy(x[i : i + 1])}
                    ),
                    timeout=10,
                )
                ack = await stub.Feedback(
                    orchestrator_pb2.FeedbackRequest(request_id=reply.id, label=int(y[i])),
                    timeout=10,
                )
                assert list(ack.applied_to) == [learner]
            current = await wait_stats(
                orch.address,
                lambda s, v=version: (
                    (item := learner_of(s)) is not None and item.deployed_version == f"v{v}"
                ),
                90,
            )
            accuracies.append(learner_of(current).holdout_accuracy)
        assert accuracies[-1] > accuracies[0] > 0.5, accuracies
        again = await stub.Feedback(
            orchestrator_pb2.FeedbackRequest(request_id=f"{uid}-0", label=int(y[0]))
        )
        assert again.duplicate and list(again.already_applied) == [learner]  # labelled before

        async def served() -> np.ndarray:
            reply = await stub.Execute(
                orchestrator_pb2.ExecuteRequest(
                    plan=serve_plan, inputs={"input": from_numpy(x[1300:])}
                ),
                timeout=10,
            )
            return to_numpy(reply.outputs["label"])

        before = await served()
    # the same SGD run locally gives exactly the served predictions
    local = SoftmaxRegression.zeros(64, 10, lr=0.2, l2=1e-4, input_scale=1 / 16)
    local = local.update(x[:300], y[:300])
    assert np.mean(before == local.predict(x[1300:])) >= 0.99  # float32 ONNX vs float64 numpy
    assert np.mean(before == y[1300:]) > 0.8

    orch.kill()
    restarted = orchestrator(spawn, consul_addr, plans, tmp_path / "work2")
    again = learner_of(await stats(restarted.address))
    assert again is not None and again.updates == 300 and again.deployed_version == "v3"
    assert again.holdout_accuracy == accuracies[-1]
    # once it leads, the restarted orchestrator redeploys v3 from the persisted weights
    await wait_stats(restarted.address, lambda s: s.leader, 60)
    async with grpc.aio.insecure_channel(restarted.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        request = orchestrator_pb2.ExecuteRequest(
            plan=serve_plan, inputs={"input": from_numpy(x[1300:])}
        )
        reply = await wait_until(
            lambda: unless_unavailable(stub.Execute(request, timeout=10)),
            60,
            "the restarted orchestrator to serve the plan",
            0.5,
            retry_on=(),
        )
    np.testing.assert_array_equal(to_numpy(reply.outputs["label"]), before)
