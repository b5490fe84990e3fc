"""Real child processes for integration tests: started with a command line, stopped by PID."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.waiting import wait_until_sync

READY_PATTERN = re.compile(r"MESHSERVE_READY (\S+)")


def unique_kv_prefix(label: str) -> str:
    """A Consul KV namespace (orchestrator `--kv-prefix`) no other test uses, so orchestrators of
    different tests share the session's Consul agent without seeing each other's plans, traffic
    policies, learning state or leader lock."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-")[-60:]
    return f"test/{safe}-{uuid.uuid4().hex[:8]}/"


@dataclass
class ChildProcess:
    """A meshserve process (``python -m meshserve.clients.cli ...``) announcing readiness on stdout.

    Servers print ``MESHSERVE_READY <host:port>`` once serving; `address` is what they reported.
    """

    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    address: str = ""

    def start(self, ready_timeout_s: float = 60.0) -> ChildProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "meshserve.clients.cli", *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        process = self.process

        def ready() -> re.Match[str] | None:
            match = READY_PATTERN.search(self.log_path.read_text(errors="replace"))
            if match is None and process.poll() is not None:
                raise RuntimeError(f"{self.args} exited with {process.returncode}:\n{self.tail()}")
            return match

        try:
            match = wait_until_sync(ready, ready_timeout_s, "MESHSERVE_READY", 0.05, retry_on=())
        except AssertionError:
            self.kill()
            raise TimeoutError(
                f"{self.args} not ready in {ready_timeout_s}s:\n{self.tail()}"
            ) from None
        self.address = match.group(1)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout_s)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode
