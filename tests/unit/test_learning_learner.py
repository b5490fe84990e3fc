"""Online softmax regression on the digits: SGD improves it, ONNX export matches numpy through
onnxruntime, state round-trips, and the hub's label feedback -> export -> validate -> deploy cycle
(a recording deployer below the Deployer interface; the real one is tested in integration)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_digits

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.learning import LearnerConfig, LearningHub, SoftmaxRegression
from meshserve.orchestrator.learning.learner import export_onnx
from tests.unit.memkv import MemoryKV


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    x, y = x[order].astype(np.float32), y[order]
    return (x[:1200], y[:1200]), (x[1200:], y[1200:])


def test_accuracy_rises_with_sgd(digits):
    (xt, yt), (xh, yh) = digits
    model = SoftmaxRegression.zeros(64, 10, lr=0.05, input_scale=1 / 16)
    accuracies = [model.accuracy(xh, yh)]
    for start in range(0, 600, 200):
        model = model.update(xt[start : start + 200], yt[start : start + 200])
        accuracies.append(model.accuracy(xh, yh))
    assert accuracies[0] < 0.2
    assert accuracies[-1] > 0.85
    assert accuracies == sorted(accuracies) or accuracies[-1] > accuracies[1]
    assert model.updates == 600


def test_update_is_pure_and_checks_inputs():
    model = SoftmaxRegression.zeros(4, 3)
    after = model.update(np.ones(4), 2)
    assert model.updates == 0 and after.updates == 1 and not np.any(model.weights)
    with pytest.raises(InvalidInputError, match=r"expected \[N, 4\]"):
        model.update(np.ones(5), 1)
    with pytest.raises(InvalidInputError, match=r"out of range; expected 0\.\.2"):
        model.update(np.ones(4), 3)


def test_onnx_export_matches_numpy(digits):
    (xt, yt), (xh, _) = digits
    model = SoftmaxRegression.zeros(64, 10, input_scale=1 / 16).update(xt[:300], yt[:300])
    session = ort.InferenceSession(export_onnx(model, "input"), providers=["CPUExecutionProvider"])
    label, proba = session.run(["label", "probabilities"], {"input": xh})
    np.testing.assert_array_equal(label, model.predict(xh))
    np.testing.assert_allclose(proba, model.predict_proba(xh), atol=1e-5)
    assert label.dtype == np.int64 and proba.dtype == np.float32


def test_json_round_trip_is_exact(digits):
    (xt, yt), _ = digits
    model = SoftmaxRegression.zeros(64, 10, input_scale=1 / 16).update(xt[:50], yt[:50])
    back = SoftmaxRegression.from_json(model.to_json())
    np.testing.assert_array_equal(back.weights, model.weights)
    np.testing.assert_array_equal(back.bias, model.bias)
    assert back.updates == 50


class RecordingDeployer:
    def __init__(self):
        self.deployed: list[str] = []
        self.traffic: list[dict] = []
        self.retired: list[str] = []

    async def deploy(self, model, version, onnx_model):
        ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
        self.deployed.append(version)

    async def set_traffic(self, model, weights):
        self.traffic.append(dict(weights))

    async def retire(self, model, version):
        self.retired.append(version)


async def started_hub(
    tmp_path, holdout_xy, **learner: Any
) -> tuple[LearningHub, MemoryKV, RecordingDeployer, LearnerConfig]:
    """A started hub on a MemoryKV with a RecordingDeployer and one learner whose holdout set
    is `holdout_xy` (saved under `tmp_path`); `learner` are the LearnerConfig fields."""
    holdout = tmp_path / "holdout.npz"
    np.savez(holdout, x=holdout_xy[0], y=holdout_xy[1])
    kv, deployer = MemoryKV(), RecordingDeployer()
    hub = LearningHub(kv, deployer=deployer)
    await hub.start()
    config = LearnerConfig(holdout_path=str(holdout), **learner)
    hub.add_learner(config)
    return hub, kv, deployer, config


async def test_hub_learns_from_labels_and_rolls_out(digits, tmp_path):
    (xt, yt), (xh, yh) = digits
    hub, kv, deployer, _ = await started_hub(
        tmp_path, (xh, yh), name="digits-online", export_every=150, min_accuracy=0.6
    )
    for i in range(300):
        await hub.observe("digits-online", f"r{i}", xt[i : i + 1])
        assert await hub.feedback(f"r{i}", label=int(yt[i])) == ["digits-online"]
        await hub.wait_idle(30)
    stats = hub.learner_stats()[0]
    assert stats.updates == 300
    assert deployer.deployed == ["v1", "v2"], hub.learner("digits-online").history
    assert deployer.traffic[-1] == {"v2": 1.0}
    assert stats.deployed_version == "v2" and stats.holdout_accuracy > 0.8
    history = hub.learner("digits-online").history
    assert [h["status"] for h in history] == ["standby", "deployed"]
    assert history[0]["holdout_accuracy"] <= history[1]["holdout_accuracy"] + 0.02
    # a restarted hub resumes with the same weights and history
    again = LearningHub(kv)
    await again.start()
    np.testing.assert_array_equal(
        again.learner("digits-online").model.weights, hub.learner("digits-online").model.weights
    )
    assert again.learner_stats()[0].deployed_version == "v2"
    with pytest.raises(InvalidInputError, match=r"expected \[N, 64\]"):
        await hub.observe("digits-online", "bad", np.ones(3))
    await again.stop()
    await hub.stop()


async def test_regressing_candidate_is_rejected(digits, tmp_path):
    (xt, yt), (xh, yh) = digits
    hub, _, deployer, _ = await started_hub(
        tmp_path, (xh, yh), name="l", export_every=0, min_accuracy=0.0
    )
    for i in range(200):
        await hub.observe("l", f"r{i}", xt[i])
        await hub.feedback(f"r{i}", label=int(yt[i]))
    assert (await hub.rollout_now("l"))["status"] == "deployed"
    for i in range(200, 260):  # poisoned labels
        await hub.observe("l", f"r{i}", xt[i])
        await hub.feedback(f"r{i}", label=0)
    entry = await hub.rollout_now("l")
    assert entry["status"] == "rejected" and "regresses from v1" in entry["reason"]
    assert deployer.deployed == ["v1"]
    await hub.stop()


async def test_live_regression_rolls_back_to_the_standby(digits, tmp_path):
    (xt, yt), (xh, yh) = digits
    hub, kv, deployer, config = await started_hub(
        tmp_path, (xh, yh), name="l", export_every=0, min_accuracy=0.0,
        regression_tolerance=1.0, live_window=20,
    )  # fmt: skip
    for i in range(300):
        await hub.observe("l", f"a{i}", xt[i])
        await hub.feedback(f"a{i}", label=int(yt[i]))
    assert (await hub.rollout_now("l"))["version"] == "v1"
    slot = hub.learner("l")
    # v2: a candidate that passes the (deliberately lax) holdout gate but is bad on live traffic
    slot.model = SoftmaxRegression.zeros(64, 10, input_scale=1 / 16)
    assert (await hub.rollout_now("l"))["status"] == "deployed"
    assert slot.deployed_version == "v2" and slot.standby_version == "v1"
    slot.config = LearnerConfig(**{**config.__dict__, "regression_tolerance": 0.05})
    for i in range(300, 330):
        await hub.observe("l", f"b{i}", xt[i])
        await hub.feedback(f"b{i}", label=int(yt[i]))
    await hub.wait_idle(10)
    assert deployer.traffic[-1] == {"v1": 1.0}
    assert slot.deployed_version == "v1" and "v2" in deployer.retired
    statuses = {h["version"]: h["status"] for h in slot.history}
    assert statuses == {"v1": "deployed", "v2": "rolled_back"}
    # the rollback is persisted
    again = LearningHub(kv)
    await again.start()
    assert again.learner_stats()[0].deployed_version == "v1"
    await again.stop()
    await hub.stop()
