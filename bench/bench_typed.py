"""Typed plan service next to the generic Orchestrator.Execute on the pipeline plan, one run.

``python -m bench.bench_typed [--duration-s 3] [--concurrency 1 32] [--rounds 3]``

Starts its own Consul dev agent, a scaler and an mlp replica and an orchestrator, applies
examples/plans/pipeline.yaml over Admin (so its typed contract has every output), then measures
closed-loop load through ``meshserve.v1.Orchestrator/Execute`` (a Tensor of raw bytes) and
``meshserve.plans.digits_pipeline.v1.DigitsPipeline/Execute`` (a packed ``repeated float``) with
the same rows: one row of 64 float32 per request, requests built before the loop, the reply
parsed by each path's own message class. The modes alternate within each round so machine noise
hits both; the verdict is the median over rounds of typed p50 / generic p50 and generic rows/s /
typed rows/s at each concurrency (target: at most 1.10).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.common import LoadResult, ServerProcess, closed_loop, print_table, write_results
from meshserve import tensors
from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig
from meshserve.clients.typed import fetch_contract_info
from meshserve.contracts.wire import contract_from_info
from meshserve.v1 import admin_pb2, admin_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS = REPO_ROOT / "examples" / "models"
PIPELINE_PLAN = REPO_ROOT / "examples" / "plans" / "pipeline.yaml"
TOKEN = "bench-typed-token"
TARGET_RATIO = 1.10


def _rows(n: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.uniform(0, 16, (1, 64)).astype(np.float32) for _ in range(n)]


async def _apply(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        request = admin_pb2.ApplyPlanRequest(plan_text=PIPELINE_PLAN.read_text())
        for _ in range(200):
            try:
                await admin.ApplyPlan(
                    request, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10
                )
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)  # replicas not discoverable yet
        raise RuntimeError("pipeline plan never applied")


async def points(
    address: str, pid: int, conc: list[int], duration_s: float, rounds: int
) -> list[LoadResult]:
    rows = _rows()
    async with grpc.aio.insecure_channel(address) as channel:
        await channel.channel_ready()
        contract = contract_from_info(
            await fetch_contract_info(channel, plan="digits-pipeline", timeout_s=10)
        )
        generic_requests = [
            orchestrator_pb2.ExecuteRequest(
                plan="digits-pipeline", inputs={"input": tensors.from_numpy(x)}
            )
            for x in rows
        ]
        typed_requests = [contract.encode_request({"input": x}) for x in rows]
        generic = orchestrator_pb2_grpc.OrchestratorStub(channel).Execute
        typed = channel.unary_unary(
            contract.method_path(),
            request_serializer=contract.request_class.SerializeToString,
            response_deserializer=contract.response_class.FromString,
        )
        counter = itertools.count()

        async def generic_call(worker: int) -> int:
            await generic(generic_requests[next(counter) % len(rows)], timeout=30)
            return 1

        async def typed_call(worker: int) -> int:
            await typed(typed_requests[next(counter) % len(rows)], timeout=30)
            return 1

        for call in (generic_call, typed_call):  # both paths answer before measuring
            await call(0)
        out: list[LoadResult] = []
        for r in range(rounds):
            for c in conc:
                order = [("generic Execute", generic_call), ("typed Execute", typed_call)]
                if r % 2:
                    order.reverse()
                for label, call in order:
                    result = await closed_loop(
                        label, call, concurrency=c, duration_s=duration_s, server_pid=pid,
                        warmup_s=0.5,
                    )  # fmt: skip
                    result.extra["round"] = r
                    out.append(result)
        return out


def _verdict(results: list[LoadResult], conc: list[int], rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in conc:
        p50: list[float] = []
        rps: list[float] = []
        for r in range(rounds):
            pair = {x.label: x for x in results if x.concurrency == c and x.extra["round"] == r}
            g, t = pair["generic Execute"], pair["typed Execute"]
            p50.append(t.p50_ms / g.p50_ms)
            rps.append(g.rows_per_s / t.rows_per_s)
        out[f"typed/generic p50 (c={c}, median of {rounds})"] = statistics.median(p50)
        out[f"generic/typed rows/s (c={c}, median of {rounds})"] = statistics.median(rps)
        out[f"c={c} per-round p50 ratios"] = [round(v, 3) for v in p50]
    out["target"] = f"<= {TARGET_RATIO}"
    out["within target"] = all(
        v <= TARGET_RATIO for k, v in out.items() if "median" in k and isinstance(v, float)
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        agent = ConsulAgent(ConsulAgentConfig(log_path=str(logs / "consul.log"))).start()
        procs: list[ServerProcess] = []
        try:
            for model in ("scaler", "mlp"):
                proc = ServerProcess(
                    ["model", "serve", str(MODELS / f"{model}.onnx"), "--name", model,
                     "--consul", agent.address, "--metrics-port", "-1", "--threads", "1"],
                    logs / f"{model}.log",
                )  # fmt: skip
                procs.append(proc.__enter__())
            os.environ["MESHSERVE_ADMIN_TOKEN"] = TOKEN
            orch = ServerProcess(
                ["orchestrator", "serve", "--consul", agent.address, "--no-learning",
                 "--no-register", "--metrics-port", "-1"],
                logs / "orchestrator.log",
            )  # fmt: skip
            procs.append(orch.__enter__())
            asyncio.run(_apply(orch.address))
            results = asyncio.run(
                points(orch.address, orch.pid, args.concurrency, args.duration_s, args.rounds)
            )
        finally:
            for proc in reversed(procs):
                proc.__exit__()
            agent.stop()
    rows = [
        {
            "mode": r.label, "round": r.extra["round"], "conc": r.concurrency,
            "rows/s": r.rows_per_s, "p50 ms": r.p50_ms, "p99 ms": r.p99_ms, "errors": r.errors,
            "server cores": r.server_cpu_s / r.wall_s if r.wall_s else 0.0,
        }
        for r in results
    ]  # fmt: skip
    print_table(rows, ["mode", "round", "conc", "rows/s", "p50 ms", "p99 ms", "errors",
                       "server cores"])  # fmt: skip
    verdict = _verdict(results, args.concurrency, args.rounds)
    verdict["load average before / after"] = [load_before, os.getloadavg()]
    for key, value in verdict.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    path = write_results(
        "bench_typed", {"settings": vars(args), "results": results, "verdict": verdict}
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
