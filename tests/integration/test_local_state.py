"""The local mesh's process tracking: PID + start time, SIGTERM then SIGKILL, zombies reaped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from meshserve.clients.local_state import (
    MeshState,
    TrackedProcess,
    is_running,
    load_state,
    process_start_ticks,
    save_state,
    stop_processes,
)

pytestmark = pytest.mark.integration


def _track(popen: subprocess.Popen[bytes], role: str = "model") -> TrackedProcess:
    ticks = process_start_ticks(popen.pid)
    assert ticks is not None
    return TrackedProcess(role, f"p{popen.pid}", popen.pid, ticks)


def test_state_round_trips(tmp_path: Path) -> None:
    state = MeshState(
        consul_address="127.0.0.1:8500",
        admin_token="t",
        processes=(TrackedProcess("consul", "consul", 1, 2, "127.0.0.1:8500"),),
        plans=("a v1",),
    )
    save_state(tmp_path, state)
    assert load_state(tmp_path) == state
    assert load_state(tmp_path / "missing") is None
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        load_state(tmp_path)


def test_reused_pid_is_not_ours() -> None:
    popen = subprocess.Popen(["sleep", "30"])
    try:
        tracked = _track(popen)
        assert is_running(tracked)
        impostor = TrackedProcess("model", "x", popen.pid, tracked.start_ticks + 1)
        assert not is_running(impostor)
        assert stop_processes([impostor], grace_s=0.2) == []
        assert popen.poll() is None, "a process with another start time must not be signalled"
    finally:
        popen.kill()
        popen.wait()


def test_stop_escalates_to_sigkill_and_reaps() -> None:
    stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"])
    polite = subprocess.Popen(["sleep", "30"])
    consul_like = subprocess.Popen(["sleep", "30"])
    procs = [_track(stubborn), _track(polite), _track(consul_like, role="consul")]
    try:
        assert stop_processes(procs, grace_s=0.5) == []
        assert not any(is_running(p) for p in procs)
    finally:
        for p in (stubborn, polite, consul_like):
            if p.poll() is None:
                p.kill()
                p.wait()
