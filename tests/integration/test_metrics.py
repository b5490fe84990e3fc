"""Every process serves Prometheus /metrics on the port it registered in Consul meta
`metrics_port`; the exposition parses (prometheus_client's parser), follows the naming
conventions and passes `promtool check metrics` when promtool is installed."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from meshserve import tensors
from meshserve.v1 import model_pb2, model_pb2_grpc
from tests.integration.datapath_helpers import unique_name
from tests.integration.prometheus_helpers import scrape_and_validate
from tests.waiting import wait_until_sync

pytestmark = pytest.mark.integration


def _consul_services(consul_addr: str) -> dict:
    with urllib.request.urlopen(f"http://{consul_addr}/v1/agent/services", timeout=5) as reply:
        return json.loads(reply.read())


def _metrics_url(consul_addr: str, predicate, what: str, timeout_s: float = 15.0) -> str:
    def registered() -> str:
        for svc in _consul_services(consul_addr).values():
            if predicate(svc) and svc.get("Meta", {}).get("metrics_port", "-1") != "-1":
                return f"http://{svc['Address']}:{svc['Meta']['metrics_port']}/metrics"
        return ""

    return wait_until_sync(registered, timeout_s, f"{what} registered with a metrics_port")


def test_model_service_metrics(spawn, consul_addr: str, models_dir: Path):
    name = unique_name("metrics-mlp")
    proc = spawn(
        "model", "serve", str(models_dir / "mlp.onnx"), "--name", name, "--version", "1",
        "--port", "0", "--consul", consul_addr, "--metrics-port", "0",
    )  # fmt: skip

    async def call() -> None:
        async with grpc.aio.insecure_channel(proc.address) as channel:
            stub = model_pb2_grpc.ModelServiceStub(channel)
            request = model_pb2.InferRequest(
                inputs={"input": tensors.from_numpy(np.ones((3, 64), np.float32))}
            )
            await stub.Infer(request, timeout=10)

    asyncio.run(call())
    url = _metrics_url(consul_addr, lambda s: s["Service"] == name, f"model service {name}")
    types = scrape_and_validate(url)
    for family, kind in {
        "meshserve_modelsvc_requests": "counter",
        "meshserve_modelsvc_request_duration_seconds": "histogram",
        "meshserve_modelsvc_batch_rows": "histogram",
    }.items():
        assert types.get(family) == kind, (family, types)
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package `prometheus`); parser checks passed")


@pytest.mark.skipif(
    importlib.util.find_spec("meshserve.orchestrator.cli") is None,
    reason="orchestrator CLI (meshserve.orchestrator.cli) not built yet",
)
def test_orchestrator_metrics(spawn, consul_addr: str):
    instance = unique_name("metrics-orch")
    spawn(
        "orchestrator", "serve", "--port", "0", "--consul", consul_addr, "--metrics-port", "0",
        "--instance-id", instance, env={"MESHSERVE_ADMIN_TOKEN": "t0k"},
    )  # fmt: skip
    url = _metrics_url(consul_addr, lambda s: s["ID"] == instance, f"orchestrator {instance}")
    types = scrape_and_validate(url)
    assert any(name.startswith("meshserve_") for name in types), sorted(types)
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package `prometheus`); parser checks passed")
