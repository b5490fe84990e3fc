"""No Admin call, whatever names it carries, touches a Consul KV key outside the orchestrator's
prefix (a `DeletePlan(name="../..")` once wiped every key of every application)."""

from __future__ import annotations

import grpc
import pytest

from meshserve.clients.sdk import MeshServeClient
from meshserve.errors import MeshServeError
from meshserve.registry import KV, ConsulConfig
from meshserve.v1 import plan_pb2
from tests.integration.orchestrator_helpers import PYTHON_MODULES, TOKEN, Procs

pytestmark = [pytest.mark.integration]

HOSTILE = [
    "..", "../..", "../../..", "../../unrelated-app/config", "a/../../..", "/", "", ".", " x",
    "x/y", "%2e%2e", "..%2f..", "a\x00b", "\u2025", "x" * 65536,
]  # fmt: skip


async def _outside(kv: KV, prefix: str) -> dict[str, tuple[bytes, int]]:
    return {
        e.key: (e.value, e.modify_index) for e in await kv.list("") if not e.key.startswith(prefix)
    }


async def test_no_admin_call_reaches_a_key_outside_the_prefix(consul_addr, tmp_path) -> None:
    kv = KV(ConsulConfig(consul_addr))
    await kv.put("unrelated-app/config", b"keep me")
    await kv.put("unrelated-app/nested/deep", b"and me")
    procs = Procs(tmp_path)
    try:
        orch = procs.orchestrator(consul_addr, "--no-learning", *PYTHON_MODULES)
        before = await _outside(kv, procs.kv_prefix)
        async with MeshServeClient(orch.address, token=TOKEN) as client:
            plan = plan_pb2.Plan(name="confined", python="examples.programmatic:pipeline")
            await client.apply_plan(plan)
            for name in HOSTILE:
                calls = [
                    client.delete_plan(name),
                    client.rollback_plan(name, 1),
                    client.get_plan(name),
                    client.apply_plan(plan_pb2.Plan(name=name, python=plan.python)),
                    client.set_traffic_split(name, {"1": 1.0}),
                    client.drain_endpoint(name, name),
                ]
                for call in calls:
                    with pytest.raises(MeshServeError) as err:
                        await call
                    assert err.value.code in (
                        grpc.StatusCode.INVALID_ARGUMENT,
                        grpc.StatusCode.NOT_FOUND,
                    ), (repr(name[:40]), call, err.value)
                    assert len(err.value.message) < 1024
            assert [p.name for p in await client.list_plans()] == ["confined"]
        assert await _outside(kv, procs.kv_prefix) == before
        assert (await kv.get("unrelated-app/config")).value == b"keep me"
    finally:
        procs.stop_all()
        await kv.delete("unrelated-app/", recurse=True)
        await kv.delete(procs.kv_prefix, recurse=True)
