"""The fraud example plan end to end in the engine: validation, a real SQLite user table, a real
feature store, real ONNX models (onnxruntime in-process below the ModelCaller interface) and the
business rule, all under one trace; bad inputs are rejected with precise messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import examples.fraud.logic as fraud_logic
from examples.fraud.build_data import FIRST_USER_ID, build
from meshserve.errors import InvalidInputError, NotFoundError
from meshserve.orchestrator.engine import Engine, ExecuteCall
from meshserve.orchestrator.inprocess import InProcessCaller
from meshserve.orchestrator.plans.parse import load_plan_file
from tests.logic_helpers import OnePlan

PLAN = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "plan.yaml"

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("fraud")
    build(out, users=50)
    return out


@pytest.fixture
def engine(data, models_dir, monkeypatch):
    monkeypatch.setenv("MESHSERVE_FRAUD_DATA", str(data))
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    _exporter.clear()
    caller = InProcessCaller.from_dir(models_dir)
    return Engine(caller, OnePlan(load_plan_file(PLAN)))


def expected(data: Path, models_dir: Path, users: np.ndarray, amount: np.ndarray):
    """The same computation done by hand with sqlite3, numpy and onnxruntime."""
    import sqlite3

    conn = sqlite3.connect(data / "users.sqlite")
    tiers = np.array(
        [conn.execute("SELECT risk_tier FROM users WHERE id=?", (int(u),)).fetchone()[0]
         for u in users]
    )  # fmt: skip
    feats = np.load(data / "features.npz")
    index = {k: i for i, k in enumerate(feats["keys"])}
    x = np.stack([feats["vectors"][index[str(u)]] for u in users]).astype(np.float32)
    run = lambda name, inp: ort.InferenceSession(str(models_dir / f"{name}.onnx")).run(  # noqa: E731
        None, {"input": inp}
    )
    scaled = run("scaler", x)[0]
    probs = np.mean([run(m, scaled)[1] for m in ("logreg", "mlp", "forest")], axis=0)
    score = fraud_logic.fraud_score(
        probs, amount, tiers, risky_classes=[3, 8], high_amount=1000, amount_weight=0.3,
        tier_weight=0.1,
    )  # fmt: skip
    return score, tiers


async def test_fraud_plan_scores_with_db_and_feature_store(engine, data, models_dir):
    users = np.array([FIRST_USER_ID + i for i in (3, 8, 11, 3)], dtype=np.int64)
    amount = np.array([12.0, 5000.0, 80.0, 999.0], dtype=np.float32)
    result = await engine.execute(
        ExecuteCall(
            plan="fraud",
            inputs={"user_id": users, "amount": amount, "channel": np.array([0, 1, 2, 0])},
            request_id="tx-1",
        )
    )
    score, tiers = expected(data, models_dir, users, amount)
    np.testing.assert_allclose(result.outputs["score"], score, atol=1e-5)
    np.testing.assert_array_equal(result.outputs["risk_tier"], tiers)
    decision = np.where(score >= 0.8, 2, np.where(score >= 0.5, 1, 0))
    np.testing.assert_array_equal(result.outputs["decision"], decision)
    names = [s.name for s in _exporter.get_finished_spans()]
    for name in ("plan fraud", "logic validate", "logic sql.lookup", "logic features.lookup",
                 "logic fraud.decide"):  # fmt: skip
        assert name in names, names
    trace_ids = {s.context.trace_id for s in _exporter.get_finished_spans()}
    assert len(trace_ids) == 1


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"amount": [-5.0]}, "input 'amount' has value -5.0 below the minimum 0.0"),
        ({"channel": [7]}, "input 'channel' has value 7; expected one of"),
        ({"user_id": [999_999]}, "no row for key 999999"),
    ],
)
async def test_bad_inputs_are_rejected_precisely(engine, inputs, message):
    call = {
        "user_id": np.array([FIRST_USER_ID], dtype=np.int64),
        "amount": np.array([10.0], dtype=np.float32),
        "channel": np.array([0], dtype=np.int64),
    }
    for key, value in inputs.items():
        call[key] = np.array(value, dtype=call[key].dtype)
    with pytest.raises((InvalidInputError, NotFoundError)) as err:
        await engine.execute(ExecuteCall(plan="fraud", inputs=call))
    assert message in err.value.message, err.value.message
