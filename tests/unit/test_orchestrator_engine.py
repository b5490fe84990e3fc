"""The engine over real ONNX models run in-process (InProcessCaller): results, errors, deadlines."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from meshserve.errors import (
    DeadlineExceededError,
    InvalidInputError,
    MeshError,
    NotFoundError,
)
from meshserve.orchestrator.engine import Engine, EngineConfig, ExecuteCall
from meshserve.orchestrator.inprocess import InProcessCaller
from meshserve.orchestrator.plans.parse import load_plan_file, parse_plan_text
from meshserve.orchestrator.plans.validate import ValidationContext, validate_plan
from meshserve.v1 import plan_pb2
from tests.logic_helpers import logic_functions
from tests.reference import onnx_outputs

PLANS = Path(__file__).resolve().parents[2] / "examples" / "plans"


class DictPlans:
    def __init__(self, *plans: plan_pb2.Plan) -> None:
        self.plans = {}
        for plan in plans:
            self.add(plan)

    def add(self, plan: plan_pb2.Plan) -> None:
        plan.version = plan.version or 1
        self.plans[plan.name] = plan

    def get(self, name: str, version: int = 0) -> plan_pb2.Plan:
        if name not in self.plans:
            raise NotFoundError(f"plan '{name}' does not exist")
        return self.plans[name]


@pytest.fixture(scope="module")
def caller(models_dir: Path):
    return InProcessCaller.from_dir(models_dir)


@pytest.fixture(scope="module")
def digits(models_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    data = np.load(models_dir / "digits_test.npz")
    return data["X"][:40].astype(np.float32), data["y"][:40]


def _engine(caller, *plans: plan_pb2.Plan, **kw) -> Engine:
    return Engine(caller, DictPlans(*plans), **kw)


async def test_pipeline_matches_onnxruntime(caller, digits, models_dir):
    x, y = digits
    plan = load_plan_file(str(PLANS / "pipeline.yaml"))
    await validate_plan(plan, ValidationContext(metadata=caller.metadata))
    result = await _engine(caller, plan).execute(ExecuteCall("digits-pipeline", {"input": x}))
    scaled = onnx_outputs(models_dir, "scaler", x)["scaled"]
    expected = onnx_outputs(models_dir, "mlp", scaled)
    np.testing.assert_array_equal(result.outputs["label"], expected["label"])
    np.testing.assert_allclose(
        result.outputs["probabilities"], expected["probabilities"], rtol=1e-6
    )
    assert (result.outputs["label"] == y).mean() > 0.9


async def test_ensemble_majority_vote_matches_onnxruntime(caller, digits, models_dir):
    x, _ = digits
    plan = load_plan_file(str(PLANS / "ensemble.yaml"))
    await validate_plan(plan, ValidationContext(metadata=caller.metadata))
    result = await _engine(caller, plan).execute(ExecuteCall("digits-ensemble", {"input": x}))
    scaled = onnx_outputs(models_dir, "scaler", x)["scaled"]
    labels = np.stack(
        [onnx_outputs(models_dir, m, scaled)["label"] for m in ("logreg", "mlp", "forest")]
    )
    counts = np.stack([(labels == k).sum(axis=0) for k in range(10)])
    np.testing.assert_array_equal(result.outputs["label"], counts.argmax(axis=0))


async def test_programmatic_twin_equals_declarative(caller, digits):
    x, _ = digits
    declarative = load_plan_file(str(PLANS / "pipeline.yaml"))
    fn = plan_pb2.Plan(name="py-fn", python="examples.programmatic:pipeline")
    cls = plan_pb2.Plan(name="py-cls", python="examples.programmatic:Pipeline")
    engine = _engine(caller, declarative, fn, cls)
    want = await engine.execute(ExecuteCall("digits-pipeline", {"input": x}))
    for name in ("py-fn", "py-cls"):
        got = await engine.execute(ExecuteCall(name, {"input": x}))
        np.testing.assert_array_equal(got.outputs["label"], want.outputs["label"])
        np.testing.assert_array_equal(got.outputs["probabilities"], want.outputs["probabilities"])


async def test_select_by_attribute_and_shape(caller, digits):
    x, _ = digits
    plan = load_plan_file(str(PLANS / "select.yaml"))
    await validate_plan(plan, ValidationContext(metadata=caller.metadata))
    engine = _engine(caller, plan)
    gold = await engine.execute(
        ExecuteCall("digits-select", {"input": x[:2]}, attributes={"tier": "gold"})
    )
    big = await engine.execute(ExecuteCall("digits-select", {"input": x[:20]}))
    small = await engine.execute(ExecuteCall("digits-select", {"input": x[:2]}))
    assert gold.decisions == {"route": "mlp"}
    assert big.decisions == {"route": "forest"}
    assert small.decisions == {"route": "logreg"}
    assert engine.stats.plans()[0].decisions == {
        "route/mlp": 1,
        "route/forest": 1,
        "route/logreg": 1,
    }


async def test_split_ratio_and_sticky_keys(caller, digits):
    x, _ = digits
    plan = load_plan_file(str(PLANS / "split.yaml"))
    engine = _engine(caller, plan)
    chosen: dict[str, str] = {}
    for i in range(400):
        key = f"user-{i}"
        result = await engine.execute(
            ExecuteCall("digits-split", {"input": x[:1]}, routing_key=key)
        )
        chosen[key] = result.decisions["canary"]
    share = sum(v == "canary" for v in chosen.values()) / len(chosen)
    assert 0.14 < share < 0.26, share
    for key in list(chosen)[:30]:
        again = await engine.execute(ExecuteCall("digits-split", {"input": x[:1]}, routing_key=key))
        assert again.decisions["canary"] == chosen[key]


async def test_shadow_records_agreement_and_ignores_candidate_failure(caller, digits):
    x, _ = digits

    release = asyncio.Event()

    async def slow_fail(inputs, ctx):
        await release.wait()  # held until the response is back
        raise InvalidInputError("candidate is broken")

    with logic_functions({"test_slow_fail": slow_fail}):
        good = load_plan_file(str(PLANS / "shadow.yaml"))
        bad = parse_plan_text(
            """
name: bad-shadow
steps:
  - name: shadow
    inputs: {input: input.input}
    shadow:
      primary: {name: scaler, model: scaler}
      candidate: {name: broken, logic: test_slow_fail}
outputs: {scaled: shadow.scaled}
"""
        )
        engine = _engine(caller, good, bad)
        for _ in range(3):
            await engine.execute(ExecuteCall("digits-shadow", {"input": x}))
        # The response must not wait for the candidate (held: waiting for it would hang).
        result = await asyncio.wait_for(engine.execute(ExecuteCall("bad-shadow", {"input": x})), 10)
        assert result.outputs["scaled"].shape == x.shape
        release.set()
        await engine.drain_background()
        stats = {s.plan: s for s in engine.stats.shadows()}
        assert stats["digits-shadow"].compared == 3 * len(x)
        assert 0.8 * 3 * len(x) <= stats["digits-shadow"].agreed <= 3 * len(x)
        assert stats["digits-shadow"].candidate_latency_p50_ms > 0
        assert stats["bad-shadow"].candidate_errors == 1
        assert stats["bad-shadow"].compared == 0


async def test_failing_step_names_step_and_model(caller, digits):
    x, _ = digits
    plan = parse_plan_text(
        """
name: wrong
steps:
  - {name: mlp, model: mlp, inputs: {input: input.input}}
outputs: {label: mlp.label}
"""
    )
    with pytest.raises(InvalidInputError) as err:
        await _engine(caller, plan).execute(ExecuteCall("wrong", {"input": x[:, :10]}))
    assert err.value.message.startswith("plan 'wrong' step 'mlp': model 'mlp' input 'input': ")


async def test_deadline_is_enforced(caller, digits):
    x, _ = digits

    async def sleepy(inputs, ctx):
        await asyncio.sleep(5)
        return inputs

    with logic_functions({"test_sleepy": sleepy}):
        plan = parse_plan_text(
            """
name: sleepy
steps:
  - {name: wait, logic: test_sleepy, inputs: {input: input.input}}
  - {name: scaler, model: scaler, inputs: {input: wait.input}}
outputs: {scaled: scaler.scaled}
"""
        )
        engine = _engine(caller, plan, config=EngineConfig(default_timeout_s=None))
        with pytest.raises(DeadlineExceededError) as err:
            await engine.execute(ExecuteCall("sleepy", {"input": x}, timeout_s=0.1))
        assert "step 'wait'" in err.value.message


async def test_independent_steps_run_concurrently(caller, digits):
    x, _ = digits
    started: list[str] = []
    both = asyncio.Event()

    async def meet(inputs, ctx):
        started.append(ctx.step)
        if len(started) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 2)
        return inputs

    with logic_functions({"test_meet": meet}):
        plan = parse_plan_text(
            """
name: fan
steps:
  - {name: a, logic: test_meet, inputs: {input: input.input}}
  - {name: b, logic: test_meet, inputs: {input: input.input}}
outputs: {a: a.input, b: b.input}
"""
        )
        result = await _engine(caller, plan).execute(ExecuteCall("fan", {"input": x}))
        assert sorted(started) == ["a", "b"]
        assert set(result.outputs) == {"a", "b"}


async def test_plan_input_checked(caller, digits):
    x, _ = digits
    plan = load_plan_file(str(PLANS / "pipeline.yaml"))
    engine = _engine(caller, plan)
    with pytest.raises(InvalidInputError, match="expects float32 \\[-1,64\\], got float64"):
        await engine.execute(ExecuteCall("digits-pipeline", {"input": x.astype(np.float64)}))
    with pytest.raises(NotFoundError):
        await engine.execute(ExecuteCall("nope", {"input": x}))


async def test_custom_aggregator_and_router(caller, digits):
    x, _ = digits

    async def first(inputs, ctx):
        return {ctx.params["output"]: inputs["mlp"]}

    async def router(inputs, ctx):
        return {"branch": "b" if ctx.attributes.get("pick") == "b" else "a"}

    with logic_functions({"test_first": first, "test_router": router}):
        plan = parse_plan_text(
            """
name: custom
steps:
  - {name: scaler, model: scaler, inputs: [input.input]}
  - name: ens
    inputs: {input: scaler.scaled}
    ensemble:
      aggregation: custom
      aggregator: test_first
      output: label
      members: [{model: mlp}, {model: logreg}]
  - name: pick
    inputs: {input: scaler.scaled}
    select:
      router: test_router
      branches: [{name: a, model: mlp}, {name: b, model: forest}]
outputs: {label: ens.label, picked: pick.label}
"""
        )
        await validate_plan(plan, ValidationContext(metadata=caller.metadata))
        engine = _engine(caller, plan)
        result = await engine.execute(ExecuteCall("custom", {"input": x}, attributes={"pick": "b"}))
        assert result.decisions == {"pick": "b"}
        assert result.outputs["label"].dtype == np.int64


def test_errors_are_mesh_errors():
    assert issubclass(InvalidInputError, MeshError)


LINUCB_PLAN = """
name: contextual
inputs: [{name: input, dtype: float32, shape: [-1, 64]}]
steps:
  - name: pick
    inputs: {input: input.input}
    bandit:
      policy: linucb
      feature_attributes: [age, score]
      exploration: 0.5
      arms: [{name: lr, model: logreg}, {name: mlp, model: mlp}]
outputs: {label: pick.label}
"""


async def test_linucb_plan_learns_from_request_attributes(caller, digits):
    from meshserve.orchestrator.learning import LearningHub
    from meshserve.orchestrator.learning_port import Feedback
    from tests.unit.memkv import MemoryKV

    x, _ = digits
    plan = parse_plan_text(LINUCB_PLAN)
    await validate_plan(plan, ValidationContext(metadata=caller.metadata))
    hub = LearningHub(MemoryKV())
    await hub.start()
    engine = _engine(caller, plan, learning=hub)
    # young users are served well by lr, old ones by mlp: LinUCB learns the boundary
    for i in range(120):
        age = 20.0 if i % 2 else 70.0
        call = ExecuteCall(
            "contextual", {"input": x[:1]}, request_id=f"c{i}",
            attributes={"age": str(age / 100), "score": "0.5"},
        )  # fmt: skip
        result = await engine.execute(call)
        good = "lr" if age < 50 else "mlp"
        reward = 1.0 if result.decisions["pick"] == good else 0.0
        await hub.apply_feedback(Feedback(f"c{i}", reward=reward, token=hub.token_for(f"c{i}")))
    picks = []
    for age in (0.2, 0.7) * 10:
        call = ExecuteCall("contextual", {"input": x[:1]}, attributes={"age": str(age)})
        picks.append(((await engine.execute(call)).decisions["pick"], age))
    assert sum(1 for arm, age in picks if arm == ("lr" if age < 0.5 else "mlp")) >= 18, picks
    bad = ExecuteCall("contextual", {"input": x[:1]}, attributes={"age": "old"})
    with pytest.raises(InvalidInputError, match="feature attribute 'age'='old' is not a number"):
        await engine.execute(bad)
    await hub.stop()
