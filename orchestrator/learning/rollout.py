"""Deploying learner versions: one ``meshserve model serve`` process per version, traffic by KV.

`ProcessDeployer.deploy` writes the ONNX file under `work_dir`, starts
``python -m meshserve.clients.cli model serve FILE --name MODEL --version V --consul ADDR --port 0``
(the child dies with the orchestrator: PR_SET_PDEATHSIG on Linux), waits for its
``MESHSERVE_READY`` line and then for Consul to list it as passing, so a traffic shift never
points at a version nobody can reach. `set_traffic` publishes the model's traffic policy through
the one writer of traffic policies it is given (the plan store's `set_traffic`: validated, CAS in
``<kv_prefix>traffic/<model>``, see orchestrator/traffic_kv.py), which every orchestrator follows.
`retire` stops a version's process with SIGTERM (it drains and deregisters), then SIGKILL after
`stop_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from meshserve.errors import DeadlineExceededError, UnavailableError
from meshserve.orchestrator.traffic import TrafficPolicy
from meshserve.registry.config import ConsulConfig
from meshserve.registry.discovery import EndpointWatcher

__all__ = ["DeployConfig", "ProcessDeployer"]

log = logging.getLogger(__name__)

_READY = re.compile(rb"MESHSERVE_READY (\S+)")


@dataclass(frozen=True)
class DeployConfig:
    """Where model files and logs go, and how long a new version may take to come up."""

    work_dir: str
    ready_timeout_s: float = 60.0
    passing_timeout_s: float = 30.0
    stop_timeout_s: float = 10.0
    extra_args: tuple[str, ...] = ("--metrics-port", "-1", "--threads", "1")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            args,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )


class ProcessDeployer:
    """Model versions as child processes registered in Consul (see the module docstring)."""

    def __init__(
        self,
        consul: ConsulConfig,
        config: DeployConfig,
        publish_traffic: Callable[[TrafficPolicy], Awaitable[None]],
    ) -> None:
        self.consul = consul
        self.config = config
        self._publish_traffic = publish_traffic
        self._procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        Path(config.work_dir).mkdir(parents=True, exist_ok=True)

    def running(self) -> list[tuple[str, str]]:
        """(model, version) of every live process."""
        return sorted(k for k, p in self._procs.items() if p.poll() is None)

    async def deploy(self, model: str, version: str, onnx_model: bytes) -> None:
        """Start `version` of `model` and wait until Consul lists it as passing (idempotent:
        a version this deployer already runs is left as it is)."""
        running = self._procs.get((model, version))
        if running is not None and running.poll() is None:
            return
        work = Path(self.config.work_dir)
        path = work / f"{model}-{version}.onnx"
        path.write_bytes(onnx_model)
        log_path = work / f"{model}-{version}.log"
        args = [
            sys.executable, "-m", "meshserve.clients.cli", "model", "serve", str(path),
            "--name", model, "--version", version, "--port", "0",
            "--consul", self.consul.address, *self.config.extra_args,
        ]  # fmt: skip
        proc = _start(args, log_path)
        self._procs[(model, version)] = proc
        deadline = time.monotonic() + self.config.ready_timeout_s
        while not _READY.search(log_path.read_bytes()):
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise UnavailableError(
                    f"model service {model} {version} exited with {proc.returncode}: {tail}"
                )
            if time.monotonic() > deadline:
                await self.retire(model, version)
                raise DeadlineExceededError(
                    f"model service {model} {version} not ready in {self.config.ready_timeout_s}s"
                )
            await asyncio.sleep(0.05)
        watcher = EndpointWatcher(self.consul, model)
        await watcher.start()
        try:
            await watcher.wait_for(
                lambda eps: any(e.version == version for e in eps), self.config.passing_timeout_s
            )
        finally:
            await watcher.stop()
        log.info("model %s version %s is up (pid %d)", model, version, proc.pid)

    async def set_traffic(self, model: str, weights: Mapping[str, float]) -> None:
        await self._publish_traffic(TrafficPolicy(model=model, version_weights=dict(weights)))

    async def retire(self, model: str, version: str) -> None:
        proc = self._procs.pop((model, version), None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, self.config.stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)
        log.info("model %s version %s stopped", model, version)

    async def close(self) -> None:
        """Stop every version this deployer started."""
        for model, version in list(self._procs):
            await self.retire(model, version)
