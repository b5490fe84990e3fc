"""The fraud example served for real: model services in Consul, an orchestrator process that
imports the example's logic (--logic), SQLite and feature-store lookups inside the plan; the answer
equals the same plan run in-process, one trace covers every step, bad input gets INVALID_ARGUMENT
and the orchestrator stays up."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

import examples.fraud.logic  # noqa: F401 - registers fraud.decide for the in-process reference
from examples.fraud.build_data import FIRST_USER_ID, build
from meshserve.orchestrator.engine import Engine, ExecuteCall
from meshserve.orchestrator.inprocess import InProcessCaller
from meshserve.orchestrator.plans.parse import load_plan_file
from meshserve.tensors import from_numpy, to_numpy
from meshserve.v1 import admin_pb2, admin_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from tests.logic_helpers import OnePlan
from tests.waiting import unless_unavailable, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAN = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "plan.yaml"
AUTH = (("authorization", "Bearer fraud-token"),)


async def test_fraud_plan_through_the_mesh(spawn, consul_addr, models_dir, tmp_path, monkeypatch):
    data = tmp_path / "fraud-data"
    build(data, users=40)
    for name in ("scaler", "logreg", "mlp", "forest"):
        spawn(
            "model", "serve", str(models_dir / f"{name}.onnx"), "--name", name, "--version", "1",
            "--port", "0", "--consul", consul_addr, "--metrics-port", "-1", "--threads", "1",
        )  # fmt: skip
    orch = spawn(
        "orchestrator", "serve", "--port", "0", "--consul", consul_addr,
        "--plans", str(PLAN), "--logic", "examples.fraud.logic", "--metrics-port", "-1",
        "--no-learning",
        env={"MESHSERVE_FRAUD_DATA": str(data), "MESHSERVE_ADMIN_TOKEN": "fraud-token"},
    )  # fmt: skip
    inputs = {
        "user_id": np.array([FIRST_USER_ID + i for i in (1, 5, 9)], dtype=np.int64),
        "amount": np.array([20.0, 2500.0, 300.0], dtype=np.float32),
        "channel": np.array([0, 1, 2], dtype=np.int64),
    }
    request = orchestrator_pb2.ExecuteRequest(
        plan="fraud", inputs={k: from_numpy(v) for k, v in inputs.items()}
    )
    async with grpc.aio.insecure_channel(orch.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        # Replicas pass their Consul check a moment after READY.
        reply = await wait_until(
            lambda: unless_unavailable(stub.Execute(request, timeout=10)),
            30,
            "the plan to answer",
            0.25,
            retry_on=(),
        )
        bad = dict(inputs, amount=np.array([-1.0, 2.0, 3.0], dtype=np.float32))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Execute(
                orchestrator_pb2.ExecuteRequest(
                    plan="fraud", inputs={k: from_numpy(v) for k, v in bad.items()}
                ),
                timeout=10,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input 'amount' has value -1.0 below the minimum 0.0" in err.value.details()
        again = await stub.Execute(request, timeout=10)  # still up, still right
        assert (
            to_numpy(again.outputs["score"]).tolist() == to_numpy(reply.outputs["score"]).tolist()
        )
        async with grpc.aio.insecure_channel(orch.address) as admin_channel:
            admin = admin_pb2_grpc.AdminStub(admin_channel)

            async def spans_with_plan() -> list[str]:  # spans are buffered when they end
                found = await admin.GetTrace(
                    admin_pb2.GetTraceRequest(trace_id=reply.trace_id), metadata=AUTH
                )
                names = [s.name for s in found.spans]
                return names if "plan fraud" in names else []

            spans = await wait_until(spans_with_plan, 4, "the plan span", retry_on=())

    monkeypatch.setenv("MESHSERVE_FRAUD_DATA", str(data))
    reference = await Engine(
        InProcessCaller.from_dir(models_dir), OnePlan(load_plan_file(str(PLAN)))
    ).execute(ExecuteCall(plan="fraud", inputs=inputs))
    for name in ("score", "decision", "risk_tier"):
        np.testing.assert_allclose(
            to_numpy(reply.outputs[name]), reference.outputs[name], atol=1e-5, err_msg=name
        )
    for name in ("plan fraud", "logic validate", "logic sql.lookup", "logic features.lookup",
                 "logic fraud.decide"):  # fmt: skip
        assert name in spans, spans
    # The scaler and forest calls: one CLIENT span each (RPC convention names).
    assert spans.count("meshserve.v1.ModelService/InferStream") >= 2, spans
