"""Orchestrator data path: bare gRPC echo, in-process floor, MeshCaller direct and the
orchestrator's Execute/ExecuteStream, measured in one run on the same machine.

``python -m bench.bench_orchestrator [--duration-s 3] [--concurrency 1 8 32] [--replicas 1]``

Starts its own Consul dev agent, model replicas (scaler, mlp, wide_mlp) and orchestrators
(client batching on, then off). Tracing follows the environment: ``MESHSERVE_TRACING=off``
turns it off in every server; unset, the orchestrator keeps its trace buffer and records spans.
Every client request carries one row (64 float32). Ratios:
- hop overhead: MeshCaller p50 at concurrency 1 / bare echo p50, and the orchestrator's
  (pipeline p50 - echo p50) / 2 model hops / echo p50 (target < 2x);
- batching speedup: pipeline rows/s with client batching on / off at the top concurrency
  (target >= 2.5x), with unary Execute load and with ExecuteStream load (one bidi stream, items
  multiplexed by id);
- wide_mlp plan rows/s / in-process batched session.run rows/s (target >= 40%).
The "batch rows" column is the mean rows per micro-batch the caller sent in that point (for the
orchestrator, read from its Prometheus /metrics before and after the point).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import urllib.request
from collections.abc import Awaitable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.bench_modelsvc import in_process
from bench.common import LoadResult, ServerProcess, closed_loop, print_table, write_results
from bench.echo import echo_client, echo_process
from meshserve import tensors
from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig, free_port
from meshserve.orchestrator.datapath import DataPathConfig, MeshCaller
from meshserve.registry.config import ConsulConfig
from meshserve.v1 import orchestrator_pb2, orchestrator_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS = REPO_ROOT / "examples" / "models"
PIPELINE_PLAN = REPO_ROOT / "examples" / "plans" / "pipeline.yaml"
WIDE_PLAN = """\
name: bench-wide
description: one wide_mlp step (batching benchmark)
inputs:
  - {name: input, dtype: float32, shape: [-1, 64]}
steps:
  - name: wide
    model: wide_mlp
    inputs: {input: input.input}
outputs:
  probabilities: wide.probabilities
"""
FLOOR_BATCH_ROWS = 32
# A freshly started orchestrator settles (imports, first calls, Consul watches) for about a
# second; every orchestrator point warms up this long at its own concurrency first.
ORCH_WARMUP_S = 1.5


def _rows(seed: int, n: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((1, 64), dtype=np.float32) * 16 for _ in range(n)]


async def echo_points(address: str, concurrency: list[int], duration_s: float, pid: int):
    payload = _rows(0)[0].tobytes()  # the same 256 bytes a one-row request carries
    out = []
    async with grpc.aio.insecure_channel(address) as channel:
        await channel.channel_ready()
        echo = echo_client(channel)

        async def call(worker: int) -> int:
            await echo(payload, timeout=30)
            return 1

        for c in concurrency:
            out.append(
                await closed_loop(
                    "echo (bare grpc.aio)",
                    call,
                    concurrency=c,
                    duration_s=duration_s,
                    server_pid=pid,
                )
            )
    return out


async def mesh_points(
    consul: str, model: str, label: str, config: DataPathConfig, concurrency: list[int],
    duration_s: float,
) -> list[LoadResult]:  # fmt: skip
    caller = MeshCaller(config, ConsulConfig(address=consul))
    xs = _rows(1)
    counter = itertools.count()
    out = []
    try:

        async def call(worker: int) -> int:
            await caller.infer(model, {"input": xs[next(counter) % len(xs)]}, timeout_s=30)
            return 1

        await _until_ok(call)
        for c in concurrency:
            before = caller.counters()
            result = await closed_loop(label, call, concurrency=c, duration_s=duration_s)
            after = caller.counters()
            result.extra["attempts"] = after.attempts_total - before.attempts_total
            result.extra["mean_batch_rows"] = after.batch_sizes.get(model, 0.0)
            out.append(result)
    finally:
        await caller.close()
    return out


def _batch_totals(metrics_url: str) -> tuple[float, float]:
    """(rows, batches) of every client-side micro-batch the orchestrator sent so far."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    rows = batches = 0.0
    for line in text.splitlines():
        if line.startswith("meshserve_datapath_batch_rows_sum{"):
            rows += float(line.rsplit(" ", 1)[1])
        elif line.startswith("meshserve_datapath_batch_rows_count{"):
            batches += float(line.rsplit(" ", 1)[1])
    return rows, batches


async def _with_batch_rows(metrics_url: str | None, point: Awaitable[LoadResult]) -> LoadResult:
    """Run a load point; record the mean rows per micro-batch the orchestrator sent in it."""
    if metrics_url is None:
        return await point
    rows0, batches0 = _batch_totals(metrics_url)
    result = await point
    rows1, batches1 = _batch_totals(metrics_url)
    if batches1 > batches0:
        result.extra["mean_batch_rows"] = (rows1 - rows0) / (batches1 - batches0)
    return result


async def orchestrator_points(
    address: str, plan: str, label: str, concurrency: list[int], duration_s: float,
    pid: int | Sequence[int], stream_concurrency: int, metrics_url: str | None,
) -> list[LoadResult]:  # fmt: skip
    requests = [
        orchestrator_pb2.ExecuteRequest(plan=plan, inputs={"input": tensors.from_numpy(x)})
        for x in _rows(2)
    ]
    counter = itertools.count()
    out = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        await channel.channel_ready()

        async def call(worker: int) -> int:
            reply = await stub.Execute(requests[next(counter) % len(requests)], timeout=30)
            if reply.HasField("status") and reply.status.code != 0:
                raise RuntimeError(reply.status.message)
            return 1

        await _until_ok(call)
        for c in concurrency:
            point = closed_loop(
                f"{label} Execute", call, concurrency=c, duration_s=duration_s, server_pid=pid,
                warmup_s=ORCH_WARMUP_S,
            )  # fmt: skip
            out.append(await _with_batch_rows(metrics_url, point))
        if stream_concurrency:
            point = _stream_point(stub, requests, label, stream_concurrency, duration_s, pid)
            out.append(await _with_batch_rows(metrics_url, point))
    return out


async def _stream_point(
    stub: orchestrator_pb2_grpc.OrchestratorStub,
    requests: list[orchestrator_pb2.ExecuteRequest],
    label: str,
    concurrency: int,
    duration_s: float,
    pid: int | Sequence[int],
) -> LoadResult:
    """Closed loop over one ExecuteStream, requests multiplexed by id."""
    call = stub.ExecuteStream()
    pending: dict[str, asyncio.Future[orchestrator_pb2.ExecuteResponse]] = {}
    ids = itertools.count()

    async def reader() -> None:
        while True:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                return
            fut = pending.pop(resp.id, None)
            if fut is not None:
                fut.set_result(resp)

    read_task = asyncio.create_task(reader())
    lock = asyncio.Lock()

    async def one(worker: int) -> int:
        rid = str(next(ids))
        req = orchestrator_pb2.ExecuteRequest()
        req.CopyFrom(requests[int(rid) % len(requests)])
        req.id = rid
        fut = asyncio.get_running_loop().create_future()
        pending[rid] = fut
        async with lock:
            await call.write(req)
        resp = await asyncio.wait_for(fut, 30)
        if resp.HasField("status") and resp.status.code != 0:
            raise RuntimeError(resp.status.message)
        return 1

    try:
        return await closed_loop(
            f"{label} ExecuteStream", one, concurrency=concurrency, duration_s=duration_s,
            server_pid=pid, warmup_s=ORCH_WARMUP_S,
        )  # fmt: skip
    finally:
        await call.done_writing()
        read_task.cancel()
        with contextlib.suppress(BaseException):
            await read_task


async def _until_ok(call: Any, timeout_s: float = 20.0) -> None:
    """Call until one call succeeds (replicas pass their first Consul health check)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            await call(0)
            return
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


@contextlib.contextmanager
def replicas(consul: str, n: int, logs: Path, server_flags: list[str]) -> Iterator[list[Any]]:
    with contextlib.ExitStack() as stack:
        procs = []
        for model in ("scaler", "mlp", "wide_mlp"):
            for i in range(n):
                args = ["model", "serve", str(MODELS / f"{model}.onnx"), "--name", model,
                        "--version", "1", "--port", "0", "--consul", consul,
                        "--metrics-port", "-1", *server_flags]  # fmt: skip
                procs.append(stack.enter_context(ServerProcess(args, logs / f"{model}-{i}.log")))
        yield procs


def _row(r: LoadResult) -> dict[str, Any]:
    return {
        "mode": r.label, "conc": r.concurrency, "rows/s": r.rows_per_s, "p50 ms": r.p50_ms,
        "p99 ms": r.p99_ms, "errors": r.errors, "batch rows": r.extra.get("mean_batch_rows", ""),
        "client cores": r.client_cores,
        "server cores": r.server_cpu_s / r.wall_s if r.wall_s else 0.0,
    }  # fmt: skip


def _at(results: list[LoadResult], label: str, c: int) -> LoadResult:
    return next(r for r in results if r.label == label and r.concurrency == c)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--replicas", type=int, default=1, help="replicas per model")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per replica")
    parser.add_argument(
        "--server-batch-wait-us",
        type=int,
        default=0,
        help="model replicas' own batch wait (client batching already coalesces calls)",
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["echo", "floor", "mesh", "orchestrator"]
    )
    args = parser.parse_args(argv)
    conc = args.concurrency
    server_flags = [
        "--threads",
        str(args.threads),
        "--batch-wait-us",
        str(args.server_batch_wait_us),
    ]
    top = max(conc)
    results: list[LoadResult] = []
    floors: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        plans = logs / "plans"
        plans.mkdir()
        (plans / "pipeline.yaml").write_text(PIPELINE_PLAN.read_text())
        (plans / "wide.yaml").write_text(WIDE_PLAN)
        agent = ConsulAgent(ConsulAgentConfig(log_path=str(logs / "consul.log"))).start()
        try:
            if "echo" not in args.skip:
                with echo_process(logs / "echo.log") as echo:
                    results += asyncio.run(
                        echo_points(echo.address, conc, args.duration_s, echo.pid)
                    )
            if "floor" not in args.skip:
                floors = [
                    in_process(args.threads, FLOOR_BATCH_ROWS, args.duration_s),
                    in_process(args.threads, 1, args.duration_s),
                ]
            with replicas(agent.address, args.replicas, logs, server_flags):
                if "mesh" not in args.skip:
                    base = DataPathConfig()
                    for label, cfg in (
                        ("mesh mlp stream+batch", base),
                        ("mesh mlp unary+batch", DataPathConfig(transport="unary")),
                        ("mesh mlp stream nobatch", base.with_batching(False)),
                        (
                            "mesh mlp unary nobatch",
                            DataPathConfig(transport="unary").with_batching(False),
                        ),
                    ):
                        results += asyncio.run(
                            mesh_points(agent.address, "mlp", label, cfg, conc, args.duration_s)
                        )
                    results += asyncio.run(
                        mesh_points(
                            agent.address,
                            "wide_mlp",
                            "mesh wide stream+batch",
                            base,
                            conc,
                            args.duration_s,
                        )
                    )
                if "orchestrator" not in args.skip:
                    for mode in ("on", "off"):
                        metrics_port = free_port()
                        orch = ["orchestrator", "serve", "--consul", agent.address, "--plans",
                                str(plans), "--no-learning", "--no-register",
                                "--client-batching", mode,
                                "--metrics-port", str(metrics_port)]  # fmt: skip
                        with ServerProcess(orch, logs / f"orch-{mode}.log") as server:
                            for plan, name in (
                                ("digits-pipeline", "pipeline"),
                                ("bench-wide", "wide"),
                            ):
                                results += asyncio.run(
                                    orchestrator_points(
                                        server.address,
                                        plan,
                                        f"orch {name} batch={mode}",
                                        conc,
                                        args.duration_s,
                                        server.pid,
                                        stream_concurrency=top,
                                        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
                                    )
                                )
        finally:
            agent.stop()

    rows = [_row(r) for r in results]
    for f in floors:
        rows.append({"mode": f["label"], "conc": "-", "rows/s": f["rows_per_s"],
                     "p50 ms": f["p50_ms"], "p99 ms": f["p99_ms"]})  # fmt: skip
    print_table(rows, ["mode", "conc", "rows/s", "p50 ms", "p99 ms", "errors", "batch rows",
                       "client cores", "server cores"])  # fmt: skip
    verdict = _verdict(results, floors, min(conc), top)
    for key, value in verdict.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    # Child processes inherit the environment: MESHSERVE_TRACING=off runs every server without
    # spans; unset, the orchestrator records spans into its trace buffer (its default).
    tracing = os.environ.get("MESHSERVE_TRACING", "") or "default"
    print(f"tracing (MESHSERVE_TRACING): {tracing}")
    path = write_results(
        "bench_orchestrator",
        {
            "settings": {**vars(args), "tracing": tracing},
            "results": results,
            "in_process": floors,
            "verdict": verdict,
        },
    )
    print(f"results: {path}")
    return 0


def _verdict(
    results: list[LoadResult], floors: list[dict[str, Any]], low: int, top: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    labels = {r.label for r in results}
    echo = _at(results, "echo (bare grpc.aio)", low) if "echo (bare grpc.aio)" in labels else None
    if echo and "mesh mlp stream+batch" in labels:
        for label in ("mesh mlp stream+batch", "mesh mlp unary+batch", "mesh mlp stream nobatch"):
            out[f"{label} p50 / echo p50 (c={low})"] = _at(results, label, low).p50_ms / echo.p50_ms
    if "mesh mlp stream+batch" in labels:
        stream = _at(results, "mesh mlp stream+batch", top).rows_per_s
        unary = _at(results, "mesh mlp unary+batch", top).rows_per_s
        out[f"mesh stream/unary rows/s (c={top}, batching on)"] = stream / unary
        if floors:
            wide = _at(results, "mesh wide stream+batch", top).rows_per_s
            out[f"mesh wide_mlp / in-process batched floor (c={top})"] = (
                wide / floors[0]["rows_per_s"]
            )
    pipe_on, pipe_off = "orch pipeline batch=on Execute", "orch pipeline batch=off Execute"
    if pipe_on in labels:
        if echo:
            per_hop = (_at(results, pipe_on, low).p50_ms - echo.p50_ms) / 2
            out[f"orchestrator overhead per model hop / echo p50 (c={low})"] = per_hop / echo.p50_ms
            out["target hop overhead"] = "< 2x"
        out[f"pipeline batching on/off rows/s (c={top})"] = (
            _at(results, pipe_on, top).rows_per_s / _at(results, pipe_off, top).rows_per_s
        )
        stream_on, stream_off = (f"orch pipeline batch={m} ExecuteStream" for m in ("on", "off"))
        if stream_on in labels and stream_off in labels:
            out[f"pipeline batching on/off rows/s, ExecuteStream load (c={top})"] = (
                _at(results, stream_on, top).rows_per_s / _at(results, stream_off, top).rows_per_s
            )
        out["target batching speedup"] = ">= 2.5x"
        if floors:
            wide = _at(results, "orch wide batch=on Execute", top).rows_per_s
            out[f"wide plan / in-process batched floor (c={top})"] = wide / floors[0]["rows_per_s"]
            if "orch wide batch=on ExecuteStream" in labels:
                wide = _at(results, "orch wide batch=on ExecuteStream", top).rows_per_s
                out[f"wide plan / in-process batched floor, ExecuteStream load (c={top})"] = (
                    wide / floors[0]["rows_per_s"]
                )
            out["target wide share"] = ">= 0.40"
    return out


if __name__ == "__main__":
    sys.exit(main())
