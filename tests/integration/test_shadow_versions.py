"""Shadowing a second version of the same model, as first-class results.

Model ``mlp`` version 1 (the MLP) answers; version 2 (a logistic regression deployed under the
same name) is its shadow, compared by probability distance. The orchestrator's agreement counts
equal what the two ONNX models say offline; they are Prometheus metrics with the candidate's
``mlp@2`` label; disagreeing rows are retrievable by Admin.ListShadowDisagreements and the CLI;
and a restarted orchestrator (same KV namespace) reports the same totals from Consul KV.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshserve.clients.sdk import MeshServeClient
from meshserve.errors import MeshError
from meshserve.telemetry import catalog
from meshserve.v1 import admin_pb2
from tests.integration.datapath_helpers import unique_name
from tests.procs import ChildProcess
from tests.reference import onnx_outputs
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "shadow-test-token"
TOLERANCE = 0.05
ROWS = 48


def _plan(name: str, scaler: str, model: str) -> str:
    return f"""
name: {name}
inputs:
  - {{name: input, dtype: float32, shape: [-1, 64]}}
steps:
  - name: scale
    model: {scaler}
    inputs: {{input: input.input}}
  - name: compare
    inputs: {{input: scale.scaled}}
    shadow:
      primary: {{model: {{model: {model}, version: "1"}}}}
      candidate: {{model: {{model: {model}, version: "2"}}}}
      compare_output: probabilities
      comparison: probability
      tolerance: {TOLERANCE}
outputs:
  label: compare.label
"""


def _expected_agreement(models_dir: Path, x: np.ndarray) -> int:
    scaled = onnx_outputs(models_dir, "scaler", x)["scaled"]
    p = onnx_outputs(models_dir, "mlp", scaled)["probabilities"].astype(np.float64)
    q = onnx_outputs(models_dir, "logreg", scaled)["probabilities"].astype(np.float64)
    return int((0.5 * np.abs(p - q).sum(axis=1) <= TOLERANCE).sum())


def _shadow(stats: admin_pb2.Stats, plan: str) -> admin_pb2.ShadowStats | None:
    return next((s for s in stats.shadows if s.plan == plan), None)


def test_shadow_of_a_second_version_is_measured_kept_and_retrievable(
    spawn, consul_addr: str, models_dir: Path
):
    scaler, model, plan = unique_name("sv-scaler"), unique_name("sv-model"), unique_name("sv")
    common = ["--port", "0", "--consul", consul_addr, "--metrics-port", "-1"]
    spawn("model", "serve", str(models_dir / "scaler.onnx"), "--name", scaler, "--version", "1",
          *common)  # fmt: skip
    spawn("model", "serve", str(models_dir / "mlp.onnx"), "--name", model, "--version", "1",
          *common)  # fmt: skip
    spawn("model", "serve", str(models_dir / "logreg.onnx"), "--name", model, "--version", "2",
          *common)  # fmt: skip
    orch_args = ["orchestrator", "serve", "--port", "0", "--consul", consul_addr]
    env = {"MESHSERVE_ADMIN_TOKEN": TOKEN}
    first = spawn(*orch_args, "--metrics-port", "0", env=env)
    data = np.load(models_dir / "digits_test.npz")
    x = data["X"][:ROWS].astype(np.float32)
    agreed = _expected_agreement(models_dir, x)
    assert 0 < agreed < ROWS  # the two versions really differ on some rows

    async def run_first() -> admin_pb2.ShadowStats:
        async with MeshServeClient(first.address, token=TOKEN) as client:
            await wait_until(
                lambda: client.apply_plan(_plan(plan, scaler, model)),
                60, "the plan applied (its models discovered)", 0.2, retry_on=(MeshError,),
            )  # fmt: skip
            await wait_until(
                lambda: client.execute(plan, {"input": x[:1]}, timeout_s=10),
                60, "the plan answering", 0.2, retry_on=(MeshError,),
            )  # fmt: skip
            warm = await wait_until(
                lambda: _settled(client, plan, 1), 30, "the warm-up's shadow run recorded"
            )
            for i in range(0, ROWS, 4):  # 12 requests of 4 rows
                await client.execute(plan, {"input": x[i : i + 4]}, request_id=f"sv-{i}")
            return await wait_until(
                lambda: _settled(client, plan, warm.runs + ROWS // 4),
                30,
                "every shadow run recorded",
            )

    shadow = asyncio.run(run_first())
    # The warm-up row (x[0]) was compared too: expected counts include it.
    warm_agreed = _expected_agreement(models_dir, x[:1])
    assert shadow.candidate == f"{model}@2"
    assert (shadow.comparison, shadow.tolerance) == ("probability", TOLERANCE)
    assert (shadow.compared, shadow.agreed) == (ROWS + 1, agreed + warm_agreed)
    assert shadow.candidate_errors == 0
    assert shadow.agreement_rate == pytest.approx((agreed + warm_agreed) / (ROWS + 1))
    assert shadow.primary_latency_p99_ms > 0 and shadow.candidate_latency_p99_ms > 0

    # The same numbers as Prometheus metrics, labelled with the candidate version.
    metrics = _metrics(consul_addr, first)
    labels = {catalog.L_PLAN: plan, catalog.L_STEP: "compare", catalog.L_CANDIDATE: f"{model}@2"}
    assert metrics[(catalog.SHADOW_COMPARED_ROWS.name, frozenset(labels.items()))] == ROWS + 1
    assert metrics[(catalog.SHADOW_AGREED_ROWS.name, frozenset(labels.items()))] == shadow.agreed
    assert metrics[(catalog.SHADOW_CANDIDATE_ERRORS.name, frozenset(labels.items()))] == 0

    assert first.stop(timeout_s=20) == 0, first.tail()  # flushes to Consul KV on the way out
    second = spawn(*orch_args, "--metrics-port", "-1", env=env)

    async def run_second() -> tuple[admin_pb2.ShadowStats | None, list]:
        async with MeshServeClient(second.address, token=TOKEN) as client:
            return _shadow(await client.stats(), plan), await client.shadow_disagreements(plan)

    kept, disagreements = asyncio.run(run_second())
    assert kept is not None, "the restarted orchestrator lost the shadow results"
    assert (kept.compared, kept.agreed, kept.runs) == (shadow.compared, shadow.agreed, shadow.runs)
    expected = shadow.compared - shadow.agreed
    assert len(disagreements) == min(expected, 32)
    for d in disagreements:
        assert d.candidate == f"{model}@2" and d.step == "compare"
        assert d.distance > TOLERANCE and d.primary_value and d.candidate_value
        assert d.request_id
    cli = subprocess.run(
        [sys.executable, "-m", "meshserve.clients.cli", "shadows", "--orchestrator",
         second.address, "--plan", plan, "--limit", "3"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "MESHSERVE_ADMIN_TOKEN": TOKEN},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert f"{model}@2" in cli.stdout and "probability" in cli.stdout
    assert "disagreements (3):" in cli.stdout, cli.stdout


async def _settled(client: MeshServeClient, plan: str, runs: int) -> admin_pb2.ShadowStats | None:
    shadow = _shadow(await client.stats(), plan)
    return shadow if shadow is not None and shadow.runs >= runs else None


def _metrics(consul_addr: str, orch: ChildProcess) -> dict:
    """(name, labels) -> value of the orchestrator's /metrics (found through Consul meta)."""
    with urllib.request.urlopen(f"http://{consul_addr}/v1/agent/services", timeout=5) as reply:
        services = json.loads(reply.read())
    port = next(
        s["Meta"]["metrics_port"]
        for s in services.values()
        if s["Service"] == "meshserve-orchestrator" and s["Port"] == int(orch.address.split(":")[1])
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
