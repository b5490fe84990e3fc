"""Failure scenarios with real local processes: a Consul agent, model replicas, the orchestrator.

- a model replica stops (SIGTERM: drains) or dies (SIGKILL) under load: no request is lost;
- the Consul agent restarts under load: serving continues, registrations come back, and the
  orchestrator writes its plans back into the (dev agent's empty) KV;
- the orchestrator is killed and started again: its plans survive (they live in Consul KV).

The mesh has its own Consul agent (restarting the session agent would disturb other tests).
"""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig
from meshserve.v1 import admin_pb2, admin_pb2_grpc
from tests.meshload import (
    PLAN_NAME,
    Load,
    admin_metadata,
    apply_plan,
    digits_plan,
    expected_labels,
    kv_keys,
    model_endpoints,
    passing,
    require_servers,
)
from tests.procs import ChildProcess
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class LocalMesh:
    """Processes of one scenario mesh, each stopped by PID at the end."""

    consul: ConsulAgent
    models_dir: Path
    logs: Path
    token: str = field(default_factory=lambda: secrets.token_hex(8))
    procs: list[ChildProcess] = field(default_factory=list)
    orchestrator: ChildProcess | None = None

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> ChildProcess:
        log = self.logs / f"{name}-{len(self.procs)}.log"
        child = ChildProcess(list(args), log, env or {})
        self.procs.append(child)
        return child.start(ready_timeout_s=60)

    def start_model(self, model: str) -> ChildProcess:
        path = str(self.models_dir / f"{model}.onnx")
        return self.start(
            model, "model", "serve", path, "--name", model, "--version", "1",
            "--port", "0", "--consul", self.consul.address, "--metrics-port", "-1",
        )  # fmt: skip

    def start_orchestrator(self) -> ChildProcess:
        self.orchestrator = self.start(
            "orchestrator", "orchestrator", "serve", "--port", "0",
            "--consul", self.consul.address, "--metrics-port", "-1",
            env={"MESHSERVE_ADMIN_TOKEN": self.token},
        )  # fmt: skip
        return self.orchestrator

    @property
    def target(self) -> str:
        assert self.orchestrator is not None
        return self.orchestrator.address

    def stop_all(self) -> None:
        for child in reversed(self.procs):
            child.stop(timeout_s=10)
        self.consul.stop()
        leaked = [c.args for c in self.procs if c.process and c.process.poll() is None]
        assert not leaked, f"processes still running after teardown: {leaked}"


@pytest.fixture(scope="module")
def mesh(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    require_servers()
    logs = tmp_path_factory.mktemp("scenario-mesh")
    consul = ConsulAgent(ConsulAgentConfig(log_path=str(logs / "consul.log"))).start()
    mesh = LocalMesh(consul, models_dir, logs)
    try:
        mesh.start_model("scaler")
        mesh.start_orchestrator()
        yield mesh
    finally:
        mesh.stop_all()


@pytest.fixture(scope="module")
def digits(models_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return expected_labels(models_dir)


async def _ready(mesh: LocalMesh, mlp_replicas: int) -> None:
    """Plan applied (Consul may have lost it in a restart), replicas visible to the orchestrator."""
    await apply_plan(mesh.target, mesh.token, digits_plan())

    async def seen() -> bool:
        mlp = [
            e for e in await model_endpoints(mesh.target, mesh.token, "mlp") if e.state == "passing"
        ]
        scaler = await model_endpoints(mesh.target, mesh.token, "scaler")
        return len(mlp) >= mlp_replicas and bool(scaler)

    await wait_until(seen, 30, f"{mlp_replicas} mlp replicas and a scaler seen by the orchestrator")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_replica_stopped_under_load_loses_no_request(
    mesh: LocalMesh, digits: tuple[np.ndarray, np.ndarray], sig: signal.Signals
) -> None:
    victim, survivor = mesh.start_model("mlp"), mesh.start_model("mlp")
    try:
        await _ready(mesh, mlp_replicas=2)
        X, expected = digits
        async with Load(mesh.target, X, expected, concurrency=4) as load:
            await load.wait_ok(40)

            async def both_served() -> bool:
                eps = await model_endpoints(mesh.target, mesh.token, "mlp")
                return len([e for e in eps if e.requests_total > 0]) >= 2

            await wait_until(both_served, 15, "traffic on both mlp replicas")
            victim.signal(sig)
            victim.wait(15)
            await load.wait_ok(100)  # well past the stop, on the survivor only
        assert load.failures == [], f"{len(load.failures)} requests lost: {load.failures[:5]}"
        assert load.wrong == [], load.wrong[:5]

        async def victim_gone() -> bool:
            ids = await passing(mesh.consul.address, "mlp")
            return len(ids) == 1

        await wait_until(victim_gone, 30, "Consul to drop the stopped replica")
    finally:
        victim.stop(timeout_s=10)
        survivor.stop(timeout_s=10)


async def test_consul_restart_keeps_serving_and_registrations_return(
    mesh: LocalMesh, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    replica = mesh.start_model("mlp")
    try:
        await _ready(mesh, mlp_replicas=1)
        before = {s: await passing(mesh.consul.address, s) for s in ("scaler", "mlp")}
        X, expected = digits
        async with Load(mesh.target, X, expected, concurrency=3) as load:
            await load.wait_ok(20)
            mesh.consul.stop()
            await load.wait_ok(60)  # served from the orchestrator's last view of the registry
            mesh.consul.start()  # same ports, empty state (a dev agent keeps nothing)
            for service, ids in before.items():

                async def back(service: str = service, ids: list[str] = ids) -> bool:
                    return await passing(mesh.consul.address, service) == ids

                await wait_until(back, 30, f"{service} registrations {ids} back in Consul")

            async def orchestrator_back() -> bool:
                return bool(await passing(mesh.consul.address, "meshserve-orchestrator"))

            await wait_until(
                orchestrator_back, 30, "the orchestrator's registration back in Consul"
            )

            async def plan_back() -> bool:
                keys = await kv_keys(mesh.consul.address, f"meshserve/plans/{PLAN_NAME}/")
                return f"meshserve/plans/{PLAN_NAME}/active" in keys

            await wait_until(
                plan_back, 30, "the orchestrator to write its plans back into Consul KV"
            )
            await load.wait_ok(20)
        assert load.failures == [], f"{len(load.failures)} requests lost: {load.failures[:5]}"
        assert load.wrong == [], load.wrong[:5]
    finally:
        replica.stop(timeout_s=10)


async def test_orchestrator_restart_keeps_plans(
    mesh: LocalMesh, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    replica = mesh.start_model("mlp")
    try:
        await _ready(mesh, mlp_replicas=1)
        version = await apply_plan(mesh.target, mesh.token, digits_plan())
        old = mesh.orchestrator
        assert old is not None
        old.kill()  # a crash: nothing gets a chance to save anything on the way out
        mesh.start_orchestrator()

        async with grpc.aio.insecure_channel(mesh.target) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            plan = await admin.GetPlan(
                admin_pb2.GetPlanRequest(name=PLAN_NAME), metadata=admin_metadata(mesh.token)
            )
        assert plan.version == version
        assert [s.name for s in plan.steps] == ["scale", "classify"]
        await _ready_without_apply(mesh)
        X, expected = digits
        async with Load(mesh.target, X, expected, concurrency=2) as load:
            await load.wait_ok(20)
        assert load.failures == [] and load.wrong == [], (load.failures[:5], load.wrong[:5])
    finally:
        replica.stop(timeout_s=10)


async def _ready_without_apply(mesh: LocalMesh) -> None:
    async def seen() -> bool:
        return bool(await model_endpoints(mesh.target, mesh.token, "mlp"))

    await wait_until(seen, 30, "the restarted orchestrator to discover mlp")
