"""``orchestrator serve --workers 2``: two processes serve one port, both take connections,
a killed worker is restarted on the same port, and SIGTERM stops the whole group."""

from __future__ import annotations

import os
import signal
import socket
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from meshserve import tensors
from meshserve.clients.consul_agent import free_port
from meshserve.orchestrator.workers import hold_port
from meshserve.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.integration.http_helpers import http_address
from tests.integration.orchestrator_helpers import Procs
from tests.reference import onnx_outputs
from tests.waiting import wait_until, wait_until_sync

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLANS = Path(__file__).resolve().parents[2] / "examples" / "plans" / "pipeline.yaml"


def _two_free_ports() -> int:
    """A port P with P+1 free too (the workers' metrics ports)."""
    for _ in range(50):
        base = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", base + 1))
            except OSError:
                continue
        return base
    raise AssertionError("no two consecutive free ports")


def _served(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if line.startswith('meshserve_plan_requests_total{outcome="ok",plan="digits-pipeline"}')
    )


def _http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return int(reply.status)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


async def _execute_on_new_connection(address: str, x: np.ndarray) -> np.ndarray:
    """One Execute on a channel of its own (a new TCP connection the kernel may give to either
    worker)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        request = orchestrator_pb2.ExecuteRequest(
            plan="digits-pipeline", inputs={"input": tensors.from_numpy(x)}
        )
        reply = await stub.Execute(request, timeout=20, wait_for_ready=True)
        return tensors.to_numpy(reply.outputs["label"])


async def test_two_workers_share_one_port(
    consul_addr: str, models_dir: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    x = (rng.random((3, 64)) * 16).astype(np.float32)
    scaled = onnx_outputs(models_dir, "scaler", x)["scaled"]
    expected = onnx_outputs(models_dir, "mlp", scaled)["label"]
    metrics = _two_free_ports()
    with Procs(tmp_path) as procs:
        procs.model(models_dir, "scaler", consul_addr)
        procs.model(models_dir, "mlp", consul_addr)
        group = procs.orchestrator(
            consul_addr, "--workers", "2", "--plans", str(PLANS), "--no-learning",
            "--metrics-port", str(metrics),
        )  # fmt: skip
        assert group.process is not None
        assert len(_children(group.process.pid)) == 2

        # Connections spread over both workers (the kernel hashes each connection's ports).
        for _ in range(40):
            labels = await _execute_on_new_connection(group.address, x)
            np.testing.assert_array_equal(labels, expected)
        served = [_served(metrics), _served(metrics + 1)]
        assert sum(served) >= 40 and min(served) > 0, served

        # The HTTP ingress shares its port the same way: every new connection is answered.
        http = http_address(group)
        assert [_http_status(f"http://{http}/readyz") for _ in range(10)] == [200] * 10

        # Nobody else can take the port while the group holds it.
        with pytest.raises(OSError):
            socket.create_server(("127.0.0.1", int(group.address.rsplit(":", 1)[1])))

        # A worker killed outright comes back on the same port and serves again.
        victim = _children(group.process.pid)[0]
        os.kill(victim, signal.SIGKILL)
        group_pid = group.process.pid
        wait_until_sync(
            lambda: len(set(_children(group_pid)) - {victim}) == 2, 30, "worker restarted"
        )
        await wait_until(
            lambda: _served(metrics) >= 0 and _served(metrics + 1) >= 0, 30, "metrics ports up"
        )
        for _ in range(10):
            labels = await _execute_on_new_connection(group.address, x)
            np.testing.assert_array_equal(labels, expected)
        assert "restarting in" in group.log_path.read_text()

        workers = _children(group.process.pid)
        assert group.stop() == 0
        assert not _alive(workers)


def test_hold_port_reserves_without_listening() -> None:
    holder = hold_port("127.0.0.1", 0)
    try:
        port = holder.getsockname()[1]
        with pytest.raises(OSError):  # a plain bind (no SO_REUSEPORT) is refused
            socket.create_server(("127.0.0.1", port))
        with pytest.raises(ConnectionRefusedError):  # and nobody answers on it
            socket.create_connection(("127.0.0.1", port), timeout=2)
    finally:
        holder.close()
