"""The compose topology under failure, with real containers (marker `docker`).

Builds the image, brings deploy/compose.yaml up (`--wait`: every health check green), sends
traffic through an orchestrator with the generated stubs, then: stops one mlp container under
load (no request lost), restarts the Consul container (serving continues, registrations come
back), restarts the orchestrators (plans survive). Skipped when no Docker engine answers.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from meshserve.clients.consul_agent import free_port
from meshserve.v1 import admin_pb2, admin_pb2_grpc
from tests.docker.conftest import COMPOSE_FILE, REPO_ROOT
from tests.meshload import (
    PLAN_NAME,
    Load,
    admin_metadata,
    apply_plan,
    digits_plan,
    model_endpoints,
    passing,
)
from tests.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TOKEN = "compose-test-token"


@dataclass
class Topology:
    project: str
    env: dict[str, str]

    def compose(self, *args: str, timeout_s: float = 120) -> str:
        out = subprocess.run(
            ["docker", "compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args],
            capture_output=True, text=True, timeout=timeout_s, env=self.env, cwd=REPO_ROOT,
        )  # fmt: skip
        assert out.returncode == 0, f"docker compose {' '.join(args)}:\n{out.stderr[-3000:]}"
        return out.stdout

    def docker(self, *args: str, timeout_s: float = 120) -> None:
        out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout_s)
        assert out.returncode == 0, out.stderr

    def orchestrator(self, index: int = 1) -> str:
        port = self.compose("port", "--index", str(index), "orchestrator", "50051").strip()
        return "127.0.0.1:" + port.rsplit(":", 1)[1]

    @property
    def consul(self) -> str:
        return f"127.0.0.1:{self.env['MESHSERVE_CONSUL_PORT']}"


@pytest.fixture(scope="module")
def topology(docker_engine: None) -> Iterator[Topology]:
    orch = free_port()
    http = free_port()
    env = {
        **os.environ,
        "MESHSERVE_ADMIN_TOKEN": TOKEN,
        "MESHSERVE_CONSUL_PORT": str(free_port()),
        "MESHSERVE_ORCHESTRATOR_PORTS": f"{orch}-{orch + 1}",
        "MESHSERVE_ORCHESTRATOR_HTTP_PORTS": f"{http}-{http + 1}",
        "MESHSERVE_JAEGER_PORT": str(free_port()),
        "MESHSERVE_PROMETHEUS_PORT": str(free_port()),
        "MESHSERVE_GRAFANA_PORT": str(free_port()),
    }
    topo = Topology(f"meshserve-test-{os.getpid()}", env)
    try:
        topo.compose("up", "-d", "--build", "--wait", "--wait-timeout", "600", timeout_s=1800)
        yield topo
    finally:
        subprocess.run(
            ["docker", "compose", "-p", topo.project, "-f", str(COMPOSE_FILE),
             "down", "-v", "--remove-orphans", "--timeout", "20"],
            env=env, capture_output=True, timeout=300,
        )  # fmt: skip


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(7).random((64, 64), dtype=np.float32) * 16


async def test_all_replicas_registered_and_served(topology: Topology, rows: np.ndarray) -> None:
    assert len(await passing(topology.consul, "scaler")) == 2
    assert len(await passing(topology.consul, "mlp")) == 2
    assert len(await passing(topology.consul, "meshserve-orchestrator")) == 2
    target = topology.orchestrator()
    await apply_plan(target, TOKEN, digits_plan())
    async with Load(target, rows, None, concurrency=4) as load:
        await load.wait_ok(50)
    assert load.failures == [] and load.wrong == []


async def test_model_container_stopped_under_load(topology: Topology, rows: np.ndarray) -> None:
    target = topology.orchestrator()
    await apply_plan(target, TOKEN, digits_plan())
    async with Load(target, rows, None, concurrency=4) as load:
        await load.wait_ok(40)
        topology.docker("stop", "--time", "20", f"{topology.project}-mlp-1")
        await load.wait_ok(100)
    assert load.failures == [], load.failures[:5]

    async def one_left() -> bool:
        return len(await passing(topology.consul, "mlp")) == 1

    await wait_until(one_left, 30, "Consul to drop the stopped mlp container")
    topology.docker("start", f"{topology.project}-mlp-1")

    async def two_again() -> bool:
        eps = await model_endpoints(target, TOKEN, "mlp")
        return len([e for e in eps if e.state == "passing"]) == 2

    await wait_until(two_again, 90, "the restarted mlp container back in rotation")


async def test_consul_container_restart(topology: Topology, rows: np.ndarray) -> None:
    target = topology.orchestrator()
    before = {s: await passing(topology.consul, s) for s in ("scaler", "mlp", "wide_mlp")}
    async with Load(target, rows, None, concurrency=3) as load:
        await load.wait_ok(20)
        topology.compose("restart", "consul")
        for service, ids in before.items():

            async def back(service: str = service, ids: list[str] = ids) -> bool:
                return await passing(topology.consul, service) == ids

            await wait_until(back, 60, f"{service} registrations back")
        await load.wait_ok(40)
    assert load.failures == [], load.failures[:5]


async def test_orchestrator_restart_keeps_plans(topology: Topology, rows: np.ndarray) -> None:
    version = await apply_plan(topology.orchestrator(), TOKEN, digits_plan())
    topology.compose("restart", "orchestrator", timeout_s=300)
    topology.compose("up", "-d", "--wait", "orchestrator", timeout_s=300)
    target = topology.orchestrator(2)

    async def plan_back() -> admin_pb2.Plan:
        async with grpc.aio.insecure_channel(target) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            return await admin.GetPlan(
                admin_pb2.GetPlanRequest(name=PLAN_NAME), metadata=admin_metadata(TOKEN), timeout=5
            )

    plan = await wait_until(plan_back, 60, "the plan from a restarted orchestrator")
    assert plan.version == version
    async with Load(target, rows, None, concurrency=2) as load:
        await load.wait_ok(20)
    assert load.failures == [] and load.wrong == []
