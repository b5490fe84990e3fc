"""MeshCaller against real model service processes registered in a real Consul agent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from meshserve.errors import InvalidInputError, NotFoundError, UnavailableError
from meshserve.orchestrator.datapath import DataPathConfig, MeshCaller
from meshserve.registry.config import ConsulConfig
from tests.integration.datapath_helpers import rows, start_replicas, unique_name, wait_passing
from tests.procs import ChildProcess

pytestmark = pytest.mark.integration


async def test_calls_spread_over_three_replicas_and_rows_come_back(
    consul_addr: str, spawn: Callable[..., ChildProcess], models_dir: Path
) -> None:
    name = unique_name("dp-spread")
    start_replicas(spawn, models_dir, consul_addr, 3, name)
    caller = MeshCaller(DataPathConfig(), ConsulConfig(address=consul_addr))
    try:
        await wait_passing(caller, name, 3)
        x = rows(5, 1)
        single = await caller.infer(name, {"input": x}, timeout_s=5)
        assert all(v.shape[0] == 5 for v in single.values())

        async def one() -> None:
            out = await caller.infer(name, {"input": x}, timeout_s=5)
            for key, value in out.items():
                np.testing.assert_array_equal(value, single[key])

        before = {s.instance_id: s.requests_total for s in caller.snapshot(name)}
        for _ in range(20):
            await asyncio.gather(*(one() for _ in range(16)))
        after = {
            s.instance_id: s.requests_total - before[s.instance_id] for s in caller.snapshot(name)
        }
        assert len(after) == 3
        total = sum(after.values())
        assert all(count >= 0.1 * total for count in after.values()), after
    finally:
        await caller.close()


async def test_unknown_model_fails_fast_with_unavailable(consul_addr: str) -> None:
    caller = MeshCaller(DataPathConfig(discovery_timeout_s=1.0), ConsulConfig(address=consul_addr))
    try:
        loop = asyncio.get_running_loop()
        for _ in range(2):
            start = loop.time()
            with pytest.raises(UnavailableError, match="no ready replica"):
                await caller.infer("no-such-model", {"input": rows(1, 0)}, timeout_s=10)
            assert loop.time() - start < 1.5
        assert caller.counters().no_endpoint_failures_total == 2
    finally:
        await caller.close()


async def test_bad_input_gets_invalid_argument_without_hurting_good_calls(
    consul_addr: str, spawn: Callable[..., ChildProcess], models_dir: Path
) -> None:
    name = unique_name("dp-bad")
    start_replicas(spawn, models_dir, consul_addr, 1, name)
    caller = MeshCaller(DataPathConfig(), ConsulConfig(address=consul_addr))
    try:
        await wait_passing(caller, name, 1)
        good = [caller.infer(name, {"input": rows(2, i)}, timeout_s=5) for i in range(8)]
        bad = caller.infer(name, {"input": np.ones((2, 63), np.float32)}, timeout_s=5)
        results = await asyncio.gather(bad, *good, return_exceptions=True)
        assert isinstance(results[0], InvalidInputError), results[0]
        assert name in results[0].message and "input" in results[0].message
        assert all(isinstance(r, dict) for r in results[1:]), results[1:]
        assert caller.counters().retries_total == 0
        meta = await caller.metadata(name)
        assert meta.name == name and [i.name for i in meta.inputs] == ["input"]
        with pytest.raises(NotFoundError, match="version '9'"):
            await caller.metadata(name, version="9")
    finally:
        await caller.close()
