"""A local mesh on this machine: ``meshserve up`` / ``down`` / ``status`` / ``demo``.

``up`` starts a Consul dev agent (unless ``--consul`` names a running one), every example model
(``--models N`` replicas each) and the orchestrator as detached processes, applies the example
plans through the Admin API and prints a table of endpoints. PIDs (with their start times) go to
``<state-dir>/state.json``; ``down`` stops exactly those processes and verifies they are gone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc

from meshserve.clients.consul_agent import REPO_ROOT, ConsulAgent, ConsulAgentConfig, port_is_free
from meshserve.clients.healthcheck import check_health
from meshserve.clients.local_state import (
    STATE_FILE,
    MeshState,
    TrackedProcess,
    is_running,
    load_state,
    make_private_dir,
    process_start_ticks,
    save_state,
    stop_processes,
)
from meshserve.credentials import ADMIN_TOKEN_ENV
from meshserve.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["LocalMeshConfig", "down", "register", "status", "up"]

log = logging.getLogger(__name__)

READY_PATTERN = re.compile(rb"MESHSERVE_READY (\S+)")
HTTP_PATTERN = re.compile(rb"MESHSERVE_HTTP (\S+)")
DEFAULT_MODELS = ("scaler", "logreg", "mlp", "forest", "wide_mlp")
# Marks every process of one local mesh (environment), so leaks can be found after `down`.
MESH_ENV = "MESHSERVE_LOCAL_MESH"


@dataclass(frozen=True)
class LocalMeshConfig:
    """What ``up`` starts. Paths are resolved against the current directory."""

    state_dir: Path = Path(".meshserve")
    models_dir: Path = REPO_ROOT / "examples" / "models"
    plans_dir: Path = REPO_ROOT / "examples" / "plans"
    replicas_per_model: int = 1
    model_names: tuple[str, ...] = DEFAULT_MODELS
    consul_address: str = ""  # "" starts a dev agent
    consul_http_port: int = 8500  # preferred port of that agent; a free one when taken
    # "" runs that agent in dev mode (state in memory); a folder makes it a single-node server
    # whose KV (plans, traffic, learning) and registrations survive an agent restart.
    consul_data_dir: str = ""
    host: str = "127.0.0.1"
    ready_timeout_s: float = 90.0
    admin_token: str = ""  # "" generates one
    orchestrator_args: tuple[str, ...] = ()  # extra `orchestrator serve` flags (--logic MODULE)
    # Extra environment of the orchestrator (where data and services are; may hold secrets,
    # so it goes to the environment, never to argv).
    orchestrator_env: tuple[tuple[str, str], ...] = ()
    extra_plans: tuple[tuple[str, str], ...] = ()  # (file name, text), applied after plans_dir


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


@contextmanager
def _mesh_env(state_dir: Path) -> Iterator[None]:
    # ConsulAgent inherits os.environ; mark it like every other process of this mesh.
    old = os.environ.get(MESH_ENV)
    os.environ[MESH_ENV] = str(state_dir)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(MESH_ENV, None)
        else:
            os.environ[MESH_ENV] = old


class _Launcher:
    """Starts detached ``meshserve`` processes and records each one in the state file at once."""

    def __init__(self, config: LocalMeshConfig, state: MeshState) -> None:
        self.config = config
        self.state = state
        self.logs = config.state_dir / "logs"
        make_private_dir(config.state_dir)
        make_private_dir(self.logs)

    def track(self, proc: TrackedProcess) -> None:
        self.state = self.state.with_process(proc)
        save_state(self.config.state_dir, self.state)

    def spawn(
        self,
        role: str,
        name: str,
        args: Sequence[str],
        model: str = "",
        secret_env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start one process; `secret_env` goes to its environment (never to its argv)."""
        log_path = self.logs / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", MESH_ENV: str(self.config.state_dir)}
        env.update(secret_env or {})
        env.setdefault("OTEL_SERVICE_NAME", f"meshserve-{role}")
        with log_path.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "meshserve.clients.cli", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # detached: survives the `up` process and its terminal
            )
        ticks = process_start_ticks(popen.pid) or 0
        self.track(TrackedProcess(role, name, popen.pid, ticks, "", str(log_path), model))
        return popen

    def wait_ready(self, popens: dict[str, subprocess.Popen[bytes]]) -> dict[str, str]:
        """Wait for every process's MESHSERVE_READY line; returns name -> address."""
        deadline = time.monotonic() + self.config.ready_timeout_s
        started = time.monotonic()
        ready: dict[str, str] = {}
        while len(ready) < len(popens):
            for name, popen in popens.items():
                if name in ready:
                    continue
                log_path = self.logs / f"{name}.log"
                match = READY_PATTERN.search(log_path.read_bytes())
                if match:
                    ready[name] = match.group(1).decode()
                    _progress(f"{name} ready at {ready[name]} ({time.monotonic() - started:.1f}s)")
                elif popen.poll() is not None:
                    tail = log_path.read_text(errors="replace").splitlines()[-15:]
                    raise RuntimeError(
                        f"{name} exited with {popen.returncode} while starting; log {log_path}:\n"
                        + "\n".join(tail)
                    )
            if time.monotonic() > deadline:
                missing = sorted(set(popens) - set(ready))
                raise TimeoutError(
                    f"not ready within {self.config.ready_timeout_s:.0f}s: {', '.join(missing)} "
                    f"(logs in {self.logs})"
                )
            time.sleep(0.05)
        procs = tuple(
            replace(p, address=ready.get(p.name, p.address)) for p in self.state.processes
        )
        self.state = replace(self.state, processes=procs)
        save_state(self.config.state_dir, self.state)
        return ready


def _start_consul(config: LocalMeshConfig, launcher: _Launcher) -> str:
    if config.consul_address:
        _progress(f"using the Consul agent at {config.consul_address}")
        return config.consul_address
    port = config.consul_http_port if port_is_free(config.consul_http_port) else 0
    agent = ConsulAgent(
        ConsulAgentConfig(
            http_port=port,
            log_path=str(launcher.logs / "consul.log"),
            data_dir=config.consul_data_dir,
        )
    )
    _progress(
        f"starting a Consul server agent (data in {config.consul_data_dir})"
        if config.consul_data_dir
        else "starting a Consul dev agent"
    )
    with _mesh_env(config.state_dir):
        agent.start()
    assert agent.process is not None
    pid = agent.process.pid
    launcher.track(
        TrackedProcess(
            "consul", "consul", pid, process_start_ticks(pid) or 0, agent.address,
            str(launcher.logs / "consul.log"),
        )
    )  # fmt: skip
    _progress(f"consul ready at {agent.address}")
    return agent.address


def _plan_files(plans_dir: Path) -> list[tuple[str, str]]:
    files = sorted(p for p in plans_dir.glob("*") if p.suffix in (".yaml", ".yml", ".json"))
    return [(p.name, p.read_text()) for p in files]


async def _apply_plans(address: str, token: str, files: list[tuple[str, str]]) -> list[str]:
    applied: list[str] = []
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        for filename, text in files:
            request = admin_pb2.ApplyPlanRequest(plan_text=text)
            try:
                reply = await admin.ApplyPlan(request, metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError as exc:
                _progress(f"plan {filename} rejected: {exc.code().name}: {exc.details()}")
                continue
            applied.append(f"{reply.name} v{reply.version}")
            _progress(f"plan {reply.name} v{reply.version} applied ({filename})")
    return applied


def up(config: LocalMeshConfig) -> MeshState:
    """Start the local mesh and return its state; on failure stop whatever was started."""
    existing = load_state(config.state_dir)
    if existing and any(is_running(p) for p in existing.processes):
        raise RuntimeError(
            f"a mesh from {config.state_dir} is already running; `meshserve down` stops it"
        )
    missing = [m for m in config.model_names if not (config.models_dir / f"{m}.onnx").exists()]
    if missing:
        raise FileNotFoundError(
            f"models {missing} not in {config.models_dir}; build them with "
            "`python examples/build_models.py --out examples/models`"
        )
    token = config.admin_token or secrets.token_hex(16)
    launcher = _Launcher(config, MeshState(consul_address="", admin_token=token))
    try:
        consul = _start_consul(config, launcher)
        launcher.state = replace(launcher.state, consul_address=consul)
        common = ["--host", config.host, "--port", "0", "--consul", consul, "--metrics-port", "0"]
        popens: dict[str, subprocess.Popen[bytes]] = {}
        for model in config.model_names:
            for i in range(1, config.replicas_per_model + 1):
                name = f"{model}-{i}"
                path = str((config.models_dir / f"{model}.onnx").resolve())
                args = ["model", "serve", path, "--name", model, "--version", "1", *common]
                popens[name] = launcher.spawn("model", name, args, model=model)
        popens["orchestrator"] = launcher.spawn(
            "orchestrator",
            "orchestrator",
            ["orchestrator", "serve", *common, *config.orchestrator_args],
            secret_env={**dict(config.orchestrator_env), ADMIN_TOKEN_ENV: token},
        )
        _progress(f"started {len(popens)} processes; waiting for them to serve")
        ready = launcher.wait_ready(popens)
        orchestrator = ready["orchestrator"]
        files = _plan_files(config.plans_dir) + list(config.extra_plans)
        plans = asyncio.run(_apply_plans(orchestrator, token, files))
        launcher.state = replace(
            launcher.state,
            orchestrator_address=orchestrator,
            orchestrator_http=_http_url(launcher.logs / "orchestrator.log"),
            plans=tuple(plans),
        )
        save_state(config.state_dir, launcher.state)
    except BaseException:
        survivors = stop_processes(launcher.state.processes, grace_s=5)
        if not survivors:
            (config.state_dir / STATE_FILE).unlink(missing_ok=True)
        raise
    return launcher.state


def down(state_dir: Path, grace_s: float = 15.0) -> list[TrackedProcess]:
    """Stop every process `up` recorded in `state_dir`; returns those still alive (none = done)."""
    state = load_state(state_dir)
    if state is None:
        return []
    survivors = stop_processes(state.processes, grace_s=grace_s)
    if not survivors:
        (state_dir / STATE_FILE).unlink()
    return survivors


async def _health_rows(state: MeshState) -> list[tuple[str, ...]]:
    async def one(proc: TrackedProcess) -> tuple[str, ...]:
        alive = is_running(proc)
        if not alive:
            health = "-"
        elif proc.role == "consul":
            health = "SERVING"  # the agent answered /v1/status/leader when it started
        elif proc.address:
            health = await check_health(proc.address, timeout_s=2.0)
        else:
            health = "STARTING"
        return (
            proc.name,
            proc.role,
            str(proc.pid),
            "up" if alive else "gone",
            health,
            proc.address,
        )

    return list(await asyncio.gather(*(one(p) for p in state.processes)))


def _http_url(log_path: Path) -> str:
    """Base URL of the HTTP ingress a server announced in its log ("" when it serves none)."""
    match = HTTP_PATTERN.search(log_path.read_bytes())
    return f"http://{match.group(1).decode()}" if match else ""


def status(state_dir: Path) -> tuple[MeshState | None, list[tuple[str, ...]]]:
    """The recorded state and one row per process: name, role, pid, process, health, address."""
    state = load_state(state_dir)
    if state is None:
        return None, []
    return state, asyncio.run(_health_rows(state))


def print_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def print_summary(state: MeshState) -> None:
    print_table(
        [(p.name, p.role, str(p.pid), p.address) for p in state.processes],
        ("NAME", "ROLE", "PID", "ADDRESS"),
    )
    print(f"\nconsul:       http://{state.consul_address}/ui")
    print(f"orchestrator: {state.orchestrator_address}  (admin token in {STATE_HINT})")
    if state.orchestrator_http:
        print(f"http:         {state.orchestrator_http}/docs  (OpenAPI: /openapi.json)")
    print(f"plans:        {', '.join(state.plans) or '(none)'}")


STATE_HINT = "<state-dir>/state.json"


def _config_from_args(args: argparse.Namespace) -> LocalMeshConfig:
    names = tuple(n for n in args.only.split(",") if n) if args.only else DEFAULT_MODELS
    return LocalMeshConfig(
        state_dir=Path(args.state_dir).resolve(),
        models_dir=Path(args.models_dir).resolve(),
        plans_dir=Path(args.plans_dir).resolve(),
        replicas_per_model=args.models,
        model_names=names,
        consul_address=args.consul,
        consul_data_dir=str(Path(args.consul_data_dir).resolve()) if args.consul_data_dir else "",
        ready_timeout_s=args.timeout_s,
    )


def _cmd_up(args: argparse.Namespace) -> int:
    try:
        state = up(_config_from_args(args))
    except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
        print(f"meshserve up: {exc}", file=sys.stderr)
        return 1
    print_summary(state)
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    if load_state(state_dir) is None:
        print(f"nothing to stop: no mesh recorded in {state_dir}")
        return 0
    survivors = down(state_dir)
    if survivors:
        print("still running: " + ", ".join(f"{p.name} (pid {p.pid})" for p in survivors))
        return 1
    print(f"stopped the mesh recorded in {state_dir}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state, rows = status(Path(args.state_dir).resolve())
    if state is None:
        print(f"no mesh recorded in {Path(args.state_dir).resolve()}")
        return 3
    print_table(rows, ("NAME", "ROLE", "PID", "PROCESS", "HEALTH", "ADDRESS"))
    return 0 if all(r[4] == "SERVING" for r in rows) else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from meshserve.clients.demo import run_demo  # heavy imports (numpy) only for this command
    from meshserve.clients.demo_fraud import with_fraud_example

    config = with_fraud_example(_config_from_args(args))
    return run_demo(config, up=up, down=down, print_summary=print_summary, requests=args.requests)


def _add_common(
    parser: argparse.ArgumentParser,
    handler: Callable[[argparse.Namespace], int],
    state_dir: str = ".meshserve",
) -> None:
    parser.add_argument("--state-dir", default=state_dir, help="where PIDs and logs are kept")
    parser.set_defaults(handler=handler)


def _add_up_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=int, default=1, metavar="N", help="replicas of each model")
    parser.add_argument("--only", default="", help="comma-separated subset of the example models")
    parser.add_argument("--models-dir", default=str(REPO_ROOT / "examples" / "models"))
    parser.add_argument("--plans-dir", default=str(REPO_ROOT / "examples" / "plans"))
    parser.add_argument(
        "--consul", default="", help="use this Consul agent instead of starting one"
    )
    parser.add_argument(
        "--consul-data-dir",
        default="",
        help="run the started Consul as a single-node server keeping its state here "
        "(default: a dev agent that keeps nothing across restarts)",
    )
    parser.add_argument("--timeout-s", type=float, default=90.0, help="readiness deadline")


def register(subparsers: Any) -> None:
    """Add the ``up``, ``down``, ``status`` and ``demo`` commands to the ``meshserve`` CLI."""
    p_up = subparsers.add_parser("up", help="start a local mesh (Consul, models, orchestrator)")
    _add_common(p_up, _cmd_up)
    _add_up_flags(p_up)
    p_down = subparsers.add_parser("down", help="stop the processes `up` started")
    _add_common(p_down, _cmd_down)
    p_status = subparsers.add_parser("status", help="health of the local mesh")
    _add_common(p_status, _cmd_status)
    p_demo = subparsers.add_parser("demo", help="up, send example traffic, print results, down")
    _add_common(p_demo, _cmd_demo, state_dir=".meshserve-demo")
    _add_up_flags(p_demo)
    p_demo.add_argument("--requests", type=int, default=300, help="requests per plan")
