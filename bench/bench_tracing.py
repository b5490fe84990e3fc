"""Tracing overhead on the pipeline plan (scaler -> mlp) through a real orchestrator, at
concurrency 32: tracing on (every process records spans and exports them as JSON lines, the
orchestrator also keeps its trace buffer) vs off (``MESHSERVE_TRACING=off``: no provider, no
interceptors). Target: throughput with tracing on >= 90% of off (overhead < 10%).

``python -m bench.bench_tracing [--duration-s 5] [--rounds 2] [--concurrency 32]``

Both meshes (Consul dev agent, scaler, mlp, orchestrator each) run side by side; measurement
rounds alternate off/on so drift on a shared machine hits both modes alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from bench.common import LoadResult, ServerProcess, closed_loop, print_table, write_results
from meshserve import tensors
from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig
from meshserve.v1 import orchestrator_pb2, orchestrator_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS = REPO_ROOT / "examples" / "models"
TARGET_OVERHEAD = 0.10
_ALL = {"MESHSERVE_TRACING": "on", "OTEL_TRACES_SAMPLER": "parentbased_always_on"}
# Environment of every process per mode. "on" records and exports every span; "on-10%" is the
# usual production setting at this rate: head sampling of 10% of traces (parent-based, so a
# trace is recorded by every process or by none).
MODES: dict[str, dict[str, str]] = {
    "off": {"MESHSERVE_TRACING": "off"},
    "on": _ALL,
    "on-10%": {
        "MESHSERVE_TRACING": "on",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.1",
    },
    # Nothing sampled: the fixed cost of the interceptors and non-recording spans alone.
    "on-0%": {"MESHSERVE_TRACING": "on", "OTEL_TRACES_SAMPLER": "always_off"},
}


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """ServerProcess copies os.environ when it starts a child: set `values` around that."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _plan(name: str, scaler: str, mlp: str) -> str:
    return f"""
name: {name}
inputs:
  - {{name: input, dtype: float32, shape: [-1, 64]}}
steps:
  - {{name: scaler, model: {scaler}, inputs: {{input: input.input}}}}
  - {{name: mlp, model: {mlp}, inputs: {{input: scaler.scaled}}}}
outputs:
  label: mlp.label
"""


@contextlib.contextmanager
def mesh(mode: str, consul: str, work: Path, stack: contextlib.ExitStack) -> Iterator[str]:
    """Start scaler, mlp and an orchestrator with tracing `mode` ("on"/"off"); yield the
    orchestrator address."""
    env = {**MODES[mode], "MESHSERVE_TRACE_DIR": str(work / f"traces-{mode}")}
    tag = mode.replace("%", "pct")
    scaler, mlp = f"bench-scaler-{tag}", f"bench-mlp-{tag}"
    plan_file = work / f"plan-{tag}.yaml"
    plan_file.write_text(_plan(f"bench-pipeline-{tag}", scaler, mlp))
    common = ["--version", "1", "--port", "0", "--consul", consul, "--metrics-port", "-1"]
    with _environ(env):
        for name, model in ((scaler, "scaler"), (mlp, "mlp")):
            args = ["model", "serve", str(MODELS / f"{model}.onnx"), "--name", name, *common]
            stack.enter_context(ServerProcess(args, work / f"{name}.log"))
        orch_args = ["orchestrator", "serve", "--port", "0", "--consul", consul,
                     "--metrics-port", "-1", "--plans", str(plan_file),
                     "--instance-id", f"bench-orch-{tag}"]  # fmt: skip
        orch = stack.enter_context(ServerProcess(orch_args, work / f"orch-{mode}.log"))
    yield orch.address


async def _point(address: str, plan: str, label: str, concurrency: int, duration_s: float):
    rng = np.random.default_rng(1)
    requests = [
        orchestrator_pb2.ExecuteRequest(
            plan=plan,
            inputs={"input": tensors.from_numpy((rng.random((1, 64)) * 16).astype(np.float32))},
        )
        for _ in range(64)
    ]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
        # Wait until the replicas are discovered and the plan answers.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            try:
                await stub.Execute(requests[0], timeout=5)
                break
            except grpc.aio.AioRpcError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
        counter = [0]

        async def call(worker: int) -> int:
            counter[0] += 1
            await stub.Execute(requests[counter[0] % len(requests)], timeout=30)
            return 1

        return await closed_loop(label, call, concurrency=concurrency, duration_s=duration_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2, help="off/on measurement pairs")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = parser.parse_args(argv)
    for model in ("scaler", "mlp"):
        if not (MODELS / f"{model}.onnx").exists():
            print(f"{MODELS}/{model}.onnx missing: run examples/build_models.py", file=sys.stderr)
            return 2

    modes = ["off", *(m for m in args.modes if m != "off")]
    results: dict[str, list[LoadResult]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        agent = ConsulAgent(ConsulAgentConfig(log_path=str(work / "consul.log"))).start()
        stack.callback(agent.stop)
        addresses = {m: stack.enter_context(mesh(m, agent.address, work, stack)) for m in results}
        for round_index in range(args.rounds):
            order = modes if round_index % 2 == 0 else modes[::-1]
            for mode in order:
                tag = mode.replace("%", "pct")
                point = asyncio.run(
                    _point(
                        addresses[mode], f"bench-pipeline-{tag}", f"tracing {mode}",
                        args.concurrency, args.duration_s,
                    )
                )  # fmt: skip
                results[mode].append(point)
        span_lines = {
            m: sum(len(p.read_text().splitlines()) for p in (work / f"traces-{m}").glob("*.jsonl"))
            for m in modes
        }

    rows: list[dict[str, Any]] = [
        {
            "mode": r.label,
            "conc": r.concurrency,
            "req/s": r.throughput_rps,
            "p50 ms": r.p50_ms,
            "p99 ms": r.p99_ms,
            "errors": r.errors,
            "client cores": r.client_cores,
        }
        for mode in modes
        for r in results[mode]
    ]
    print_table(rows, ["mode", "conc", "req/s", "p50 ms", "p99 ms", "errors", "client cores"])
    off_rps = statistics.mean(r.throughput_rps for r in results["off"])
    off_p50 = statistics.mean(r.p50_ms for r in results["off"])
    verdict: dict[str, Any] = {"concurrency": args.concurrency, "target_overhead": TARGET_OVERHEAD}
    print()
    for mode in modes[1:]:
        rps = statistics.mean(r.throughput_rps for r in results[mode])
        p50 = statistics.mean(r.p50_ms for r in results[mode])
        overhead = 1.0 - rps / off_rps
        verdict[mode] = {
            "throughput_rps": rps,
            "throughput_off_rps": off_rps,
            "throughput_overhead": overhead,
            "p50_ms": p50,
            "p50_off_ms": off_p50,
            "spans_exported": span_lines[mode],
            "met": overhead < TARGET_OVERHEAD,
        }
        print(
            f"concurrency {args.concurrency}: tracing {mode} {rps:,.0f} req/s vs off "
            f"{off_rps:,.0f} req/s -> overhead {overhead:.1%} (target < {TARGET_OVERHEAD:.0%}); "
            f"p50 {p50:.2f} vs {off_p50:.2f} ms; {span_lines[mode]} spans exported"
        )
    path = write_results(
        "bench_tracing",
        {"settings": vars(args), "results": results, "verdict": verdict},
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
