"""Model service throughput/latency: the wide MLP over gRPC, batching on vs off, next to the
in-process onnxruntime floor measured in the same run.

``python -m bench.bench_modelsvc [--duration-s 3] [--concurrency 1 8 32] [--rounds 3]``

Each client request carries one row (64 float32). "rows/s" is the comparable number: for the
in-process baselines it is rows pushed through ``session.run`` per second, batched (32 rows per
call) and unbatched (1 row per call), with the same thread settings as the server: ``--threads``
intra-op threads (default: what the server picks by itself on this machine,
`auto_intra_op_threads`) and one session call at a time (``--max-concurrent-batches 1``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.common import (
    LoadResult,
    ServerProcess,
    closed_loop,
    print_table,
    write_results,
)
from meshserve import tensors
from meshserve.modelsvc.config import auto_intra_op_threads
from meshserve.v1 import model_pb2, model_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL = REPO_ROOT / "examples" / "models" / "wide_mlp.onnx"
BATCH_ROWS = 32


def in_process(threads: int, rows: int, duration_s: float) -> dict[str, Any]:
    """Rows/s of session.run on `rows`-row batches in this process (the floor)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((rows, 64)).astype(np.float32)
    for _ in range(20):
        session.run(None, {"input": x})
    calls = 0
    latencies = []
    until = time.monotonic() + duration_s
    started = time.monotonic()
    while time.monotonic() < until:
        t0 = time.monotonic()
        session.run(None, {"input": x})
        latencies.append(time.monotonic() - t0)
        calls += 1
    wall = time.monotonic() - started
    return {
        "label": f"in-process batch={rows}",
        "intra_op_threads": threads,
        "rows_per_s": calls * rows / wall,
        "p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "p99_ms": float(np.percentile(latencies, 99) * 1e3),
    }


async def grpc_point(address: str, label: str, concurrency: int, duration_s: float, pid: int):
    rng = np.random.default_rng(concurrency)
    # Pre-encoded requests (one row each): the client's per-call cost is only gRPC.
    requests = [
        model_pb2.InferRequest(
            inputs={"input": tensors.from_numpy(rng.standard_normal((1, 64)).astype(np.float32))}
        )
        for _ in range(64)
    ]
    batch_sizes: list[int] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = model_pb2_grpc.ModelServiceStub(channel)
        await channel.channel_ready()
        counter = [0]

        async def call(worker: int) -> int:
            counter[0] += 1
            reply = await stub.Infer(requests[counter[0] % len(requests)], timeout=30)
            batch_sizes.append(reply.stats.batch_size)
            return 1

        result = await closed_loop(
            label, call, concurrency=concurrency, duration_s=duration_s, server_pid=pid
        )
    result.extra["mean_batch_size"] = float(np.mean(batch_sizes)) if batch_sizes else 0.0
    return result


def run_mode(
    label: str, flags: list[str], concurrencies: list[int], duration_s: float, logs: Path
) -> list[LoadResult]:
    args = ["model", "serve", str(MODEL), "--name", "bench-wide", "--no-register",
            "--metrics-port", "-1", *flags]  # fmt: skip
    with ServerProcess(args, logs / f"{label}.log") as server:
        return [
            asyncio.run(grpc_point(server.address, label, c, duration_s, server.pid))
            for c in concurrencies
        ]


def _median(points: list[Any]) -> Any:
    """The point with the median rows/s (a LoadResult or an in-process dict)."""

    def rate(point: Any) -> float:
        return float(point["rows_per_s"] if isinstance(point, dict) else point.rows_per_s)

    return sorted(points, key=rate)[len(points) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = auto)")
    parser.add_argument("--batch-wait-us", type=int, default=2000)
    parser.add_argument("--max-concurrent-batches", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    args = parser.parse_args(argv)
    if args.threads <= 0:
        args.threads = auto_intra_op_threads(
            len(os.sched_getaffinity(0)), args.max_concurrent_batches
        )
    if not MODEL.exists():
        print(f"{MODEL} missing: run examples/build_models.py first", file=sys.stderr)
        return 2

    common = ["--threads", str(args.threads), "--max-concurrent-batches",
              str(args.max_concurrent_batches)]  # fmt: skip
    # Rounds interleave every measurement (on, off, both floors), so a burst of load from other
    # processes hits one round of each instead of one whole mode; each point reports the round
    # with the median rows/s (all rounds are in the JSON).
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        for index in range(args.rounds):
            on_flags = [*common, "--batch-max", str(BATCH_ROWS),
                        "--batch-wait-us", str(args.batch_wait_us)]  # fmt: skip
            on = run_mode("grpc batching on", on_flags, args.concurrency, args.duration_s, logs)
            off = run_mode(
                "grpc batching off", [*common, "--batch-max", "1"], args.concurrency,
                args.duration_s, logs,
            )  # fmt: skip
            rounds.append({
                "round": index, "load_avg_1m": os.getloadavg()[0], "on": on, "off": off,
                "floor_batched": in_process(args.threads, BATCH_ROWS, args.duration_s),
                "floor_single": in_process(args.threads, 1, args.duration_s),
            })  # fmt: skip
    on = [_median([r["on"][i] for r in rounds]) for i in range(len(args.concurrency))]
    off = [_median([r["off"][i] for r in rounds]) for i in range(len(args.concurrency))]
    floor_batched = _median([r["floor_batched"] for r in rounds])
    floor_single = _median([r["floor_single"] for r in rounds])

    rows: list[dict[str, Any]] = []
    for r in [*on, *off]:
        rows.append({
            "mode": r.label, "conc": r.concurrency, "rows/s": r.rows_per_s, "p50 ms": r.p50_ms,
            "p99 ms": r.p99_ms, "mean batch": r.extra["mean_batch_size"], "errors": r.errors,
            "client cores": r.client_cores, "server cores": r.server_cpu_s / r.wall_s,
        })  # fmt: skip
    for f in (floor_batched, floor_single):
        rows.append({"mode": f["label"], "conc": "-", "rows/s": f["rows_per_s"],
                     "p50 ms": f["p50_ms"], "p99 ms": f["p99_ms"]})  # fmt: skip
    print_table(rows, ["mode", "conc", "rows/s", "p50 ms", "p99 ms", "mean batch", "errors",
                       "client cores", "server cores"])  # fmt: skip

    ratios = []
    for r_on, r_off in zip(on, off, strict=True):
        ratios.append({
            "concurrency": r_on.concurrency,
            "on_over_off": r_on.rows_per_s / r_off.rows_per_s,
            "on_share_of_in_process_batched": r_on.rows_per_s / floor_batched["rows_per_s"],
        })  # fmt: skip
        print(
            f"c={r_on.concurrency}: on/off {ratios[-1]['on_over_off']:.2f}x, "
            f"on = {ratios[-1]['on_share_of_in_process_batched']:.0%} of in-process batched"
        )
    top = max(args.concurrency)
    on_top = next(r for r in on if r.concurrency == top)
    off_top = next(r for r in off if r.concurrency == top)
    speedup = on_top.rows_per_s / off_top.rows_per_s
    floor_share = on_top.rows_per_s / floor_batched["rows_per_s"]
    verdict = {
        "concurrency": top,
        "batching_speedup": speedup,
        "batching_speedup_target": 4.0,
        "share_of_in_process_batched": floor_share,
        "share_target": 0.45,
        "met": speedup >= 4.0 and floor_share >= 0.45,
    }
    print(
        f"concurrency {top}: batching on/off = {speedup:.2f}x (target >= 4x); "
        f"batching on = {floor_share:.0%} of in-process batched (target >= 45%)"
    )
    path = write_results(
        "bench_modelsvc",
        {
            "settings": vars(args),
            "grpc": [*on, *off],
            "in_process": [floor_batched, floor_single],
            "ratios": ratios,
            "rounds": rounds,
            "verdict": verdict,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
