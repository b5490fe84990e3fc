"""Module-scoped process groups for the orchestrator integration tests (stopped by PID)."""

from __future__ import annotations

from pathlib import Path

from tests.procs import ChildProcess, unique_kv_prefix

TOKEN = "test-admin-token"
# The python allow-list of orchestrators whose tests apply python plans over Admin.
PYTHON_MODULES = (
    "--python-module", "examples.programmatic", "--python-module", "tests.integration.python_plans",
)  # fmt: skip


class Procs:
    """Starts meshserve processes into one log directory and stops every one of them.

    Its orchestrators share one KV namespace (`kv_prefix`) that no other group uses. As a
    context manager it stops (and checks) everything it started on the way out:
    ``with Procs(tmp_path) as procs: ...``.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[ChildProcess] = []
        self.kv_prefix = unique_kv_prefix(log_dir.name)

    def spawn(
        self, *args: str, env: dict[str, str] | None = None, ready_timeout_s: float = 60.0
    ) -> ChildProcess:
        child = ChildProcess(list(args), self.log_dir / f"proc-{len(self.started)}.log", env or {})
        self.started.append(child)
        return child.start(ready_timeout_s)

    def model(
        self, models_dir: Path, name: str, consul_addr: str, version: str = "1"
    ) -> ChildProcess:
        return self.spawn(
            "model", "serve", str(models_dir / f"{name}.onnx"), "--name", name,
            "--version", version, "--consul", consul_addr, "--threads", "1",
        )  # fmt: skip

    def orchestrator(self, consul_addr: str, *extra: str) -> ChildProcess:
        return self.spawn(
            "orchestrator", "serve", "--consul", consul_addr, "--kv-prefix", self.kv_prefix,
            *extra, env={"MESHSERVE_ADMIN_TOKEN": TOKEN},
        )  # fmt: skip

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        for child in reversed(self.started):
            child.stop(timeout_s=10)
        leaked = [c.args for c in self.started if c.process and c.process.poll() is None]
        assert not leaked, f"processes still running after teardown: {leaked}"
