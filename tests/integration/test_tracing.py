"""One trace across real processes: a plan with a logic step, a batched model call and an ensemble,
executed by a real orchestrator over real model replicas (Consul-discovered). Every process
writes its spans as JSON lines into one directory (MESHSERVE_TRACE_DIR); the test reads them
after the processes exit (which flushes their exporters) and checks the trace's shape.

Each request carries its own W3C traceparent (a client span id the test invents), so the test
knows every trace id in advance and that the orchestrator continued the caller's trace.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from meshserve import tensors
from meshserve.telemetry import read_spans
from meshserve.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.integration.datapath_helpers import unique_name
from tests.integration.trace_checks import MODEL_RPC_PREFIX, by_trace, model_calls
from tests.waiting import wait_until_sync

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("meshserve.orchestrator.cli") is None,
        reason="orchestrator CLI (meshserve.orchestrator.cli) not built yet",
    ),
]

TOKEN = "trace-test-token"
CONCURRENT = 12


def _plan(name: str, scaler: str, members: tuple[str, str]) -> str:
    return f"""
name: {name}
inputs:
  - {{name: input, dtype: float32, shape: [-1, 64]}}
steps:
  - name: check
    logic:
      function: validate
      params:
        fields:
          input: {{kind: float, min: 0, max: 16}}
    inputs: {{input: input.input}}
  - name: scale
    model: {scaler}
    inputs: {{input: check.input}}
  - name: vote
    inputs: {{input: scale.scaled}}
    ensemble:
      aggregation: majority_vote
      output: label
      members:
        - {{name: a, model: {members[0]}}}
        - {{name: b, model: {members[1]}}}
outputs:
  label: vote.label
"""


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


async def _execute_all(address: str, plan: str, bad_index: int) -> list[tuple[str, str, object]]:
    """CONCURRENT requests at once (so the scaler batches them); request `bad_index` has a value
    out of range. Returns (trace id, client span id, response or AioRpcError) per request."""
    rng = np.random.default_rng(7)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorStub(channel)

        async def one(i: int) -> tuple[str, str, object]:
            trace_id, span_id, tp = _traceparent()
            rows = (rng.random((1, 64)) * 16).astype(np.float32)
            if i == bad_index:
                rows[0, 5] = 99.0
            request = orchestrator_pb2.ExecuteRequest(
                id=f"req-{i}", plan=plan, inputs={"input": tensors.from_numpy(rows)}
            )
            try:
                reply: object = await stub.Execute(
                    request, metadata=(("traceparent", tp),), timeout=30
                )
            except grpc.aio.AioRpcError as exc:
                reply = exc
            return trace_id, span_id, reply

        return await asyncio.gather(*(one(i) for i in range(CONCURRENT)))


def test_one_trace_across_processes(spawn, consul_addr: str, models_dir: Path, tmp_path: Path):
    trace_dir = tmp_path / "traces"
    env = {"MESHSERVE_TRACE_DIR": str(trace_dir), "OTEL_BSP_SCHEDULE_DELAY": "100"}
    scaler, logreg, mlp = (unique_name(m) for m in ("tr-scaler", "tr-logreg", "tr-mlp"))
    common = ["--version", "1", "--port", "0", "--consul", consul_addr, "--metrics-port", "-1"]
    models = [
        spawn("model", "serve", str(models_dir / "scaler.onnx"), "--name", scaler, *common,
              "--batch-max", "64", "--batch-wait-us", "30000", env=env),
        spawn("model", "serve", str(models_dir / "logreg.onnx"), "--name", logreg, *common,
              env=env),
        spawn("model", "serve", str(models_dir / "mlp.onnx"), "--name", mlp, *common, env=env),
    ]  # fmt: skip
    plan = unique_name("traced")
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(_plan(plan, scaler, (logreg, mlp)))
    orch = spawn(
        "orchestrator", "serve", "--port", "0", "--consul", consul_addr, "--metrics-port", "-1",
        "--plans", str(plan_file), "--instance-id", unique_name("orch"),
        env={**env, "MESHSERVE_ADMIN_TOKEN": TOKEN},
    )  # fmt: skip

    # Warm up until every replica is passing in Consul and the whole plan answers.
    def warm() -> bool:
        replies = asyncio.run(_execute_all(orch.address, plan, bad_index=-1))
        return all(isinstance(r, orchestrator_pb2.ExecuteResponse) for _, _, r in replies)

    wait_until_sync(warm, 30, "every replica passing and the whole plan answering", 0.2)
    results = asyncio.run(_execute_all(orch.address, plan, bad_index=3))
    ok = [(t, s) for t, s, r in results if isinstance(r, orchestrator_pb2.ExecuteResponse)]
    failed = [(t, s, r) for t, s, r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == CONCURRENT - 1 and len(failed) == 1, [r for _, _, r in failed]
    assert failed[0][2].code() == grpc.StatusCode.INVALID_ARGUMENT
    for trace_id, _, reply in results:
        if isinstance(reply, orchestrator_pb2.ExecuteResponse):
            assert reply.trace_id == trace_id  # the orchestrator reports the caller's trace

    # The CLI renders a trace from the orchestrator's buffer (Admin.GetTrace) merged with files.
    cli = [sys.executable, "-m", "meshserve.clients.cli", "trace", "--orchestrator", orch.address]
    cli_env = {**os.environ, "PYTHONUNBUFFERED": "1", "MESHSERVE_ADMIN_TOKEN": TOKEN}
    shown = subprocess.run(
        [*cli, ok[0][0], "--trace-dir", str(trace_dir)], capture_output=True, text=True,
        timeout=60, env=cli_env,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert f"plan {plan}" in shown.stdout and "logic validate" in shown.stdout
    slowest = subprocess.run(
        [*cli, "--slowest", "5"], capture_output=True, text=True, timeout=60, env=cli_env
    )
    assert slowest.returncode == 0, slowest.stderr
    assert len(slowest.stdout.strip().splitlines()) == 6  # header + 5 traces

    for proc in (orch, *models):  # SIGTERM: each process flushes its exporter on the way out
        assert proc.stop(timeout_s=20) == 0, proc.tail()

    spans = list(read_spans([trace_dir]))
    traces = by_trace(spans)
    model_services = {scaler, logreg, mlp}

    ok_ids = {t for t, _ in ok}
    coalesced = 0
    for trace_id, client_span_id in ok:
        trace = traces[trace_id]
        by_id = {s.span_id: s for s in trace}
        # The orchestrator's server span continues the caller's span, with RPC conventions.
        (server,) = [s for s in trace if s.parent_span_id == client_span_id]
        assert server.kind == "SERVER" and server.name == "meshserve.v1.Orchestrator/Execute"
        assert server.attributes["rpc.system"] == "grpc"
        assert server.attributes["rpc.service"] == "meshserve.v1.Orchestrator"
        assert server.attributes["rpc.method"] == "Execute"
        assert server.attributes["rpc.grpc.status_code"] == "0"
        # Nothing dangles: every other span's parent is in the trace (model-side ones too).
        assert all(s.parent_span_id in by_id for s in trace if s is not server)
        names = {s.name: s for s in trace}
        root = names[f"plan {plan}"]
        assert root.parent_span_id == server.span_id
        for step in ("check", "scale", "vote"):
            assert names[f"step {step}"].parent_span_id == root.span_id
        assert names["logic validate"].parent_span_id == names["step check"].span_id
        # Every model call of the request is in its own trace, micro-batched or not: its CLIENT
        # span(s) and the replica's share of the batch, linked to the batch span.
        assert {s.service for s in trace} >= model_services
        for step, model in (("scale", scaler), ("vote", logreg), ("vote", mlp)):
            call = model_calls(trace, spans, step, model)
            batch_traces = {ln.trace_id for ln in call.batch.links}
            coalesced += len(batch_traces & ok_ids) >= 2
            assert int(call.batch.attributes["meshserve.batch_size"]) >= 1
    orchestrator_services = {s.service for s in spans} - model_services
    assert len(orchestrator_services) == 1
    # The streaming batcher and the scaler's batcher coalesced callers: one micro-batch attempt
    # carried several callers, and some batch span served requests from several traces.
    assert any(int(s.attributes.get("meshserve.batch_requests", "1")) >= 2 for s in spans)
    assert coalesced, "no batch served requests from several traces"
    # The inference span runs under its batch span.
    batch_ids = {s.span_id for s in spans if s.name == "modelsvc.batch"}
    assert any(s.name == "modelsvc.inference" and s.parent_span_id in batch_ids for s in spans)

    # The failing step: ERROR status on the logic and step spans and on the plan, with a message
    # naming the field; no model was called for that request.
    bad_trace, _, _ = failed[0]
    names = {s.name: s for s in traces[bad_trace]}
    for name in ("step check", f"plan {plan}"):
        assert names[name].status == "ERROR", (name, names[name])
    assert "input" in names["step check"].status_message
    assert not [s for s in traces[bad_trace] if s.name.startswith(MODEL_RPC_PREFIX)]
    (server,) = [s for s in traces[bad_trace] if s.kind == "SERVER"]
    invalid_argument = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert server.attributes["rpc.grpc.status_code"] == str(invalid_argument)
