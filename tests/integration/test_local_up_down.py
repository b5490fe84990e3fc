"""``meshserve up`` / ``status`` / ``down`` as a user runs them: separate CLI invocations.

`up` leaves detached processes behind on purpose; `down` must stop exactly those, and afterwards
no process carrying this mesh's marker (environment MESHSERVE_LOCAL_MESH=<state dir>) may remain.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from meshserve.clients.local import MESH_ENV
from meshserve.clients.local_state import MeshState, TrackedProcess, is_running, load_state
from meshserve.clients.sdk import MeshServeClient
from meshserve.errors import MeshServeError
from meshserve.tensors import from_numpy, to_numpy
from meshserve.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.meshload import require_servers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAN = """\
name: updown-pipeline
inputs:
  - {name: input, dtype: float32, shape: [-1, 64]}
steps:
  - {name: scaler, model: scaler, inputs: {input: input.input}}
  - {name: logreg, model: logreg, inputs: {input: scaler.scaled}}
outputs:
  label: logreg.label
"""


def _meshserve(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshserve.clients.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _marked_processes(state_dir: Path) -> list[int]:
    """PIDs of live processes whose environment marks them as part of this mesh."""
    marker = f"{MESH_ENV}={state_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


async def _one_prediction(address: str, models_dir: Path) -> int:
    with np.load(models_dir / "digits_test.npz") as npz:
        row = npz["X"][:1]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        reply = await stub.Execute(
            orchestrator_pb2.ExecuteRequest(
                plan="updown-pipeline", inputs={"input": from_numpy(row)}
            ),
            timeout=15,
        )
    return int(to_numpy(reply.outputs["label"]).reshape(-1)[0])


def test_up_then_down_leaves_no_process_behind(models_dir: Path, tmp_path: Path) -> None:
    require_servers()
    state_dir = tmp_path / "mesh"
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "updown.yaml").write_text(PLAN)
    tracked: list[TrackedProcess] = []
    try:
        up = _meshserve(
            "up", "--state-dir", str(state_dir), "--only", "scaler,logreg", "--models", "2",
            "--plans-dir", str(plans), "--models-dir", str(models_dir),
        )  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        state = load_state(state_dir)
        assert state is not None
        tracked = list(state.processes)
        roles = sorted(p.role for p in tracked)
        assert roles == ["consul", "model", "model", "model", "model", "orchestrator"]
        assert all(is_running(p) for p in tracked)
        assert state.plans == ("updown-pipeline v1",)
        assert state.orchestrator_address in up.stdout and "ready at" in up.stderr

        status = _meshserve("status", "--state-dir", str(state_dir), timeout_s=30)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("SERVING") == len(tracked)

        again = _meshserve("up", "--state-dir", str(state_dir), timeout_s=30)
        assert again.returncode != 0 and "already running" in again.stderr

        label = asyncio.run(_one_prediction(state.orchestrator_address, models_dir))
        assert 0 <= label <= 9
        _assert_token_kept_secret(state, state_dir)

        down = _meshserve("down", "--state-dir", str(state_dir), timeout_s=60)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not any(is_running(p) for p in tracked)
        assert _marked_processes(state_dir) == []
        assert not (state_dir / "state.json").exists()
        gone = _meshserve("status", "--state-dir", str(state_dir), timeout_s=30)
        assert gone.returncode == 3
    finally:  # never leak, even when an assertion above failed
        for proc in tracked:
            if is_running(proc):
                os.kill(proc.pid, 9)
        for pid in _marked_processes(state_dir):
            os.kill(pid, 9)


async def _admin_calls_keep_the_token_out_of_spans(address: str, token: str) -> None:
    async with MeshServeClient(address, token=token) as client:
        await client.list_plans()  # the token goes through the interceptor (and any logging)
        traces = await client.list_traces(slowest=50)
        for summary in traces.traces:
            assert token not in str(await client.get_trace(summary.trace_id))
    async with MeshServeClient(address, token="not-" + token) as wrong:
        with pytest.raises(MeshServeError) as refused:
            await wrong.list_plans()
        assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED


def _assert_token_kept_secret(state: MeshState, state_dir: Path) -> None:
    """The admin token is in no argv, log, metric, span, Consul meta or file others can read."""
    token = state.admin_token
    assert len(token) >= 32
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((state_dir / "state.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((state_dir / "logs").stat().st_mode) == 0o700
    asyncio.run(_admin_calls_keep_the_token_out_of_spans(state.orchestrator_address, token))
    for proc in state.processes:
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert token.encode() not in argv, proc.role
    for path in state_dir.rglob("*"):
        if path.is_file() and path.name != "state.json":
            assert token.encode() not in path.read_bytes(), path
    consul = f"http://{state.consul_address}"
    with urllib.request.urlopen(f"{consul}/v1/agent/services", timeout=10) as reply:
        services = json.loads(reply.read())
    assert token not in json.dumps(services)
    for service in services.values():
        port = service.get("Meta", {}).get("metrics_port", "")
        if port and port != "-1":
            url = f"http://{service['Address'] or '127.0.0.1'}:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as reply:
                assert token.encode() not in reply.read(), url


def test_up_reports_missing_models_before_starting_anything(tmp_path: Path) -> None:
    result = _meshserve(
        "up", "--state-dir", str(tmp_path / "mesh"), "--models-dir", str(tmp_path), timeout_s=30
    )
    assert result.returncode != 0
    assert "build_models.py" in result.stderr
    assert not (tmp_path / "mesh" / "state.json").exists()
    assert json.dumps(_marked_processes(tmp_path / "mesh")) == "[]"


def test_demo_runs_end_to_end_and_stops_the_mesh(models_dir: Path, tmp_path: Path) -> None:
    """`make demo` (the README's first command) runs `meshserve demo`: up, traffic, down."""
    require_servers()
    state_dir = tmp_path / "demo"
    try:
        demo = _meshserve(
            "demo", "--state-dir", str(state_dir), "--models-dir", str(models_dir),
            "--requests", "40",
        )  # fmt: skip
        assert demo.returncode == 0, demo.stdout + demo.stderr[-3000:]
        table = demo.stdout.split("PLAN ", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
        assert len(table) >= 6, demo.stdout
        assert any(row.split()[0] == "fraud" for row in table), demo.stdout  # embedded stores
        for row in table:  # every example plan answered every request
            _plan, sent, ok, *_, failures = row.split()
            assert (sent, ok, failures) == ("40", "40", "none"), row
        assert demo.stdout.rstrip().endswith("mesh stopped")
        assert len(demo.stdout.splitlines()) < 60, demo.stdout  # short enough to read
        assert _marked_processes(state_dir) == []
    finally:
        for pid in _marked_processes(state_dir):
            os.kill(pid, 9)
