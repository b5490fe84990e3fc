"""The fraud example in ``meshserve demo``, on the embedded defaults: SQLite users, a SQLite
feature store, the example's business rule (examples/fraud). Its data is built offline by
examples/fraud/build_data.py into the demo's state folder; the orchestrator imports the
example's logic (``--logic examples.fraud.logic``) and finds the data through
``$MESHSERVE_FRAUD_DATA``. The same plan runs on PostgreSQL, Redis, an HTTP risk service and
streaming labels with ``python -m examples.fraud.production``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from meshserve.tensors import from_numpy, to_numpy
from meshserve.v1 import orchestrator_pb2, orchestrator_pb2_grpc

__all__ = ["FRAUD_PLAN", "send_fraud", "with_fraud_example"]

REPO_ROOT = Path(__file__).resolve().parents[1]
FRAUD_DIR = REPO_ROOT / "examples" / "fraud"
FRAUD_PLAN = "fraud"
FRAUD_MODELS = ("scaler", "logreg", "mlp", "forest")


def with_fraud_example(config: Any) -> Any:
    """`config` (a LocalMeshConfig) plus the fraud plan, its logic and data; unchanged when the
    example is not there or a model it needs is not started."""
    plan = FRAUD_DIR / "plan.yaml"
    if not plan.exists() or not set(FRAUD_MODELS) <= set(config.model_names):
        return config
    data = Path(config.state_dir) / "fraud-data"
    subprocess.run(
        [sys.executable, str(FRAUD_DIR / "build_data.py"), "--out", str(data)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return dataclasses.replace(
        config,
        orchestrator_args=(*config.orchestrator_args, "--logic", "examples.fraud.logic"),
        orchestrator_env=(
            *config.orchestrator_env,
            ("MESHSERVE_FRAUD_DATA", str(data)),
            ("PYTHONPATH", str(REPO_ROOT)),
        ),
        extra_plans=(*config.extra_plans, ("fraud.yaml", plan.read_text())),
    )


def _users(data: Path) -> np.ndarray:
    conn = sqlite3.connect(data / "users.sqlite")
    try:
        return np.array([row[0] for row in conn.execute("SELECT id FROM users ORDER BY id")])
    finally:
        conn.close()


async def send_fraud(
    orchestrator: str,
    data: Path,
    requests: int,
    concurrency: int,
    result: Any,
    *,
    plan: str = FRAUD_PLAN,
    on_reply: Callable[[int, orchestrator_pb2.ExecuteResponse], None] | None = None,
) -> Any:
    """Send `requests` one-transaction requests through the fraud plan; fill `result` (a
    PlanResult): latencies, failures by code, and (user, decision) samples. `on_reply` sees
    each answer with its user id (the production runner streams labels for them)."""
    users = _users(data)
    rng = np.random.default_rng(42)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    async with grpc.aio.insecure_channel(orchestrator) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                inputs: dict[str, np.ndarray] = {
                    "user_id": rng.choice(users, size=1).astype(np.int64),
                    "amount": rng.uniform(1, 3000, size=1).astype(np.float32),
                    "channel": rng.integers(0, 3, size=1).astype(np.int64),
                }
                request = orchestrator_pb2.ExecuteRequest(
                    plan=plan, inputs={k: from_numpy(v) for k, v in inputs.items()}
                )
                start = time.monotonic()
                result.sent += 1
                try:
                    reply = await stub.Execute(request, timeout=10)
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                    result.failures[code] = result.failures.get(code, 0) + 1
                    continue
                result.latencies_ms.append((time.monotonic() - start) * 1e3)
                if on_reply is not None:
                    on_reply(int(inputs["user_id"][0]), reply)
                decision = int(to_numpy(reply.outputs["decision"])[0])
                if len(result.samples) < 3:
                    names = {0: "approve", 1: "review", 2: "block"}
                    result.samples.append(
                        (int(inputs["user_id"][0]), decision, {"decide": names[decision]})
                    )

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result
