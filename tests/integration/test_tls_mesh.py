"""TLS end to end: SDK -> orchestrator -> model replica, each hop encrypted; Consul's gRPC health
check dials the replicas with TLS; plaintext callers are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from meshserve.clients.sdk import MeshServeClient
from meshserve.errors import UnavailableError
from meshserve.registry import ConsulConfig, EndpointWatcher
from tests.certs import self_signed
from tests.integration.orchestrator_helpers import TOKEN, Procs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "scaler-tls"  # own service name: other tests' orchestrators never see this replica
PLAN = f"""
name: tls-scale
inputs: [{{name: input, dtype: float32, shape: [-1, 64]}}]
steps:
  - {{name: scale, model: {MODEL}, inputs: {{input: input.input}}}}
outputs: {{scaled: scale.scaled}}
"""


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Procs]:
    with Procs(tmp_path_factory.mktemp("tls")) as group:
        yield group


async def test_every_hop_speaks_tls(
    procs: Procs, consul_addr: str, models_dir: Path, tmp_path: Path
) -> None:
    model_cert, model_key = self_signed(tmp_path, "model")
    orch_cert, orch_key = self_signed(tmp_path, "orchestrator")
    procs.spawn(
        "model", "serve", str(models_dir / "scaler.onnx"), "--name", MODEL,
        "--consul", consul_addr, "--threads", "1",
        "--tls-cert", str(model_cert), "--tls-key", str(model_key), "--tls-check-skip-verify",
    )  # fmt: skip
    # Consul's TLS health check passes: the replica is discoverable.
    watcher = EndpointWatcher(ConsulConfig(address=consul_addr), MODEL)
    await watcher.start()
    try:
        await watcher.wait_for(lambda eps: len(eps) == 1, timeout_s=15)
    finally:
        await watcher.stop()

    orch = procs.orchestrator(
        consul_addr, "--no-learning", "--no-register",
        "--tls-cert", str(orch_cert), "--tls-key", str(orch_key),
        "--model-tls-ca", str(model_cert),
    )  # fmt: skip
    x = np.random.default_rng(7).random((5, 64), dtype=np.float32) * 16
    expected = ort.InferenceSession(str(models_dir / "scaler.onnx")).run(None, {"input": x})[0]
    async with MeshServeClient(orch.address, token=TOKEN, tls_ca_file=str(orch_cert)) as client:
        await client.apply_plan(PLAN)
        result = await client.execute("tls-scale", {"input": x}, timeout_s=10)
        np.testing.assert_allclose(result.outputs["scaled"], expected, rtol=1e-6)
        await client.delete_plan("tls-scale")

    async with MeshServeClient(orch.address, token=TOKEN, timeout_s=3) as plaintext:
        with pytest.raises(UnavailableError) as err:
            await plaintext.list_plans()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
