"""Shared fixtures: a real Consul dev agent, real child processes, the example models."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig
from tests.procs import ChildProcess, unique_kv_prefix

REPO_ROOT = Path(__file__).resolve().parent.parent

# Processes started by tests record every trace (production default: 10% head sampling).
os.environ.setdefault("OTEL_TRACES_SAMPLER", "parentbased_always_on")
MODELS_DIR = REPO_ROOT / "examples" / "models"

# No wall-clock deadline per Hypothesis example: a loaded CI machine is not a failing property
# (timing belongs in bench/, never in a unit test).
settings.register_profile("meshserve", deadline=None)
settings.load_profile("meshserve")


@pytest.fixture(scope="session")
def consul_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    """One real ``consul agent -dev`` for the session on free loopback ports, stopped by PID."""
    log = tmp_path_factory.mktemp("consul") / "consul.log"
    agent = ConsulAgent(ConsulAgentConfig(log_path=str(log)))
    agent.start()
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def consul_addr(consul_agent: ConsulAgent) -> str:
    return consul_agent.address


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The example ONNX models, built offline (once) by examples/build_models.py."""
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "build_models.py"), "--out", str(MODELS_DIR)],
        check=True,
    )
    return MODELS_DIR


@pytest.fixture
def spawn(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., ChildProcess]]:
    """Start ``meshserve`` CLI processes; every one is stopped by PID at teardown.

    Orchestrators started here get a KV namespace of their own test ($MESHSERVE_KV_PREFIX), so
    state left in the session Consul by other tests (plans, traffic, leader lock) is invisible.
    """
    started: list[ChildProcess] = []
    prefix = unique_kv_prefix(request.node.name)

    def _spawn(
        *args: str, env: dict[str, str] | None = None, ready_timeout_s: float = 60.0
    ) -> ChildProcess:
        log = tmp_path / f"proc-{len(started)}.log"
        child = ChildProcess(list(args), log, {"MESHSERVE_KV_PREFIX": prefix, **(env or {})})
        started.append(child)
        return child.start(ready_timeout_s)

    yield _spawn
    for child in reversed(started):
        child.stop(timeout_s=10)
    leaked = [c.args for c in started if c.process and c.process.poll() is None]
    assert not leaked, f"processes still running after teardown: {leaked}"
