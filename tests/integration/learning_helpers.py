"""Helpers of the online-learning integration tests: real orchestrator and model processes."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np

from meshserve.tensors import from_numpy
from meshserve.v1 import admin_pb2, admin_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc
from tests.waiting import unless_unavailable, wait_until

TOKEN = "learning-test-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def orchestrator(spawn, consul_addr: str, plans: Path, work: Path, *extra: str):
    return spawn(
        "orchestrator", "serve", "--port", "0", "--consul", consul_addr,
        "--plans", str(plans), "--learning-dir", str(work), "--metrics-port", "-1", *extra,
        env={"MESHSERVE_ADMIN_TOKEN": TOKEN},
    )  # fmt: skip


def model_service(spawn, consul_addr: str, models_dir: Path, name: str):
    return spawn(
        "model", "serve", str(models_dir / f"{name}.onnx"), "--name", name, "--version", "1",
        "--port", "0", "--consul", consul_addr, "--metrics-port", "-1", "--threads", "1",
    )  # fmt: skip


async def stats(address: str) -> admin_pb2.Stats:
    async with grpc.aio.insecure_channel(address) as channel:
        return await admin_pb2_grpc.AdminStub(channel).GetStats(
            admin_pb2.GetStatsRequest(), metadata=AUTH
        )


async def wait_stats(address: str, predicate, timeout_s: float) -> admin_pb2.Stats:
    async def satisfied() -> admin_pb2.Stats | None:
        current = await stats(address)
        return current if predicate(current) else None

    return await wait_until(satisfied, timeout_s, "stats satisfying the condition", 0.25)


async def warm_up(address: str, plan: str, data: np.ndarray, timeout_s: float = 30) -> None:
    """Run `plan` until its models answer (replicas pass their Consul check a moment after
    they print READY)."""
    request = orchestrator_pb2.ExecuteRequest(plan=plan, inputs={"input": from_numpy(data)})
    async with grpc.aio.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        await wait_until(
            lambda: unless_unavailable(stub.Execute(request, timeout=10)),
            timeout_s,
            f"plan {plan} to answer",
            0.25,
            retry_on=(),
        )


def arms_of(s: admin_pb2.Stats, plan: str) -> list[tuple]:
    return [
        (a.context, a.arm, a.pulls, a.reward_sum, a.alpha, a.beta)
        for b in s.bandits
        if b.plan == plan
        for a in b.arms
    ]
