"""Overload: how fast a replica at ~4x its capacity says RESOURCE_EXHAUSTED, and what it still
serves.

``python -m bench.bench_overload [--factor 4] [--duration-s 3] [--clients 2] [--rows 8]
[--limit 32] [--rounds 2] [--modes ...]``

One replica (a real ``meshserve model serve`` process, loopback, wide MLP, batching on; each
request carries ``--rows`` rows, so that the model, not gRPC, saturates first). First its
capacity: closed-loop Infer throughput at a few concurrencies, the best one is the knee. Then
an open-loop load of ``factor`` x that rate from ``--clients`` processes (each its own event
loop and channel), bounded in count (rate x duration) and time, against each server mode:

- ``admission``: servicer admission control (``--max-in-flight-requests LIMIT``), refusals with
  ``grpc-retry-pushback-ms`` before any decoding.
- ``grpc limiter``: admission off, ``--max-concurrent-rpcs LIMIT`` (grpc's own limiter,
  checked before the handler runs; no pushback trailer).
- ``queue only``: admission off, only the batcher's queue bound (``queue_max``), as before.
- ``admission+limiter``: admission, and grpc's limiter at twice its limit behind it.
- ``admission+pending``: admission, and ``--max-pending-rpcs PENDING`` (calls waiting in the C
  core for the event loop are ended by the C core: clients see CANCELLED).

Reported per mode: accepted requests/s (until the last reply), rejections, rejection latency
p50/p99, accepted latency p50/p99, other errors, and the client lag p99 (how late the open-loop
clients sent: when it is large the clients, not the server, were saturated). Table on stdout,
JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.common import (
    ServerProcess,
    closed_loop,
    percentile,
    print_table,
    process_cpu_s,
    write_results,
)
from meshserve import tensors
from meshserve.grpc_errors import RETRY_PUSHBACK_KEY
from meshserve.v1 import model_pb2, model_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL = REPO_ROOT / "examples" / "models" / "wide_mlp.onnx"


ROWS = [1]  # rows per request (set from --rows before anything runs)


def _requests(seed: int, count: int = 64) -> list[model_pb2.InferRequest]:
    rng = np.random.default_rng(seed)
    shape = (ROWS[0], 64)
    return [
        model_pb2.InferRequest(
            inputs={"input": tensors.from_numpy(rng.standard_normal(shape).astype(np.float32))}
        )
        for _ in range(count)
    ]


async def capacity(address: str, concurrencies: list[int], duration_s: float) -> float:
    """Best closed-loop requests/s over `concurrencies` (the knee of the curve)."""
    requests = _requests(0)
    best = 0.0
    async with grpc.aio.insecure_channel(address) as channel:
        stub = model_pb2_grpc.ModelServiceStub(channel)
        await channel.channel_ready()
        counter = [0]

        async def call(worker: int) -> int:
            counter[0] += 1
            await stub.Infer(requests[counter[0] % len(requests)], timeout=30)
            return 1

        for concurrency in concurrencies:
            point = await closed_loop(
                "capacity", call, concurrency=concurrency, duration_s=duration_s
            )
            print(f"  capacity c={concurrency}: {point.throughput_rps:,.0f} req/s "
                  f"(p50 {point.p50_ms:.1f} ms, errors {point.errors})")  # fmt: skip
            if point.errors == 0:
                best = max(best, point.throughput_rps)
    return best


async def _open_loop(address: str, rate: float, count: int, seed: int) -> dict[str, Any]:
    """Send `count` Infer calls at `rate`/s without waiting for replies; record each outcome."""
    requests = _requests(seed)
    ok: list[float] = []
    rejected: list[float] = []
    other: dict[str, int] = {}
    lag: list[float] = []
    pushback = [0]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = model_pb2_grpc.ModelServiceStub(channel)
        await channel.channel_ready()

        async def one(index: int) -> None:
            started = time.monotonic()
            try:
                await stub.Infer(requests[index % len(requests)], timeout=10)
            except grpc.aio.AioRpcError as exc:
                elapsed = time.monotonic() - started
                if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED:
                    rejected.append(elapsed)
                    trailers = exc.trailing_metadata() or ()
                    pushback[0] += any(k == RETRY_PUSHBACK_KEY for k, _ in trailers)
                else:
                    other[exc.code().name] = other.get(exc.code().name, 0) + 1
                return
            ok.append(time.monotonic() - started)

        loop = asyncio.get_running_loop()
        tasks = []
        t0 = time.monotonic()
        sent = 0
        while sent < count:
            now = time.monotonic()
            due = min(count, int((now - t0) * rate) + 1)
            while sent < due:
                lag.append(now - (t0 + sent / rate))
                tasks.append(loop.create_task(one(sent)))
                sent += 1
            await asyncio.sleep(max(0.0, t0 + sent / rate - time.monotonic()))
        await asyncio.gather(*tasks)
        wall_s = time.monotonic() - t0  # until the last reply
    return {"ok": ok, "rejected": rejected, "other": other, "lag": lag, "pushback": pushback[0],
            "wall_s": wall_s}  # fmt: skip


def _drive(args: tuple[str, float, int, int, int]) -> dict[str, Any]:
    ROWS[0] = args[4]
    return asyncio.run(_open_loop(*args[:4]))


def overload(address: str, rate: float, duration_s: float, clients: int) -> dict[str, Any]:
    """`rate` req/s for `duration_s` from `clients` processes; merged outcome lists."""
    count = int(rate * duration_s / clients)
    jobs = [(address, rate / clients, count, seed, ROWS[0]) for seed in range(clients)]
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        parts = pool.map(_drive, jobs)
    merged: dict[str, Any] = {"ok": [], "rejected": [], "lag": [], "other": {}, "pushback": 0}
    for part in parts:
        for key in ("ok", "rejected", "lag"):
            merged[key].extend(part[key])
        for code, n in part["other"].items():
            merged["other"][code] = merged["other"].get(code, 0) + n
        merged["pushback"] += part["pushback"]
    merged["wall_s"] = max(part["wall_s"] for part in parts)
    return merged


def summarise(mode: str, rate: float, outcome: dict[str, Any]) -> dict[str, Any]:
    ok, rejected = outcome["ok"], outcome["rejected"]
    return {
        "mode": mode,
        "offered/s": rate,
        "accepted/s": len(ok) / outcome["wall_s"],
        "rejected": len(rejected),
        "rej p50 ms": percentile(rejected, 50) * 1e3,
        "rej p99 ms": percentile(rejected, 99) * 1e3,
        "ok p50 ms": percentile(ok, 50) * 1e3,
        "ok p99 ms": percentile(ok, 99) * 1e3,
        "pushback": outcome["pushback"],
        "other errors": sum(outcome["other"].values()),
        "other codes": ",".join(sorted(outcome["other"])),
        "client lag p99 ms": percentile(outcome["lag"], 99) * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=float, default=4.0, help="offered load / capacity")
    parser.add_argument("--duration-s", type=float, default=3.0, help="open-loop duration")
    parser.add_argument("--capacity-s", type=float, default=2.0, help="per capacity point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--rows", type=int, default=8, help="rows per request")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--clients", type=int, default=2, help="open-loop client processes")
    parser.add_argument("--limit", type=int, default=32, help="in-flight requests admitted")
    parser.add_argument("--pending", type=int, default=64, help="--max-pending-rpcs")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["admission", "admission+limiter", "grpc limiter", "queue only"],
        choices=["admission", "admission+limiter", "grpc limiter", "queue only",
                 "admission+pending"],
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not MODEL.exists():
        print(f"{MODEL} missing: run examples/build_models.py first", file=sys.stderr)
        return 2
    ROWS[0] = args.rows
    limit = str(args.limit)
    pending = str(args.pending)
    flags = {
        "admission": ["--max-in-flight-requests", limit],
        "grpc limiter": ["--max-in-flight-requests", "0", "--max-concurrent-rpcs", limit],
        "queue only": ["--max-in-flight-requests", "0"],
        "admission+pending": ["--max-in-flight-requests", limit, "--max-pending-rpcs", pending],
        "admission+limiter": [
            "--max-in-flight-requests",
            limit,
            "--max-concurrent-rpcs",
            str(2 * args.limit),
        ],
    }
    base = ["model", "serve", str(MODEL), "--name", "bench-overload", "--no-register",
            "--metrics-port", "-1", "--batch-max", str(max(32, args.rows))]  # fmt: skip
    rounds: list[list[dict[str, Any]]] = []
    rate = cap = 0.0
    # Rounds interleave the modes, so a burst of load from other processes hits one round of
    # each instead of one whole mode; the summary is each mode's round with the median
    # rejection p99 (every round is printed and in the JSON).
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            rows: list[dict[str, Any]] = []
            for mode in args.modes:
                log = Path(tmp) / f"{mode.replace(' ', '_')}-{index}.log"
                with ServerProcess([*base, *flags[mode]], log) as server:
                    if not rate:
                        cap = asyncio.run(
                            capacity(server.address, args.concurrency, args.capacity_s)
                        )
                        rate = cap * args.factor
                        print(f"capacity {cap:,.0f} req/s -> offered {rate:,.0f} req/s")
                    cpu0 = process_cpu_s(server.pid)
                    outcome = overload(server.address, rate, args.duration_s, args.clients)
                    row = {"round": index, **summarise(mode, rate, outcome)}
                    row["server cores"] = (process_cpu_s(server.pid) - cpu0) / outcome["wall_s"]
                    rows.append(row)
            print(f"round {index} (load avg {os.getloadavg()[0]:.2f}):")
            print_table(rows, list(rows[0]))
            rounds.append(rows)
    summary = []
    for i in range(len(args.modes)):
        ordered = sorted((r[i] for r in rounds), key=lambda row: row["rej p99 ms"])
        summary.append(ordered[len(ordered) // 2])
    print(f"median of {args.rounds} rounds (capacity {cap:,.0f} req/s, offered {rate:,.0f}):")
    print_table(summary, list(summary[0]))
    path = write_results("bench_overload", {
        "load_avg_1m": os.getloadavg()[0], "capacity_rps": cap, "offered_rps": rate,
        "factor": args.factor, "rows_per_request": args.rows, "limit": args.limit,
        "clients": args.clients, "summary": summary, "rounds": rounds,
        "target": {"rejection_p99_ms": 10.0},
    })  # fmt: skip
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
