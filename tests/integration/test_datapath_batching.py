"""Streaming batching against real replicas: calls are merged, every caller gets its own rows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client import REGISTRY

from meshserve.orchestrator.datapath import BatchConfig, DataPathConfig, MeshCaller
from meshserve.registry.config import ConsulConfig
from tests.integration.datapath_helpers import start_replicas, unique_name, wait_passing
from tests.procs import ChildProcess

pytestmark = pytest.mark.integration


def _server_rows(model: str) -> tuple[float, float]:
    """(observations, observations with more than 4 rows) of the model-reported batch size."""
    count = REGISTRY.get_sample_value(
        "meshserve_datapath_server_batch_rows_count", {"model": model}
    )
    small = REGISTRY.get_sample_value(
        "meshserve_datapath_server_batch_rows_bucket", {"model": model, "le": "4.0"}
    )
    return count or 0.0, (count or 0.0) - (small or 0.0)


@pytest.mark.parametrize("transport", ["stream", "unary"])
async def test_concurrent_calls_are_merged_and_rows_return_to_their_callers(
    transport: str, consul_addr: str, spawn: Callable[..., ChildProcess], models_dir: Path
) -> None:
    name = unique_name(f"dp-batch-{transport}")
    start_replicas(spawn, models_dir, consul_addr, 2, name)
    config = DataPathConfig(
        transport=transport,
        batch=BatchConfig(max_batch_rows=64, max_wait_us=5000),
    )
    caller = MeshCaller(config, ConsulConfig(address=consul_addr))
    session = ort.InferenceSession(str(models_dir / "mlp.onnx"))
    rng = np.random.default_rng(7)
    try:
        await wait_passing(caller, name, 2)
        count0, merged0 = _server_rows(name)
        payloads = [
            rng.random((int(rng.integers(1, 4)), 64), dtype=np.float32) * 16 for _ in range(200)
        ]

        async def call(x: np.ndarray) -> dict[str, np.ndarray]:
            await asyncio.sleep(float(rng.random()) * 0.002)  # arrive in a random order
            return await caller.infer(name, {"input": x}, timeout_s=10)

        for _ in range(3):
            results = await asyncio.gather(*(call(x) for x in payloads))
            for x, out in zip(payloads, results, strict=True):
                label, probs = session.run(None, {"input": x})
                np.testing.assert_array_equal(out["label"], label)
                np.testing.assert_allclose(out["probabilities"], probs, rtol=1e-5, atol=1e-6)
        count1, merged1 = _server_rows(name)
        assert merged1 - merged0 > 0, (count1 - count0, merged1 - merged0)
        sizes = caller.counters().batch_sizes
        assert sizes[name] > 4.0, sizes  # mean rows per model call; each caller sends 1-3
    finally:
        await caller.close()
