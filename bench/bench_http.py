"""HTTP/JSON ingress next to gRPC Execute on the pipeline plan, in one run on one orchestrator.

``python -m bench.bench_http [--duration-s 3] [--concurrency 1 8 32] [--rounds 2]``

Starts its own Consul dev agent, scaler and mlp replicas and one orchestrator (HTTP ingress on,
data-plane auth off). Each round measures, per concurrency, gRPC ``Execute`` (grpc.aio client,
one channel) and then ``POST /v1/plans/digits-pipeline:execute`` (the typed contract in JSON,
aiohttp client, keep-alive pool of `c` connections), every request one row of 64 float32 from
the digits data set.
Ratio (target <= 1.5): gRPC req/s / HTTP req/s at the top concurrency, best round each. The
load generator shares the machine with the servers: its CPU time is reported next to the
orchestrator's (`client cores`, `server cores`), and the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np

from bench.common import LoadResult, ServerProcess, closed_loop, print_table, write_results
from meshserve import tensors
from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig
from meshserve.v1 import orchestrator_pb2, orchestrator_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS = REPO_ROOT / "examples" / "models"
PLAN = REPO_ROOT / "examples" / "plans" / "pipeline.yaml"
PLAN_NAME = "digits-pipeline"
TARGET_RATIO = 1.5


def _rows() -> list[np.ndarray]:
    data = np.load(MODELS / "digits_test.npz")["X"][:64].astype(np.float32)
    return [data[i : i + 1] for i in range(len(data))]


async def _until_ok(call: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await call(0)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def grpc_point(address: str, c: int, duration_s: float, pid: int) -> LoadResult:
    requests = [
        orchestrator_pb2.ExecuteRequest(plan=PLAN_NAME, inputs={"input": tensors.from_numpy(x)})
        for x in _rows()
    ]
    counter = itertools.count()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)

        async def call(worker: int) -> int:
            await stub.Execute(requests[next(counter) % len(requests)], timeout=30)
            return 1

        await _until_ok(call)
        return await closed_loop(
            "gRPC Execute", call, concurrency=c, duration_s=duration_s, server_pid=pid
        )


async def http_point(base_url: str, c: int, duration_s: float, pid: int) -> LoadResult:
    bodies = [json.dumps({"input": x.ravel().tolist()}).encode() for x in _rows()]
    counter = itertools.count()
    url = f"{base_url}/v1/plans/{PLAN_NAME}:execute"
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=c)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call(worker: int) -> int:
            body = bodies[next(counter) % len(bodies)]
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
            return 1

        await _until_ok(call)
        return await closed_loop(
            "HTTP POST :execute", call, concurrency=c, duration_s=duration_s, server_pid=pid
        )


@contextmanager
def mesh(logs: Path) -> Iterator[ServerProcess]:
    """Consul, one scaler and one mlp replica, one orchestrator serving the pipeline plan."""
    agent = ConsulAgent(ConsulAgentConfig(log_path=str(logs / "consul.log"))).start()
    try:
        with ExitStack() as stack:
            for model in ("scaler", "mlp"):
                args = ["model", "serve", str(MODELS / f"{model}.onnx"), "--name", model,
                        "--port", "0", "--consul", agent.address, "--metrics-port", "-1",
                        "--http-port", "-1", "--threads", "1", "--batch-wait-us", "0"]  # fmt: skip
                stack.enter_context(ServerProcess(args, logs / f"{model}.log"))
            orch = ["orchestrator", "serve", "--consul", agent.address, "--plans", str(PLAN),
                    "--no-learning", "--no-register", "--http-port", "0"]  # fmt: skip
            yield stack.enter_context(ServerProcess(orch, logs / "orchestrator.log"))
    finally:
        agent.stop()


def _row(r: LoadResult) -> dict[str, Any]:
    return {
        "mode": r.label, "conc": r.concurrency, "req/s": r.throughput_rps, "p50 ms": r.p50_ms,
        "p99 ms": r.p99_ms, "errors": r.errors, "client cores": r.client_cores,
        "server cores": r.server_cpu_s / r.wall_s if r.wall_s else 0.0,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=2, help="gRPC/HTTP pairs per concurrency")
    args = parser.parse_args(argv)
    results: list[LoadResult] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, mesh(Path(tmp)) as orch:
        log = Path(orch.log_path).read_text(errors="replace")
        match = re.search(r"MESHSERVE_HTTP (\S+)", log)
        assert match, "the orchestrator printed no MESHSERVE_HTTP line"
        base_url = f"http://{match.group(1)}"
        for _ in range(args.rounds):
            for c in args.concurrency:
                results.append(asyncio.run(grpc_point(orch.address, c, args.duration_s, orch.pid)))
                results.append(asyncio.run(http_point(base_url, c, args.duration_s, orch.pid)))
    load_after = os.getloadavg()
    print_table(
        [_row(r) for r in results],
        ["mode", "conc", "req/s", "p50 ms", "p99 ms", "errors", "client cores", "server cores"],
    )
    verdict: dict[str, Any] = {}
    for c in args.concurrency:
        best_grpc = max(
            r.throughput_rps for r in results if r.concurrency == c and "gRPC" in r.label
        )
        best_http = max(
            r.throughput_rps for r in results if r.concurrency == c and "HTTP" in r.label
        )
        verdict[f"grpc_over_http_c{c}"] = best_grpc / best_http if best_http else float("inf")
    top = max(args.concurrency)
    verdict["target"] = f"grpc_over_http_c{top} <= {TARGET_RATIO}"
    verdict["met"] = verdict[f"grpc_over_http_c{top}"] <= TARGET_RATIO
    verdict["load_avg_before"] = load_before
    verdict["load_avg_after"] = load_after
    for key, value in verdict.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    path = write_results(
        "bench_http", {"settings": vars(args), "results": results, "verdict": verdict}
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
