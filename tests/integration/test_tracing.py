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
from meshserve.telemetry import SpanRecord, read_spans
from meshserve.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from tests.integration.datapath_helpers import unique_name
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


def _by_trace(spans: list[SpanRecord]) -> dict[str, list[SpanRecord]]:
    out: dict[str, list[SpanRecord]] = {}
    for span in spans:
        out.setdefault(span.trace_id, []).append(span)
    return out


def _ancestors(span: SpanRecord, by_id: dict[str, SpanRecord]) -> list[SpanRecord]:
    chain = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span)
    return chain


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
    traces = _by_trace(spans)
    model_services = {scaler, logreg, mlp}

    calls = [s for s in spans if s.name.startswith("model.call ")]
    for trace_id, client_span_id in ok:
        trace = traces[trace_id]
        by_id = {s.span_id: s for s in trace}
        # The orchestrator's server span continues the caller's span, with RPC conventions.
        (server,) = [s for s in trace if s.parent_span_id == client_span_id]
        assert server.kind == "SERVER" and server.name == "/meshserve.v1.Orchestrator/Execute"
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
        # Each model step is served by a (micro-batched) model call: its child, or a call made
        # for a batch of callers that links to it.
        for step, model in (("scale", scaler), ("vote", logreg), ("vote", mlp)):
            step_id = names[f"step {step}"].span_id
            assert any(
                c.name == f"model.call {model}"
                and (c.parent_span_id == step_id or step_id in c.linked_span_ids)
                for c in calls
            ), (trace_id, step, model)

    # One trace id across every process: requests whose rows led a batch carry the model-side
    # spans (modelsvc.request is a child of the orchestrator's step span).
    full = [t for t, _ in ok if {s.service for s in traces[t]} >= model_services]
    assert full, "no trace reached all of the orchestrator and the three model services"
    orchestrator_services = {s.service for s in spans} - model_services
    assert len(orchestrator_services) == 1
    for trace_id in full:
        by_id = {s.span_id: s for s in traces[trace_id]}
        for req in (s for s in traces[trace_id] if s.name == "modelsvc.request"):
            assert by_id[req.parent_span_id].name in ("step scale", "step vote") or (
                by_id[req.parent_span_id].name.startswith(("model.call", "/meshserve.v1.Model"))
            ), by_id[req.parent_span_id]
    # Every micro-batch call reached its model within the trace of one of its callers.
    for call in (c for c in calls if c.trace_id in {t for t, _ in ok}):
        model = call.name.removeprefix("model.call ")
        caller_traces = {call.trace_id, *(ln.trace_id for ln in call.links)}
        assert any(
            s.name == "modelsvc.request" and s.service == model and s.trace_id in caller_traces
            for s in spans
        ), call
    # The orchestrator's streaming batcher coalesced callers: one call links several traces.
    assert max(len({ln.trace_id for ln in c.links}) for c in calls) >= 2

    # Server batching: every request span of the scaler is linked by the batch that served it,
    # and at least one batch served requests from several traces.
    ok_ids = {t for t, _ in ok}
    scaler_requests = [
        s for s in spans
        if s.service == scaler and s.name == "modelsvc.request" and s.trace_id in ok_ids
    ]  # fmt: skip
    assert scaler_requests
    batches = [s for s in spans if s.service == scaler and s.name == "modelsvc.batch"]
    linked = {(ln.trace_id, ln.span_id): b for b in batches for ln in b.links}
    for req in scaler_requests:
        batch = linked.get((req.trace_id, req.span_id))
        assert batch is not None, f"request span {req.span_id} not linked by any batch span"
        assert int(batch.attributes["meshserve.batch_size"]) >= 1
    assert max(len({ln.trace_id for ln in b.links} & ok_ids) for b in batches) >= 2
    # The inference span runs under its batch span.
    batch_ids = {b.span_id for b in batches}
    assert any(s.name == "modelsvc.inference" and s.parent_span_id in batch_ids for s in spans)

    # The failing step: ERROR status on the logic and step spans and on the plan, with a message
    # naming the field; no model was called for that request.
    bad_trace, _, _ = failed[0]
    names = {s.name: s for s in traces[bad_trace]}
    for name in ("step check", f"plan {plan}"):
        assert names[name].status == "ERROR", (name, names[name])
    assert "input" in names["step check"].status_message
    assert not [s for s in traces[bad_trace] if s.name.startswith("model.call")]
    (server,) = [s for s in traces[bad_trace] if s.kind == "SERVER"]
    invalid_argument = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert server.attributes["rpc.grpc.status_code"] == str(invalid_argument)
