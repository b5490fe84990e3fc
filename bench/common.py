"""Shared benchmark helpers: closed-loop load generation, percentiles, CPU accounting, output.

Every benchmark measures its own baselines in the same run (same machine, same load), reports
how much CPU the load generator itself used (so a saturated client is visible), prints a table
and writes JSON to bench/results/.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "RESULTS_DIR",
    "CpuMeter",
    "LoadResult",
    "ServerProcess",
    "closed_loop",
    "machine_info",
    "percentile",
    "print_table",
    "process_cpu_s",
    "process_rss_mib",
    "serve_grpc_until_sigterm",
    "write_results",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def process_cpu_s(pid: int) -> float:
    """User+system CPU seconds used so far by another process (Linux /proc), 0 if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _pids(server_pid: int | Sequence[int] | None) -> list[int]:
    if server_pid is None:
        return []
    return [server_pid] if isinstance(server_pid, int) else list(server_pid)


def process_rss_mib(pid: int) -> float:
    """Resident set size of another process in MiB (Linux /proc), NaN if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


class CpuMeter:
    """CPU seconds used by this process (resource.getrusage) and optionally by server PIDs
    (one process, or the processes of a whole mesh, summed)."""

    def __init__(self, server_pid: int | Sequence[int] | None = None) -> None:
        self._server_pids = _pids(server_pid)

    def _server_cpu_s(self) -> float:
        return sum(process_cpu_s(pid) for pid in self._server_pids)

    def __enter__(self) -> CpuMeter:
        self._usage = resource.getrusage(resource.RUSAGE_SELF)
        self._server0 = self._server_cpu_s()
        self._wall0 = time.monotonic()
        self.client_cpu_s = self.server_cpu_s = self.wall_s = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        now = resource.getrusage(resource.RUSAGE_SELF)
        self.wall_s = time.monotonic() - self._wall0
        self.client_cpu_s = (now.ru_utime - self._usage.ru_utime) + (
            now.ru_stime - self._usage.ru_stime
        )
        if self._server_pids:
            self.server_cpu_s = self._server_cpu_s() - self._server0


@dataclass
class LoadResult:
    """One closed-loop measurement point."""

    label: str
    concurrency: int
    requests: int
    rows: int
    errors: int
    wall_s: float
    throughput_rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    client_cpu_s: float
    server_cpu_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def client_cores(self) -> float:
        return self.client_cpu_s / self.wall_s if self.wall_s else 0.0


async def closed_loop(
    label: str,
    call: Callable[[int], Awaitable[int]],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.3,
    server_pid: int | Sequence[int] | None = None,
) -> LoadResult:
    """`concurrency` workers each call ``await call(worker)`` back to back for `duration_s`.

    `call` returns the number of rows it served. Latencies of calls that end after the deadline
    are still counted; calls raising count as errors.
    """

    async def worker(index: int, until: float, latencies: list[float], counts: list[int]) -> None:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                rows = await call(index)
            except Exception:
                counts[1] += 1
                continue
            latencies.append(time.monotonic() - started)
            counts[0] += rows

    warm_until = time.monotonic() + warmup_s
    await asyncio.gather(*(worker(i, warm_until, [], [0, 0]) for i in range(concurrency)))
    latencies: list[float] = []
    counts = [0, 0]
    with CpuMeter(server_pid) as meter:
        until = time.monotonic() + duration_s
        await asyncio.gather(*(worker(i, until, latencies, counts) for i in range(concurrency)))
    return LoadResult(
        label=label,
        concurrency=concurrency,
        requests=len(latencies),
        rows=counts[0],
        errors=counts[1],
        wall_s=meter.wall_s,
        throughput_rps=len(latencies) / meter.wall_s,
        rows_per_s=counts[0] / meter.wall_s,
        p50_ms=percentile(latencies, 50) * 1e3,
        p99_ms=percentile(latencies, 99) * 1e3,
        client_cpu_s=meter.client_cpu_s,
        server_cpu_s=meter.server_cpu_s,
    )


class ServerProcess:
    """A server (``python -m <module> ARGS``, the meshserve CLI by default) in a child process;
    waits for MESHSERVE_READY, stops by PID."""

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path,
        ready_timeout_s: float = 60.0,
        *,
        module: str = "meshserve.clients.cli",
        cwd: str | None = None,
    ) -> None:
        self.args = list(args)
        self.module = module
        self.cwd = cwd
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    def __enter__(self) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            match = re.search(r"MESHSERVE_READY (\S+)", self.log_path.read_text(errors="replace"))
            if match:
                self.address = match.group(1)
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        self.__exit__()
        raise TimeoutError(f"server not ready: {self.log_path.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


async def serve_grpc_until_sigterm(server: Any, host: str, port: int) -> None:
    """Bind `server` (a grpc.aio server with its handlers added) on host:port, print the ready
    line ``MESHSERVE_READY host:port`` (what `ServerProcess` waits for), serve until SIGTERM or
    SIGINT, then stop."""
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"MESHSERVE_READY {host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
    }


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Print dict rows as an aligned text table."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
        return str(value)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write `payload` (plus machine info) as bench/results/<name>-<timestamp>.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    body = {"benchmark": name, "machine": machine_info(), **payload}
    path.write_text(json.dumps(body, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, LoadResult):
        return {**asdict(value), "client_cores": value.client_cores}
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
