"""OTLP export for real: every process exports through the SDK's OTLP/gRPC exporter
(``OTEL_EXPORTER_OTLP_ENDPOINT``) to a real receiver (``TraceService/Export`` from
``opentelemetry-proto``), under concurrent load with micro-batching on in the orchestrator and
batching in the replicas, and with a fault that makes one replica fail so calls are retried.

Every request's own trace must hold, for each of its model calls, the orchestrator's CLIENT
span(s) - one per attempt, RPC convention names and attributes - and the replica's share of the
batch under the successful attempt, linked to the batch span that served it.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import grpc
import numpy as np
import pytest

from meshserve import tensors
from meshserve.clients.sdk import MeshServeClient
from meshserve.errors import MeshError
from meshserve.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.integration.datapath_helpers import unique_name
from tests.integration.otlp_receiver import OtlpReceiver
from tests.integration.trace_checks import by_trace, model_calls
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "otlp-test-token"
CONCURRENT = 16
ROUNDS = 3
UNAVAILABLE = str(grpc.StatusCode.UNAVAILABLE.value[0])


def _plan(name: str, scaler: str, mlp: str) -> str:
    return f"""
name: {name}
inputs:
  - {{name: input, dtype: float32, shape: [-1, 64]}}
steps:
  - name: scale
    model: {scaler}
    inputs: {{input: input.input}}
  - name: classify
    model: {mlp}
    inputs: {{input: scale.scaled}}
outputs:
  label: classify.label
"""


async def _round(address: str, plan: str, rng: np.random.Generator) -> list[tuple[str, object]]:
    """CONCURRENT requests at once, each with a traceparent of its own (a sampled client span
    the test invents). Returns (trace id, response or AioRpcError) per request."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)

        async def one(i: int) -> tuple[str, object]:
            trace_id = secrets.token_hex(16)
            traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
            rows = (rng.random((1 + i % 3, 64)) * 16).astype(np.float32)
            request = orchestrator_pb2.ExecuteRequest(
                plan=plan, inputs={"input": tensors.from_numpy(rows)}
            )
            try:
                reply: object = await stub.Execute(
                    request, metadata=(("traceparent", traceparent),), timeout=30
                )
            except grpc.aio.AioRpcError as exc:
                reply = exc
            return trace_id, reply

        return await asyncio.gather(*(one(i) for i in range(CONCURRENT)))


async def _load(address: str, plan: str, mlp: str) -> list[tuple[str, object]]:
    async with MeshServeClient(address, token=TOKEN) as client:
        warm = np.full((1, 64), 3.0, np.float32)
        await wait_until(
            lambda: client.execute(plan, {"input": warm}, timeout_s=10),
            60,
            "the plan answering",
            0.2,
            retry_on=(MeshError,),
        )
        (model,) = await client.list_models(mlp)
        endpoints = sorted(e.instance_id for e in model.endpoints)
        assert len(endpoints) == 2, endpoints
        await client.inject_fault(
            mlp, instance_id=endpoints[0], abort_rate=0.5, duration_ms=600_000
        )
    rng = np.random.default_rng(5)
    results: list[tuple[str, object]] = []
    for _ in range(ROUNDS):
        results.extend(await _round(address, plan, rng))
    return results


def test_every_request_trace_holds_its_model_calls_over_otlp(
    spawn, consul_addr: str, models_dir: Path, tmp_path: Path
):
    with OtlpReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        scaler, mlp = unique_name("otlp-scaler"), unique_name("otlp-mlp")
        common = ["--version", "1", "--port", "0", "--consul", consul_addr, "--metrics-port", "-1"]
        models = [
            spawn("model", "serve", str(models_dir / "scaler.onnx"), "--name", scaler, *common,
                  "--batch-max", "64", "--batch-wait-us", "20000", env=env),
            spawn("model", "serve", str(models_dir / "mlp.onnx"), "--name", mlp, *common,
                  env=env),
            spawn("model", "serve", str(models_dir / "mlp.onnx"), "--name", mlp, *common,
                  env=env),
        ]  # fmt: skip
        plan = unique_name("otlp-plan")
        plan_file = tmp_path / "plan.yaml"
        plan_file.write_text(_plan(plan, scaler, mlp))
        orch = spawn(
            "orchestrator", "serve", "--port", "0", "--consul", consul_addr,
            "--metrics-port", "-1", "--plans", str(plan_file),
            env={**env, "MESHSERVE_ADMIN_TOKEN": TOKEN},
        )  # fmt: skip
        results = asyncio.run(_load(orch.address, plan, mlp))
        for proc in (orch, *models):  # SIGTERM: each process flushes its exporter on the way out
            assert proc.stop(timeout_s=20) == 0, proc.tail()
        spans = receiver.spans()
        assert receiver.exports > 0

    ok = [t for t, r in results if isinstance(r, orchestrator_pb2.ExecuteResponse)]
    failed = [r for _, r in results if not isinstance(r, orchestrator_pb2.ExecuteResponse)]
    # Retries carry nearly every call past the faulty replica; a call may still fail when the
    # retry budget is spent, but never most of them.
    assert len(ok) >= CONCURRENT * ROUNDS * 0.9, failed
    traces = by_trace(spans)
    assert {s.service for s in spans} >= {scaler, mlp, "orchestrator"}
    retried = coalesced_clients = shared_batches = 0
    for trace_id in ok:
        trace = traces[trace_id]
        (server,) = [s for s in trace if s.kind == "SERVER" and s.service == "orchestrator"]
        assert server.name == "meshserve.v1.Orchestrator/Execute"
        assert server.attributes["rpc.system"] == "grpc"
        assert server.attributes["rpc.service"] == "meshserve.v1.Orchestrator"
        assert server.attributes["rpc.method"] == "Execute"
        assert server.attributes["rpc.grpc.status_code"] == "0"
        by_id = {s.span_id: s for s in trace}
        assert all(s.parent_span_id in by_id for s in trace if s is not server), trace_id
        for step, model in (("scale", scaler), ("classify", mlp)):
            call = model_calls(trace, spans, step, model)
            coalesced_clients += any(
                int(a.attributes["meshserve.batch_requests"]) >= 2 for a in call.attempts
            )
            shared_batches += len({ln.trace_id for ln in call.batch.links}) >= 2
            codes = {a.attributes["rpc.grpc.status_code"]: a for a in call.attempts}
            if UNAVAILABLE in codes:  # the fault failed an attempt: a later one answered
                failed, answered = codes[UNAVAILABLE], codes["0"]
                assert failed.status == "ERROR", failed
                assert int(answered.attributes["meshserve.attempt"]) > int(
                    failed.attributes["meshserve.attempt"]
                )
                assert answered.attributes["meshserve.retry_reason"], answered
                endpoint = "meshserve.endpoint"
                assert failed.attributes[endpoint] != answered.attributes[endpoint]
                retried += 1
    # Micro-batching was on and coalesced callers, the replicas' batches served several
    # traces, and the fault made calls retry - all visible in each request's own trace.
    assert coalesced_clients > 0, "no CLIENT span carried several callers' rows"
    assert shared_batches > 0, "no replica batch served several traces"
    assert retried > 0, "no call was retried (the fault should fail half the attempts to one)"
