"""Start and stop a local Consul agent for tests and ``meshserve up``: a ``-dev`` agent, or a
single-node server that keeps its state in a data dir."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ConsulAgent", "ConsulAgentConfig", "find_consul_binary", "free_port", "port_is_free"]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


def find_consul_binary() -> str:
    """Path of a consul binary: $MESHSERVE_CONSUL_BIN, PATH, the project's .tools, else install it.

    Installing runs ``deploy/install_consul.sh`` (Debian bullseye's consul 1.8.7 via apt).
    """
    env = os.environ.get("MESHSERVE_CONSUL_BIN")
    if env and os.access(env, os.X_OK):
        return env
    on_path = shutil.which("consul")
    if on_path:
        return on_path
    local = REPO_ROOT / ".tools" / "consul" / "consul"
    if local.exists():
        return str(local)
    script = REPO_ROOT / "deploy" / "install_consul.sh"
    out = subprocess.run([str(script)], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def port_is_free(port: int) -> bool:
    """True when a TCP port on 127.0.0.1 can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reports free now (for servers that cannot bind 0 and
    report the port they got, like Consul, or whose port must be known before they start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pick_ports(count: int, rng: random.Random) -> list[int]:
    # Consul cannot bind port 0 and report it, so pick a random free block in a high range.
    while True:
        base = rng.randrange(20000, 60000 - count)
        ports = list(range(base, base + count))
        if all(port_is_free(p) for p in ports):
            return ports


@dataclass(frozen=True)
class ConsulAgentConfig:
    """How to run the agent. Ports of 0 are picked at random among free ones.

    Without `data_dir` it is a ``-dev`` agent: fast to start, everything in memory (a restart
    forgets KV, sessions and registrations). With `data_dir` it is a single-node server
    (``-server -bootstrap-expect 1 -data-dir DIR``) whose KV, sessions and service
    registrations survive a restart, as a production Consul's do.
    """

    binary: str = ""
    http_port: int = 0
    data_dir: str = ""
    log_path: str = ""
    ready_timeout_s: float = 30.0
    # Extra `consul agent` arguments, e.g. ("-hcl", 'acl { enabled = true ... }').
    extra_args: tuple[str, ...] = ()


@dataclass
class ConsulAgent:
    """A ``consul agent -dev`` child process bound to 127.0.0.1, stopped by PID."""

    config: ConsulAgentConfig = field(default_factory=ConsulAgentConfig)
    process: subprocess.Popen[bytes] | None = None
    http_port: int = 0
    _ports: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        """host:port of the HTTP API."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> ConsulAgent:
        """Start the agent (reusing the same ports after a stop) and wait for a leader."""
        binary = self.config.binary or find_consul_binary()
        if not self._ports:
            self._ports = _pick_ports(4, random.Random())
            if self.config.http_port:
                self._ports[0] = self.config.http_port
        http, server, serf_lan, serf_wan = self._ports
        self.http_port = http
        if self.config.data_dir:
            Path(self.config.data_dir).mkdir(parents=True, exist_ok=True)
            mode = [
                "-server", "-bootstrap-expect", "1", "-data-dir", self.config.data_dir, "-ui",
                "-node", "meshserve-local", "-hcl", "performance { raft_multiplier = 1 }",
            ]  # fmt: skip
        else:
            mode = ["-dev"]
        args = [
            binary, "agent", *mode, "-bind", "127.0.0.1", "-client", "127.0.0.1",
            "-http-port", str(http), "-server-port", str(server),
            "-serf-lan-port", str(serf_lan), "-serf-wan-port", str(serf_wan),
            "-dns-port", "-1", "-grpc-port", "-1", "-log-level", "warn",
        ]  # fmt: skip
        args += list(self.config.extra_args)
        log_target = (
            open(self.config.log_path, "ab")  # noqa: SIM115 - the child keeps it open
            if self.config.log_path
            else subprocess.DEVNULL
        )
        self.process = subprocess.Popen(
            args, stdout=log_target, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.wait_ready(self.config.ready_timeout_s)
        log.info(
            "consul %s agent pid=%s on %s",
            "server" if self.config.data_dir else "dev", self.process.pid, self.address,
        )  # fmt: skip
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the agent has elected itself leader."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"consul exited with {self.process.returncode} while starting")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/status/leader", timeout=1) as resp:
                    if json.loads(resp.read() or b'""'):
                        return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"consul at {self.address} not ready within {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the agent (SIGTERM, then SIGKILL) and reap it."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)

    def __enter__(self) -> ConsulAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
