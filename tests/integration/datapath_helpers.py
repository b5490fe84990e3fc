"""Helpers shared by the data-path integration tests: replicas, payloads, a load generator."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from meshserve.errors import MeshError, UnavailableError
from meshserve.orchestrator.datapath import DataPathConfig, MeshCaller
from meshserve.registry.config import ConsulConfig
from tests.procs import ChildProcess
from tests.waiting import wait_until

_names = itertools.count(1)


def unique_name(prefix: str) -> str:
    """A model service name no other test uses (Consul is shared by the session)."""
    return f"{prefix}-{random.randrange(1 << 20):05x}-{next(_names)}"


def serve_args(models_dir: Path, consul_addr: str, name: str, model: str = "mlp") -> list[str]:
    return [
        "model", "serve", str(models_dir / f"{model}.onnx"), "--name", name, "--version", "1",
        "--port", "0", "--consul", consul_addr, "--metrics-port", "-1",
    ]  # fmt: skip


def start_replicas(
    spawn: Callable[..., ChildProcess], models_dir: Path, consul_addr: str, n: int, name: str
) -> list[ChildProcess]:
    return [spawn(*serve_args(models_dir, consul_addr, name)) for _ in range(n)]


def mesh_caller(consul_addr: str, config: DataPathConfig | None = None) -> MeshCaller:
    """A MeshCaller discovering replicas in the session's Consul agent."""
    return MeshCaller(config or DataPathConfig(), ConsulConfig(address=consul_addr))


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 64), dtype=np.float32) * 16


async def wait_passing(caller: MeshCaller, model: str, n: int, timeout_s: float = 15.0) -> None:
    """Call `model` until the caller tracks `n` passing replicas."""

    async def passing() -> bool:
        try:
            await caller.infer(model, {"input": rows(1, 0)}, timeout_s=2)
        except UnavailableError:
            pass
        return len([s for s in caller.snapshot(model) if s.state == "passing"]) >= n

    await wait_until(passing, timeout_s, f"{n} passing replicas of {model}", 0.05, retry_on=())


def requests_by_replica(caller: MeshCaller, model: str) -> dict[str, int]:
    return {s.instance_id: s.requests_total for s in caller.snapshot(model)}


@dataclass
class Load:
    """`concurrency` workers calling `model` in a loop until stopped; counts every outcome."""

    caller: MeshCaller
    model: str
    concurrency: int = 8
    timeout_s: float = 10.0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)  # of every successful call
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> Load:
        self._tasks = [
            asyncio.get_running_loop().create_task(self._worker(i)) for i in range(self.concurrency)
        ]
        return self

    async def _worker(self, i: int) -> None:
        rng = np.random.default_rng(i)
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            n = int(rng.integers(1, 4))
            x = rng.random((n, 64), dtype=np.float32) * 16
            start = loop.time()
            try:
                out = await self.caller.infer(self.model, {"input": x}, timeout_s=self.timeout_s)
                assert out["probabilities"].shape == (n, 10)
                self.ok += 1
                self.latencies_s.append(loop.time() - start)
            except MeshError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def quantiles_ms(self) -> tuple[float, float, float]:
        """(p50, p99, max) of the successful calls' latencies, in ms."""
        if not self.latencies_s:
            return 0.0, 0.0, 0.0
        p50, p99 = np.percentile(self.latencies_s, [50, 99])
        return float(p50) * 1e3, float(p99) * 1e3, max(self.latencies_s) * 1e3
