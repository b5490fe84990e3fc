"""The fraud example on production stores, for real: model services in Consul, an orchestrator
process whose plan reads users from PostgreSQL, features from Redis and a risk score from an HTTP
service process, with labels arriving on NATS JetStream. The answer equals the same plan run
in-process; one trace holds the lookups, the HTTP call (which the service joined) and the model
calls; every streamed label reaches the online learner exactly once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import nats
import numpy as np
import pytest
import redis.asyncio
import yaml

import examples.fraud.logic  # noqa: F401 - registers fraud.decide for the in-process reference
from examples.fraud.build_data import FIRST_USER_ID, build
from examples.fraud.stores import load_postgres, load_redis, production_plan
from meshserve.orchestrator.engine import Engine, ExecuteCall
from meshserve.orchestrator.inprocess import InProcessCaller
from meshserve.orchestrator.logic.connections import close_logic_connections
from meshserve.orchestrator.plans.parse import plan_from_dict
from meshserve.tensors import from_numpy, to_numpy
from meshserve.v1 import admin_pb2, admin_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from tests.integration.trace_checks import MODEL_RPC_PREFIX
from tests.logic_helpers import OnePlan
from tests.stores import NATS_URL, PG_DSN, REDIS_URL, require_service, unique_name
from tests.waiting import unless_unavailable, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TOKEN = "fraud-prod-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture
def services():
    for name, url, port in (("PostgreSQL", PG_DSN, 5432), ("Redis", REDIS_URL, 6379),
                            ("NATS", NATS_URL, 4222)):  # fmt: skip
        parts = urlsplit(url)
        require_service(name, parts.hostname or "127.0.0.1", parts.port or port)


@pytest.fixture
def risk_service(tmp_path):
    record = tmp_path / "traceparents.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.fraud.risk_service", "--record", str(record)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("RISK_READY "), line
        yield line.split()[1], record
    finally:
        proc.kill()
        proc.wait(10)


async def test_fraud_on_postgres_redis_http_and_streaming_labels(
    services, risk_service, spawn, consul_addr, models_dir, tmp_path, monkeypatch
):
    risk_url, record = risk_service
    table, prefix, learner = (
        unique_name("fraud_users"),
        unique_name("fraud") + ":",
        unique_name("l"),
    )
    learner = learner.replace("_", "-")
    subject = unique_name("FRAUD").upper()
    data = tmp_path / "data"
    build(data, users=60)
    await load_postgres(PG_DSN, table, data)
    await load_redis(REDIS_URL, prefix, data)
    plan = production_plan(table, prefix, name=f"fraud-{learner}", learner=learner)
    plan_file = tmp_path / "plans" / "fraud.yaml"
    plan_file.parent.mkdir()
    plan_file.write_text(yaml.safe_dump(plan))
    env = {
        "MESHSERVE_FRAUD_PG_DSN": PG_DSN,
        "MESHSERVE_FRAUD_REDIS_URL": REDIS_URL,
        "MESHSERVE_FRAUD_RISK_URL": risk_url,
        "MESHSERVE_FEEDBACK_NATS_URL": NATS_URL,
    }
    nc = await nats.connect(NATS_URL)
    try:
        for name in ("scaler", "logreg", "mlp", "forest"):
            spawn(
                "model", "serve", str(models_dir / f"{name}.onnx"), "--name", name,
                "--version", "1", "--port", "0", "--consul", consul_addr, "--metrics-port", "-1",
                "--threads", "1",
            )  # fmt: skip
        orch = spawn(
            "orchestrator", "serve", "--port", "0", "--consul", consul_addr,
            "--plans", str(plan_file.parent), "--logic", "examples.fraud.logic",
            "--metrics-port", "-1", "--learning-dir", str(tmp_path / "learning"),
            "--feedback-stream-subject", f"{subject}.labels", "--feedback-stream-name", subject,
            env={**env, "MESHSERVE_ADMIN_TOKEN": TOKEN},
        )  # fmt: skip
        rng = np.random.default_rng(5)
        users = rng.integers(FIRST_USER_ID, FIRST_USER_ID + 60, size=32)
        amounts = rng.uniform(1, 4000, size=32).astype(np.float32)
        channels = rng.integers(0, 3, size=32)

        def request(i: int) -> orchestrator_pb2.ExecuteRequest:
            inputs = {"user_id": users[i : i + 1].astype(np.int64), "amount": amounts[i : i + 1],
                      "channel": channels[i : i + 1].astype(np.int64)}  # fmt: skip
            return orchestrator_pb2.ExecuteRequest(
                id=f"{learner}-{i}", plan=plan["name"],
                inputs={k: from_numpy(v) for k, v in inputs.items()},
            )  # fmt: skip

        async with grpc.aio.insecure_channel(orch.address) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
            admin = admin_pb2_grpc.AdminStub(channel)
            first = await wait_until(
                lambda: unless_unavailable(stub.Execute(request(0), timeout=10)),
                40, "the plan to answer", 0.25, retry_on=(),
            )  # fmt: skip
            replies = [first, *await asyncio.gather(
                *(stub.Execute(request(i), timeout=20) for i in range(1, 32)))]  # fmt: skip

            async def trace_spans():
                found = await admin.GetTrace(
                    admin_pb2.GetTraceRequest(trace_id=first.trace_id), metadata=AUTH
                )
                names = {s.name for s in found.spans}
                return found.spans if f"plan {plan['name']}" in names else None

            found = await wait_until(trace_spans, 10, "the plan's trace", retry_on=())
            spans = {s.name: s for s in found}
            wanted = (f"SELECT {table}", "features.lookup redis", "POST", "logic fraud.decide")
            for name in wanted:
                assert name in spans, sorted(spans)
            # One CLIENT span per model call (orchestrator/datapath/spans.py), named by the RPC.
            models_called = {
                dict(s.attributes).get("meshserve.model")
                for s in found
                if s.name.startswith(MODEL_RPC_PREFIX)
            }
            assert {"scaler", "forest"} <= models_called, sorted(spans)
            sql = dict(spans[f"SELECT {table}"].attributes)
            assert sql["db.system"] == "postgresql" and "$1" in sql["db.query.text"]
            assert dict(spans["features.lookup redis"].attributes)["db.system"] == "redis"
            recorded = [json.loads(line)["traceparent"] for line in record.read_text().splitlines()]
            assert any(tp.split("-")[1] == first.trace_id for tp in recorded), recorded

            # Labels on the stream (one published twice, one malformed): applied exactly once.
            js = nc.jetstream()
            labels = np.load(data / "behaviour_clusters.npy")
            for i, reply in enumerate(replies):
                body = {"request_id": reply.id, "label": int(labels[users[i] - FIRST_USER_ID])}
                await js.publish(f"{subject}.labels", json.dumps(body).encode())
                if i == 0:
                    await js.publish(f"{subject}.labels", json.dumps(body).encode())
            await js.publish(f"{subject}.labels", b"{oops")

            async def learned():
                stats = await admin.GetStats(admin_pb2.GetStatsRequest(), metadata=AUTH)
                item = next((x for x in stats.learners if x.name == learner), None)
                return item if item is not None and item.updates >= 32 else None

            item = await wait_until(learned, 30, "32 label updates", 0.25, retry_on=())
            assert item.updates == 32
            dead = await js.pull_subscribe(
                f"{subject}.labels.dead", durable="check", stream=subject
            )
            letters = await dead.fetch(1, timeout=10)
            assert letters[0].data == b"{oops"
            assert letters[0].headers["Meshserve-Reason"] == "malformed"

        for name, value in env.items():
            monkeypatch.setenv(name, value)
        reference_plan = production_plan(table, prefix, name=plan["name"])  # no learner
        engine = Engine(
            InProcessCaller.from_dir(models_dir), OnePlan(plan_from_dict(reference_plan))
        )
        try:
            for i in (0, 7, 31):
                inputs = {k: to_numpy(v) for k, v in request(i).inputs.items()}
                reference = await engine.execute(ExecuteCall(plan=plan["name"], inputs=inputs))
                for name in ("score", "decision", "risk_tier"):
                    np.testing.assert_allclose(
                        to_numpy(replies[i].outputs[name]), reference.outputs[name], atol=1e-5
                    )
        finally:
            await close_logic_connections()
    finally:
        try:
            await nc.jetstream().delete_stream(subject)
        except Exception:
            pass
        await nc.close()
        import asyncpg

        conn = await asyncpg.connect(PG_DSN)
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
        client = redis.asyncio.Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
