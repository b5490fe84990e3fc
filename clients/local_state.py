"""The state file of a local mesh (``meshserve up``): the processes it started, how to stop them.

Every tracked process is identified by its PID *and* its start time (``/proc/<pid>/stat`` field
22), so a PID reused by an unrelated process after a reboot or a crash is never signalled.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from meshserve.credentials import add_refused_secret_flag, read_token

__all__ = [
    "STATE_FILE",
    "MeshState",
    "TrackedProcess",
    "add_token_flags",
    "is_running",
    "load_state",
    "make_private_dir",
    "orchestrator_target",
    "process_start_ticks",
    "save_state",
    "stop_processes",
]

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


@dataclass(frozen=True)
class TrackedProcess:
    """One process started by ``meshserve up``."""

    role: str  # "consul" | "model" | "orchestrator"
    name: str  # unique within the mesh, e.g. "mlp-2"
    pid: int
    start_ticks: int  # /proc/<pid>/stat starttime; 0 when unknown
    address: str = ""  # host:port it serves (gRPC, or Consul's HTTP API)
    log_path: str = ""
    model: str = ""  # Consul service name for model replicas


@dataclass(frozen=True)
class MeshState:
    """Everything ``down`` and ``status`` need to find the mesh again."""

    consul_address: str
    admin_token: str = ""
    orchestrator_address: str = ""
    orchestrator_http: str = ""  # base URL of its HTTP/JSON ingress ("" when off)
    processes: tuple[TrackedProcess, ...] = ()
    plans: tuple[str, ...] = ()
    started_unix_s: float = field(default_factory=time.time)

    def with_process(self, process: TrackedProcess) -> MeshState:
        return replace(self, processes=(*self.processes, process))


def load_state(state_dir: Path) -> MeshState | None:
    """The mesh recorded in `state_dir`, or None when there is none."""
    path = state_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"state file {path} is unreadable ({exc}); expected JSON from `up`"
        ) from exc
    procs = tuple(TrackedProcess(**p) for p in raw.pop("processes", ()))
    plans = tuple(raw.pop("plans", ()))
    return MeshState(processes=procs, plans=plans, **raw)


def add_token_flags(parser: argparse.ArgumentParser) -> None:
    """``--token-file PATH`` for client commands (``--token VALUE`` is refused: argv is public)."""
    parser.add_argument(
        "--token-file", default="", metavar="PATH", help="admin token file ($MESHSERVE_ADMIN_TOKEN)"
    )
    add_refused_secret_flag(parser, "--token", "--token-file")


def orchestrator_target(address: str, token_file: str, state_dir: Path) -> tuple[str, str]:
    """(address, admin token) for client commands: flags or environment first
    (``--token-file``, $MESHSERVE_ORCHESTRATOR, $MESHSERVE_ADMIN_TOKEN), else the local mesh
    `meshserve up` started.

    The address is "" when none is known.
    """
    address = address or os.environ.get("MESHSERVE_ORCHESTRATOR", "")
    token = read_token(token_file)
    if not address:
        state = load_state(state_dir)
        if state is not None:
            address = state.orchestrator_address
            token = token or state.admin_token
    return address, token


def save_state(state_dir: Path, state: MeshState) -> None:
    """Write the state atomically (tmp file + rename), so a crash never leaves half a file."""
    make_private_dir(state_dir)
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)  # an older tmp file may have had other bits
        out.write(json.dumps(asdict(state), indent=2) + "\n")
    os.replace(tmp, path)


def make_private_dir(path: Path) -> None:
    """Create `path` (and parents) if needed and make it 0700: it holds the admin token."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def process_start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot; None when no such process (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # state: zombie or dead
        return None
    return int(fields[19])  # field 22 overall


def _reap(pid: int) -> None:
    # When the caller itself started the process (tests calling `up` in-process) reap the zombie.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def is_running(proc: TrackedProcess) -> bool:
    """True while the very process that was started (same PID and start time) is alive."""
    _reap(proc.pid)
    ticks = process_start_ticks(proc.pid)
    if ticks is None:
        return False
    return proc.start_ticks == 0 or ticks == proc.start_ticks


def _signal(proc: TrackedProcess, sig: int) -> None:
    if is_running(proc):
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(
    procs: Sequence[TrackedProcess], timeout_s: float, clock: Callable[[], float]
) -> list[TrackedProcess]:
    deadline = clock() + timeout_s
    alive = [p for p in procs if is_running(p)]
    while alive and clock() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if is_running(p)]
    return alive


def stop_processes(
    procs: Sequence[TrackedProcess],
    grace_s: float = 15.0,
    clock: Callable[[], float] = time.monotonic,
) -> list[TrackedProcess]:
    """SIGTERM each group (servers first, Consul last), SIGKILL what outlives `grace_s`.

    Returns the processes still alive afterwards (empty on success).
    """
    servers = [p for p in procs if p.role != "consul"]
    consul = [p for p in procs if p.role == "consul"]
    survivors: list[TrackedProcess] = []
    for group in (servers, consul):
        for proc in group:
            _signal(proc, signal.SIGTERM)
        stubborn = _wait_gone(group, grace_s, clock)
        for proc in stubborn:
            log.warning(
                "%s (pid %d) ignored SIGTERM for %.1fs; killing", proc.name, proc.pid, grace_s
            )
            _signal(proc, signal.SIGKILL)
        survivors += _wait_gone(stubborn, 5.0, clock)
    return survivors
