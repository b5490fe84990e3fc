"""Where the CPU of one request goes: py-spy on every process of the mesh under load.

``python -m bench.profile_cost [--workload pipeline|ensemble|wide] [--concurrency 32]
[--duration-s 10] [--native] [--stream]``

Starts the same mesh as ``bench.bench_cost`` (Consul, one replica per model, one orchestrator),
drives the workload with unary Execute (or ExecuteStream with ``--stream``) from generated
stubs, and while the load runs samples every orchestrator and replica process with
``py-spy record --format raw`` (needs root or ptrace rights; ``pip install py-spy``). Each
on-CPU sample is put in the stage of the innermost meshserve frame on its stack (the first
frame, from the leaf up, whose file is meshserve's own; a sample with none is the gRPC/asyncio
runtime of that process), and each process's measured CPU per request (/proc) is split in
those proportions. The table is the per-request breakdown the performance issue asks for;
the raw stacks stay in bench/results/ for a flame graph (``flamegraph.pl``, speedscope).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.bench_cost import ENSEMBLE_PLAN, WORKLOADS, mesh_replicas
from bench.bench_orchestrator import PIPELINE_PLAN, WIDE_PLAN
from bench.bench_orchestrator import orchestrator_points as execute_points
from bench.common import RESULTS_DIR, LoadResult, ServerProcess, print_table, process_cpu_s
from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig

ROOT = Path(__file__).resolve().parent.parent
# (stage, pattern on a repository-relative file path), first match wins.
STAGES: tuple[tuple[str, str], ...] = (
    ("ingress: servicer + decode/encode", r"^orchestrator/(servicers|converters)\.py"),
    ("ingress: interceptors (auth, tracing)", r"^(orchestrator/auth|meshserve/telemetry/)"),
    ("engine + plan", r"^orchestrator/(engine|compiled|store|traffic|plan_health)\.py"),
    ("steps", r"^orchestrator/steps/"),
    ("micro-batcher (client side)", r"^orchestrator/datapath/batching\.py"),
    (
        "router + policy + replica",
        r"^orchestrator/datapath/(mesh|router|policy|replica|latency|"
        r"hedge|attempt|budget|ejection)\.py",
    ),
    ("transport (stream/unary)", r"^orchestrator/datapath/(transport|stream|faults)\.py"),
    (
        "replica servicer + admission + decode",
        r"^modelsvc/(servicers|admission|converters|"
        r"validation)\.py",
    ),
    ("replica core + handler", r"^modelsvc/(core|handler)\.py"),
    ("replica batcher", r"^modelsvc/(batcher|batch_queue|batch_exec)\.py"),
    ("session (onnxruntime)", r"^modelsvc/backend\.py"),
    ("kernel: tensors, rows, streams, errors", r"^meshserve/"),
    ("metrics", r"/metrics\.py$"),
)
# Process entry frames (argument parsing, the serve loop): what runs under them is the runtime.
ENTRY = re.compile(r"^(clients/cli|orchestrator/cli|modelsvc/cli|meshserve/serving)\.py$")
OWN = re.compile(r"\((/[^:]*?/(?:orchestrator|modelsvc|meshserve|registry|clients)/[^:]*):\d+\)")


def stage_of(stack: str) -> str:
    """The stage of one raw py-spy stack (frames root;...;leaf)."""
    for frame in reversed(stack.split(";")):
        match = OWN.search(frame)
        if not match:
            continue
        rel = _relative(match.group(1))
        if rel is None or ENTRY.match(rel):
            continue
        for stage, pattern in STAGES:
            if re.search(pattern, rel):
                return stage
        return f"other meshserve ({rel.split('/')[0]})"
    return "gRPC / asyncio runtime (no meshserve frame)"


def _relative(path: str) -> str | None:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return None


def stages(raw: str) -> collections.Counter[str]:
    """Samples per stage in a py-spy raw file (``stack count`` per line)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[stage_of(stack)] += int(count)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="pipeline", choices=WORKLOADS)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    parser.add_argument("--stream", action="store_true", help="ExecuteStream load, not unary")
    parser.add_argument("--rate", type=int, default=250, help="samples per second per process")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    out_dir = RESULTS_DIR / f"profile-{args.workload}-{'stream' if args.stream else 'unary'}"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        plans = logs / "plans"
        plans.mkdir()
        (plans / "pipeline.yaml").write_text(PIPELINE_PLAN.read_text())
        (plans / "ensemble.yaml").write_text(ENSEMBLE_PLAN.read_text())
        (plans / "wide.yaml").write_text(WIDE_PLAN)
        agent = ConsulAgent(ConsulAgentConfig(log_path=str(logs / "consul.log"))).start()
        try:
            with mesh_replicas(agent.address, logs) as reps:
                orch_args = ["orchestrator", "serve", "--consul", agent.address, "--plans",
                             str(plans), "--no-learning", "--no-register"]  # fmt: skip
                with ServerProcess(orch_args, logs / "orchestrator.log") as orch:
                    procs = {"orchestrator": orch.pid} | {p.args[4]: p.pid for p in reps}
                    result, cpu, raws = _profiled_load(args, spy, orch.address, procs, out_dir)
        finally:
            agent.stop()
    rows = []
    # The tree's CPU per request over the measured window, split by each process's share of
    # the CPU it used while the spies ran.
    total_ms = result.server_cpu_s / result.requests * 1e3 if result.requests else 0.0
    spent = sum(cpu.values()) or 1.0
    for name, raw in raws.items():
        counts = stages(raw)
        samples = sum(counts.values()) or 1
        per_request_ms = total_ms * cpu[name] / spent
        for stage, n in counts.most_common():
            share = n / samples
            if share >= 0.005:
                rows.append({"process": name, "stage": stage, "share": 100 * share,
                             "CPU us/req": 1e3 * per_request_ms * share})  # fmt: skip
    print(f"{result.label} c={result.concurrency}: {result.throughput_rps:,.0f} req/s, "
          f"p50 {result.p50_ms:.2f} ms, server CPU {total_ms:.3f} ms/req")  # fmt: skip
    print_table(rows, ["process", "stage", "share", "CPU us/req"])
    print(f"raw stacks: {out_dir}")
    return 0


def _profiled_load(
    args: argparse.Namespace, spy: str, address: str, procs: dict[str, int], out_dir: Path
) -> tuple[LoadResult, dict[str, float], dict[str, str]]:
    """Run the load; py-spy every process during its middle `duration_s`."""
    flags = ["--format", "raw", "--rate", str(args.rate), "--full-filenames"]
    # py-spy reads native stacks only from a paused process; Python-only sampling need not pause.
    flags.append("--native" if args.native else "--nonblocking")
    cpu0: dict[str, float] = {}
    spies: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start_spies() -> None:
        for name, pid in procs.items():
            path = out_dir / f"{name}.txt"
            cmd = [spy, "record", "-p", str(pid), "-d", str(int(args.duration_s)), "-o", str(path),
                   *flags]  # fmt: skip
            path.unlink(missing_ok=True)
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            spies.append((name, proc, path))
            cpu0[name] = process_cpu_s(pid)

    # The load point warms up first (ORCH_WARMUP_S); spies start with the measured window.
    timer = threading.Timer(2.0, start_spies)
    timer.start()
    stream = args.concurrency if args.stream else 0
    conc = [] if args.stream else [args.concurrency]
    results = asyncio.run(
        execute_points(
            address,
            WORKLOADS[args.workload],
            f"meshserve {args.workload}",
            conc,
            args.duration_s + 1.0,
            list(procs.values()),
            stream_concurrency=stream,
            metrics_url=None,
        )
    )
    cpu = {name: process_cpu_s(pid) - cpu0.get(name, 0.0) for name, pid in procs.items()}
    raws = {}
    for name, proc, path in spies:
        if proc.wait(60) != 0 or not path.exists():
            raise RuntimeError(f"py-spy on {name} failed (exit {proc.returncode}); run as root")
        raws[name] = path.read_text()
    return results[-1], cpu, raws


if __name__ == "__main__":
    sys.exit(main())
