"""N orchestrator worker processes serving one port (``orchestrator serve --workers N``).

The orchestrator's data path keeps no per-request state between requests, and everything shared
(plans, traffic policies, learner state, the leader lock) lives in Consul KV, so N ordinary
orchestrator processes can serve one address: each binds the port with SO_REUSEPORT and the
kernel spreads incoming connections across them. This supervisor

- picks the gRPC port (when ``--port 0``) and the HTTP ingress port (``--http-port 0``) and
  holds each with a bound, never-listening SO_REUSEPORT socket so no other program takes it
  between worker restarts;
- starts each worker as ``meshserve orchestrator serve`` with the same flags plus its own
  ``--instance-id <id>-w<i>`` (each registers in Consul and campaigns for leadership like any
  orchestrator of the group) and, when metrics are on, its own ``--metrics-port`` (base + i, or
  a free one for ``0``) so Prometheus scrapes every worker;
- prints the ready line once every worker is ready, restarts a worker that dies (backoff 0.5 s
  doubling to 30 s), and on SIGTERM/SIGINT forwards the signal and waits for every worker to
  drain.

Workers share nothing in memory: Execute read-your-writes after ApplyPlan holds on the worker
that applied it; the others follow the Consul watch (normally within milliseconds).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from meshserve.serving import READY_PREFIX

__all__ = ["WorkerGroup", "WorkersConfig", "hold_port", "worker_argv"]

RESTART_BACKOFF_S = (0.5, 30.0)


@dataclass(frozen=True)
class WorkersConfig:
    """What the supervisor needs from the command line."""

    workers: int
    host: str
    port: int
    instance_id: str
    metrics_port: int
    http_port: int  # -1: off; 0: the supervisor picks one and holds it like the gRPC port
    grace_s: float
    argv: tuple[str, ...]  # the CLI arguments as given (``orchestrator serve ...``)


def hold_port(host: str, port: int) -> socket.socket:
    """A bound SO_REUSEPORT socket on (host, port) that never listens: it reserves the port
    (a free one for 0) for the workers without receiving any connection itself."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker_metrics_port(base: int, index: int) -> int:
    if base <= 0:
        return base  # -1 (off) or 0 (each worker picks a free port)
    return base + index


def worker_argv(cfg: WorkersConfig, port: int, http_port: int, index: int) -> list[str]:
    """The command line of worker `index`: the supervisor's own, with its share pinned."""
    base_id = cfg.instance_id or f"orchestrator-{socket.gethostname()}-{port}"
    return [
        sys.executable, "-m", "meshserve.clients.cli", *cfg.argv,
        "--workers", "1", "--reuse-port", "--port", str(port), "--http-port", str(http_port),
        "--instance-id", f"{base_id}-w{index}",
        "--metrics-port", str(_worker_metrics_port(cfg.metrics_port, index)),
    ]  # fmt: skip


class _Worker:
    def __init__(self, argv: list[str], index: int, ready: threading.Event) -> None:
        self.argv = argv
        self.index = index
        self.ready = ready
        self.process: subprocess.Popen[bytes] | None = None
        self.backoff_s = RESTART_BACKOFF_S[0]

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=None, env=dict(os.environ)
        )
        assert self.process.stdout is not None
        threading.Thread(target=self._pump, args=(self.process.stdout,), daemon=True).start()

    def _pump(self, stream: IO[bytes]) -> None:
        """Forward the worker's stdout, holding back its ready line (the group prints one)."""
        for raw in stream:
            line = raw.decode(errors="replace")
            if line.startswith(READY_PREFIX):
                self.ready.set()
                continue
            sys.stdout.write(line)
            sys.stdout.flush()


class WorkerGroup:
    """Start, watch and stop the workers (see module docstring)."""

    def __init__(self, cfg: WorkersConfig) -> None:
        self.cfg = cfg
        self._stop = threading.Event()

    def run(self) -> int:
        cfg = self.cfg
        holders = [hold_port(cfg.host, cfg.port)]
        port = holders[0].getsockname()[1]
        http_port = cfg.http_port
        if http_port >= 0:
            holders.append(hold_port(cfg.host, http_port))
            http_port = holders[1].getsockname()[1]
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop.set())
        workers = [
            _Worker(worker_argv(cfg, port, http_port, i), i, threading.Event())
            for i in range(cfg.workers)
        ]
        try:
            for worker in workers:
                worker.start()
            if not self._wait_ready(workers):
                return 1
            print(f"{READY_PREFIX} {cfg.host}:{port}", flush=True)
            self._supervise(workers)
            return 0
        finally:
            self._shutdown(workers)
            for holder in holders:
                holder.close()

    def _wait_ready(self, workers: Sequence[_Worker]) -> bool:
        while not self._stop.is_set():
            if all(w.ready.is_set() for w in workers):
                return True
            dead = [w for w in workers if w.process and w.process.poll() is not None]
            if dead:
                code = dead[0].process.returncode if dead[0].process else 1
                print(f"orchestrator worker {dead[0].index} exited with {code} before it was "
                      "ready", file=sys.stderr)  # fmt: skip
                return False
            self._stop.wait(0.05)
        return False

    def _supervise(self, workers: Sequence[_Worker]) -> None:
        restart_at: dict[int, float] = {}
        while not self._stop.wait(0.2):
            now = time.monotonic()
            for worker in workers:
                proc = worker.process
                if proc is None or proc.poll() is None:
                    if proc is not None and worker.ready.is_set():
                        worker.backoff_s = RESTART_BACKOFF_S[0]
                    continue
                due = restart_at.get(worker.index)
                if due is None:
                    restart_at[worker.index] = now + worker.backoff_s
                    print(f"orchestrator worker {worker.index} exited with {proc.returncode}; "
                          f"restarting in {worker.backoff_s:.1f} s", file=sys.stderr)  # fmt: skip
                    worker.backoff_s = min(worker.backoff_s * 2, RESTART_BACKOFF_S[1])
                elif now >= due:
                    del restart_at[worker.index]
                    worker.ready.clear()
                    worker.start()

    def _shutdown(self, workers: Sequence[_Worker]) -> None:
        live = [w.process for w in workers if w.process and w.process.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.grace_s + 10
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
