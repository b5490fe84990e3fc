"""Cost per request against a naive monolith, measured in one run on the same machine.

``python -m bench.bench_cost [--duration-s 3] [--concurrency 1 32] [--soak-s 0]``

Starts a Consul dev agent, one replica per model (scaler, logreg, mlp, forest; wide_mlp with
server-side batching 32 rows / 3 ms), one meshserve orchestrator with the pipeline, ensemble and
wide plans, the naive monolith (``bench.monolith``: the same models inline in one grpc.aio
process) and the bare grpc.aio echo. Every client request carries one 64-float row and is sent
from generated stubs. For each workload it reports throughput, p50/p99 and **server CPU per
request of the whole process tree** (meshserve: orchestrator + every replica; monolith: its one
process), and the ratios the performance targets are written in:
- meshserve unary Execute / monolith rows/s at the top concurrency (pipeline >= 0.75x,
  ensemble >= 0.6x, wide >= 0.9x), ExecuteStream pipeline / monolith (>= 1.0x);
- c=1 cost per model hop: (meshserve pipeline p50 - monolith pipeline p50) / 2 / echo p50
  (target <= 1.0x);
- RSS of the idle orchestrator and replicas, and after the load (``--soak-s`` adds a long
  pipeline load before the last reading, to show growth);
- with ``--orchestrator-workers 1 2``, the same workloads through ``orchestrator serve
  --workers 2`` (one port, SO_REUSEPORT) as a ratio to one orchestrator process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.bench_orchestrator import MODELS, PIPELINE_PLAN, WIDE_PLAN, echo_points
from bench.bench_orchestrator import orchestrator_points as execute_points
from bench.common import LoadResult, ServerProcess, print_table, process_rss_mib, write_results
from bench.echo import echo_process
from bench.monolith import monolith_process
from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig, free_port

ENSEMBLE_PLAN = PIPELINE_PLAN.parent / "ensemble.yaml"
WORKLOADS = {"pipeline": "digits-pipeline", "ensemble": "digits-ensemble", "wide": "bench-wide"}
# Per-model replica flags: the wide model batches on the server (32 rows or 3 ms).
REPLICA_FLAGS = {
    "scaler": [],
    "logreg": [],
    "mlp": [],
    "forest": [],
    "wide_mlp": ["--batch-max", "32", "--batch-wait-us", "3000"],
}
TARGETS = {"pipeline": 0.75, "ensemble": 0.6, "wide": 0.9}


@contextlib.contextmanager
def mesh_replicas(consul: str, logs: Path) -> Iterator[list[ServerProcess]]:
    """One replica per model, registered in Consul."""
    with contextlib.ExitStack() as stack:
        procs = []
        for model, flags in REPLICA_FLAGS.items():
            args = ["model", "serve", str(MODELS / f"{model}.onnx"), "--name", model,
                    "--version", "1", "--port", "0", "--consul", consul, "--threads", "1",
                    "--metrics-port", "-1", *flags]  # fmt: skip
            procs.append(stack.enter_context(ServerProcess(args, logs / f"{model}.log")))
        yield procs


def _per_request_cpu_ms(r: LoadResult) -> float:
    return r.server_cpu_s / r.requests * 1e3 if r.requests else float("nan")


def _row(r: LoadResult) -> dict[str, Any]:
    return {
        "mode": r.label, "conc": r.concurrency, "req/s": r.throughput_rps, "p50 ms": r.p50_ms,
        "p99 ms": r.p99_ms, "errors": r.errors, "server CPU ms/req": _per_request_cpu_ms(r),
        "client cores": r.client_cores,
    }  # fmt: skip


def _at(results: list[LoadResult], label: str, c: int) -> LoadResult | None:
    return next((r for r in results if r.label == label and r.concurrency == c), None)


def verdict(results: list[LoadResult], low: int, top: int) -> dict[str, Any]:
    """The ratios the performance issue's targets are written in."""
    out: dict[str, Any] = {}
    for name, target in TARGETS.items():
        mono, mesh = _at(results, f"monolith {name} Execute", top), None
        mesh = _at(results, f"meshserve {name} Execute", top)
        if mono and mesh:
            out[f"{name} unary / monolith req/s (c={top}, target >= {target})"] = (
                mesh.throughput_rps / mono.throughput_rps
            )
            out[f"{name} server CPU per request, meshserve / monolith (c={top})"] = (
                _per_request_cpu_ms(mesh) / _per_request_cpu_ms(mono)
            )
        stream = _at(results, f"meshserve {name} ExecuteStream", top)
        if mono and stream:
            out[f"{name} ExecuteStream / monolith req/s (c={top})"] = (
                stream.throughput_rps / mono.throughput_rps
            )
        for multi in sorted({r.label for r in results if r.label.startswith("meshserve x")}):
            one = _at(results, f"meshserve {name} Execute", top)
            if multi.endswith(f" {name} Execute") and one and (many := _at(results, multi, top)):
                out[f"{multi.removesuffix(' Execute')} / one orchestrator req/s (c={top})"] = (
                    many.throughput_rps / one.throughput_rps
                )
    echo = _at(results, "echo (bare grpc.aio)", low)
    mono = _at(results, "monolith pipeline Execute", low)
    mesh = _at(results, "meshserve pipeline Execute", low)
    if echo and mono and mesh:
        out[f"c={low} added p50 per model hop / echo p50 (target <= 1.0)"] = (
            (mesh.p50_ms - mono.p50_ms) / 2 / echo.p50_ms
        )
    return out


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _meshserve(
    consul: str,
    plans: Path,
    logs: Path,
    reps: list[ServerProcess],
    workers: int,
    args: argparse.Namespace,
) -> tuple[list[LoadResult], dict[str, dict[str, float]]]:
    """Every workload through one orchestrator (or a group of `workers`) over the replicas;
    RSS readings of the single-orchestrator run."""
    conc, top = args.concurrency, max(args.concurrency)
    metrics_port = free_port()
    orch_args = ["orchestrator", "serve", "--consul", consul, "--plans", str(plans),
                 "--no-learning", "--no-register", "--metrics-port", str(metrics_port),
                 "--workers", str(workers)]  # fmt: skip
    prefix = "meshserve" if workers == 1 else f"meshserve x{workers} workers"
    # One worker's metrics hold its own batches only: batch sizes are read for one worker.
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if workers == 1 else None
    results: list[LoadResult] = []
    rss: dict[str, dict[str, float]] = {}
    with ServerProcess(orch_args, logs / f"orchestrator-{workers}.log") as orch:
        orchestrators = {"orchestrator": orch.pid} | {
            f"orchestrator worker {i}": pid for i, pid in enumerate(_children(orch.pid))
        }
        procs = orchestrators | {f"replica {p.args[4]}": p.pid for p in reps}
        tree = list(procs.values())

        def run(name: str, label: str, concurrency: list[int], duration_s: float, stream: int,
                url: str | None) -> list[LoadResult]:  # fmt: skip
            point = execute_points(
                orch.address, WORKLOADS[name], label, concurrency, duration_s, tree,
                stream_concurrency=stream, metrics_url=url,
            )  # fmt: skip
            return asyncio.run(point)

        if workers == 1:
            rss["idle"] = {k: process_rss_mib(pid) for k, pid in procs.items()}
        for name in args.workloads:
            results += run(name, f"{prefix} {name}", conc, args.duration_s, top, metrics_url)
        if workers == 1:
            rss["after load"] = {k: process_rss_mib(pid) for k, pid in procs.items()}
            if args.soak_s > 0:
                started = time.monotonic()
                run("pipeline", "soak", [top], args.soak_s, 0, None)
                label = f"after {time.monotonic() - started:.0f} s soak"
                rss[label] = {k: process_rss_mib(pid) for k, pid in procs.items()}
    return results, rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--soak-s", type=float, default=0.0, help="extra pipeline load for RSS")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument(
        "--orchestrator-workers",
        type=int,
        nargs="+",
        default=[1],
        help="orchestrator process counts to measure (orchestrator serve --workers N)",
    )
    args = parser.parse_args(argv)
    conc, low = args.concurrency, min(args.concurrency)
    top = max(conc)
    results: list[LoadResult] = []
    rss: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        plans = logs / "plans"
        plans.mkdir()
        for src, text in (
            ("pipeline.yaml", PIPELINE_PLAN.read_text()),
            ("ensemble.yaml", ENSEMBLE_PLAN.read_text()),
            ("wide.yaml", WIDE_PLAN),
        ):
            (plans / src).write_text(text)
        with echo_process(logs / "echo.log") as echo:
            results += asyncio.run(echo_points(echo.address, conc, args.duration_s, echo.pid))
        with monolith_process(logs / "monolith.log") as mono:
            for name in args.workloads:
                results += asyncio.run(
                    execute_points(
                        mono.address,
                        WORKLOADS[name],
                        f"monolith {name}",
                        conc,
                        args.duration_s,
                        mono.pid,
                        stream_concurrency=0,
                        metrics_url=None,
                    )
                )
        agent = ConsulAgent(ConsulAgentConfig(log_path=str(logs / "consul.log"))).start()
        try:
            with mesh_replicas(agent.address, logs) as reps:
                for workers in args.orchestrator_workers:
                    points, seen = _meshserve(agent.address, plans, logs, reps, workers, args)
                    results += points
                    rss |= seen
        finally:
            agent.stop()

    print_table([_row(r) for r in results], ["mode", "conc", "req/s", "p50 ms", "p99 ms",
                "errors", "server CPU ms/req", "client cores"])  # fmt: skip
    print()
    print_table(
        [{"process": k, **{when: v[k] for when, v in rss.items()}} for k in rss.get("idle", {})],
        ["process", *rss],
    )
    print("(RSS in MiB)")
    out = verdict(results, low, top)
    for key, value in out.items():
        print(f"{key}: {value:.3f}")
    path = write_results(
        "bench_cost", {"settings": vars(args), "results": results, "rss_mib": rss, "verdict": out}
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
