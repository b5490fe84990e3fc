"""Once ApplyPlan (or DeletePlan) returns, every Execute on that orchestrator sees it: a Consul
watch snapshot read before the write must not undo it (it once did, 13 times in 300)."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from meshserve.clients.sdk import MeshServeClient
from meshserve.errors import MeshServeError
from meshserve.v1 import plan_pb2
from tests.integration.orchestrator_helpers import PYTHON_MODULES, TOKEN, Procs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS = 40
WRITERS = 8  # concurrent appliers keep the store's watch delivering snapshots all the time


async def _apply_execute_delete(client: MeshServeClient, writer: int) -> None:
    x = np.zeros((1, 64), dtype=np.float32)
    name = f"ryw-{writer}"
    for i in range(ROUNDS):
        plan = plan_pb2.Plan(name=name, python="tests.integration.python_plans:echo")
        plan.description = f"round {i}"
        _, version = await client.apply_plan(plan)
        result = await client.execute(name, {"input": x}, plan_version=version)
        assert result.plan_version == version
        latest = await client.execute(name, {"input": x})
        assert latest.plan_version == version
        if i % 10 == 9:  # delete, then the plan must be gone at once
            await client.delete_plan(name)
            with pytest.raises(MeshServeError) as err:
                await client.execute(name, {"input": x})
            assert err.value.code == grpc.StatusCode.NOT_FOUND


async def test_every_execute_sees_the_apply_that_returned(consul_addr, tmp_path) -> None:
    with Procs(tmp_path) as procs:
        orch = procs.orchestrator(
            consul_addr, "--no-learning", "--metrics-port", "-1", *PYTHON_MODULES
        )
        async with MeshServeClient(orch.address, token=TOKEN) as client:
            await asyncio.gather(*(_apply_execute_delete(client, w) for w in range(WRITERS)))
