"""Docker fixtures: a reachable engine (skip with the reason otherwise) and the compose file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "deploy" / "compose.yaml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"


def engine_problem(timeout_s: float = 5.0) -> str:
    """Why no Docker engine can be used here ('' when one answers `docker info`)."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client on PATH"
    try:
        out = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"`docker info` did not answer within {timeout_s}s"
    if out.returncode != 0 or not out.stdout.strip():
        return "no Docker engine reachable: " + (out.stderr.strip().splitlines() or ["?"])[-1]
    return ""


def compose_plugin() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    out = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=10)
    return out.returncode == 0


@pytest.fixture(scope="session")
def docker_engine() -> None:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    if not compose_plugin():
        pytest.skip("the docker compose plugin is not installed (`docker compose version` fails)")
