"""``meshserve demo``: bring a local mesh up, send the held-out digits through every example plan,
print accuracy, latency and a few predictions plus the orchestrator's stats, and bring it down.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from meshserve.clients.http_call import curl_command
from meshserve.clients.local_state import MeshState
from meshserve.clients.sdk import MeshServeClient
from meshserve.tensors import from_numpy, to_numpy_map
from meshserve.v1 import (
    admin_pb2,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    plan_pb2,
    tensor_pb2,
)

__all__ = ["PlanResult", "run_demo", "send_digits"]

CONCURRENCY = 16


@dataclass
class PlanResult:
    """What a burst of traffic through one plan produced."""

    plan: str
    sent: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    correct: int = 0
    scored: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    samples: list[tuple[int, int, dict[str, str]]] = field(default_factory=list)  # true, pred
    skipped: str = ""

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def _digits_input(plan: plan_pb2.Plan) -> str | None:
    """Name of the plan's single float32 [-1, 64] input, or None when it takes something else."""
    if len(plan.inputs) != 1:
        return None
    spec = plan.inputs[0]
    shape = list(spec.shape)
    ok_shape = not shape or (len(shape) == 2 and shape[-1] in (64, -1))
    return spec.name if spec.dtype == tensor_pb2.DATA_TYPE_FLOAT32 and ok_shape else None


def _predicted(outputs: dict[str, np.ndarray]) -> int | None:
    """Class label of one row: an int `label`-like output, else argmax of a [1, 10] score."""
    for value in outputs.values():
        if value.dtype.kind in "iu" and value.size == 1:
            return int(value.reshape(-1)[0])
    for value in outputs.values():
        if value.dtype.kind == "f" and value.ndim == 2 and value.shape == (1, 10):
            return int(np.argmax(value[0]))
    return None


async def send_digits(
    orchestrator: str,
    plan: plan_pb2.Plan,
    X: np.ndarray,
    y: np.ndarray,
    requests: int,
    concurrency: int = CONCURRENCY,
    timeout_s: float = 10.0,
) -> PlanResult:
    """Send `requests` single-row requests (concurrently) through `plan`; score the answers."""
    result = PlanResult(plan.name)
    input_name = _digits_input(plan)
    if input_name is None:
        result.skipped = "inputs are not one float32 [-1,64] tensor"
        return result
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i % len(X))
    async with grpc.aio.insecure_channel(orchestrator) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)

        async def worker() -> None:
            while not queue.empty():
                row = queue.get_nowait()
                request = orchestrator_pb2.ExecuteRequest(
                    plan=plan.name,
                    inputs={input_name: from_numpy(X[row : row + 1])},
                    routing_key=f"user-{row % 50}",
                    attributes={"tier": "gold" if row % 4 == 0 else "standard"},
                )
                start = time.monotonic()
                result.sent += 1
                try:
                    reply = await stub.Execute(request, timeout=timeout_s)
                except grpc.aio.AioRpcError as exc:
                    code = exc.code().name
                    result.failures[code] = result.failures.get(code, 0) + 1
                    continue
                result.latencies_ms.append((time.monotonic() - start) * 1e3)
                pred = _predicted(to_numpy_map(reply.outputs))
                if pred is None:
                    continue
                result.scored += 1
                result.correct += int(pred == int(y[row]))
                if len(result.samples) < 3:
                    result.samples.append((int(y[row]), pred, dict(reply.decisions)))
                if reply.decisions:  # bandits learn from the outcome
                    await _feedback(stub, reply.id, float(pred == int(y[row])))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result


async def _feedback(stub: Any, request_id: str, reward: float) -> None:
    try:
        await stub.Feedback(
            orchestrator_pb2.FeedbackRequest(request_id=request_id, reward=reward), timeout=5
        )
    except grpc.aio.AioRpcError:
        pass  # plans without a learner may refuse feedback; the demo is about serving


def _admin(state: MeshState) -> MeshServeClient:
    return MeshServeClient(state.orchestrator_address, token=state.admin_token, timeout_s=10)


async def _traffic(
    state: MeshState, data: Path, requests: int, fraud_data: Path
) -> list[PlanResult]:
    from meshserve.clients.demo_fraud import FRAUD_PLAN, send_fraud

    with np.load(data) as npz:
        X, y = npz["X"], npz["y"]
    async with _admin(state) as admin:
        plans = [await admin.get_plan(s.name) for s in await admin.list_plans()]
    have_fraud_data = fraud_data.exists()  # noqa: ASYNC240 - one stat before any traffic
    results = []
    for p in plans:
        if p.name == FRAUD_PLAN and have_fraud_data:
            result = PlanResult(p.name)
            await send_fraud(state.orchestrator_address, fraud_data, requests, CONCURRENCY, result)
            results.append(result)
        else:
            results.append(await send_digits(state.orchestrator_address, p, X, y, requests))
    return results


async def _stats(state: MeshState) -> admin_pb2.Stats:
    async with _admin(state) as admin:
        return await admin.stats()


def _print_results(results: list[PlanResult]) -> None:
    print("\nPLAN                      SENT   OK    ACCURACY  P50_MS  P99_MS  FAILURES")
    for r in results:
        if r.skipped:
            print(f"{r.plan:<25} skipped: {r.skipped}")
            continue
        acc = f"{r.correct / r.scored:.3f}" if r.scored else "-"
        fails = ", ".join(f"{k}={v}" for k, v in sorted(r.failures.items())) or "none"
        print(
            f"{r.plan:<25} {r.sent:<6} {len(r.latencies_ms):<5} {acc:<9} "
            f"{r.percentile_ms(50):<7.1f} {r.percentile_ms(99):<7.1f} {fails}"
        )
    print(
        "\nsample predictions (true->predicted, then the plan's decisions; fraud: user->decision):"
    )
    for r in results:
        if not r.samples:
            continue
        pairs = "  ".join(f"{true}->{pred}" for true, pred, _ in r.samples)
        steps = sorted({step for _, _, decisions in r.samples for step in decisions})
        chosen = "; ".join(
            f"{step}: " + ", ".join(d.get(step, "-") for _, _, d in r.samples) for step in steps
        )
        print(f"  {r.plan:<25} {pairs}" + (f"   ({chosen})" if chosen else ""))


def _print_stats(stats: admin_pb2.Stats) -> None:
    print(
        f"\norchestrator {stats.instance_id} stats: retries={stats.retries_total} "
        f"ejections={stats.ejections_total} no_endpoint={stats.no_endpoint_failures_total}"
    )
    for p in stats.plans:
        lat = p.latency
        print(
            f"  plan {p.plan:<22} n={lat.count:<6} errors={lat.errors:<4} "
            f"p50={lat.p50_ms:.1f}ms p99={lat.p99_ms:.1f}ms"
        )
    for m in stats.models:
        for e in m.endpoints:
            print(
                f"  model {m.name:<10} {e.instance_id:<32} {e.state:<8} "
                f"requests={e.requests_total} latency_ewma={e.latency_ewma_ms:.1f}ms"
            )
    for s in stats.shadows:
        print(f"  shadow {s.plan}/{s.step}: compared={s.compared} agreed={s.agreed}")
    for b in stats.bandits:
        arms = ", ".join(f"{a.arm}:{a.pulls}" for a in b.arms)
        print(f"  bandit {b.plan}/{b.step}: pulls {arms}")


def _print_curl(state: MeshState, data: Path) -> None:
    """A working curl line for the HTTP/JSON ingress, and what it answered when run here."""
    if not state.orchestrator_http:
        return
    row = np.load(data)["X"][:1].astype(np.float32)
    line = curl_command(state.orchestrator_http, "digits-pipeline", {"input": row})
    print(f"\nthe same over HTTP/JSON (docs: {state.orchestrator_http}/docs):\n  {line}")
    if shutil.which("curl") is None:
        return
    ran = subprocess.run(shlex.split(line), capture_output=True, text=True, timeout=30)
    print(f"  -> {ran.stdout.strip()[:300] or ran.stderr.strip()[:300]}")


def run_demo(
    config: Any,
    *,
    up: Callable[[Any], MeshState],
    down: Callable[[Path], list[Any]],
    print_summary: Callable[[MeshState], None],
    requests: int,
) -> int:
    """up -> traffic through every example plan -> results and stats -> down (always)."""
    print("starting a local mesh ...", flush=True)
    try:
        state = up(config)
        print_summary(state)
        print(f"\nsending {requests} requests through each plan ({CONCURRENCY} concurrent) ...")
        results = asyncio.run(
            _traffic(
                state,
                config.models_dir / "digits_test.npz",
                requests,
                Path(config.state_dir) / "fraud-data",
            )
        )
        _print_results(results)
        _print_stats(asyncio.run(_stats(state)))
        _print_curl(state, config.models_dir / "digits_test.npz")
    finally:
        survivors = down(config.state_dir)
        print("\nmesh stopped" if not survivors else f"\nstill running: {survivors}")
    served = [r for r in results if not r.skipped]
    return 0 if served and all(not r.failures for r in served) else 1
