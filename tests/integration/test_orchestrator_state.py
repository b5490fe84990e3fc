"""Plans live in Consul KV: restarts keep every version, orchestrators share them; TLS works.

Uses python plans (no model replicas needed) and a dedicated plan-name prefix per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from meshserve.clients.sdk import MeshServeClient
from meshserve.errors import CheckAndSetError, NotFoundError
from meshserve.registry import KV, ConsulConfig
from meshserve.v1 import plan_pb2
from tests.integration.orchestrator_helpers import PYTHON_MODULES, TOKEN, Procs
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def procs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Procs]:
    with Procs(tmp_path_factory.mktemp("state")) as group:
        yield group


def _py_plan(name: str, description: str) -> plan_pb2.Plan:
    return plan_pb2.Plan(
        name=name, python="examples.programmatic:pipeline", description=description
    )


async def _wait_plan(
    client: MeshServeClient, name: str, version: int, timeout_s: float = 10.0
) -> None:

    async def active() -> bool:
        plans = {p.name: p for p in await client.list_plans()}
        return name in plans and plans[name].active_version == version

    await wait_until(active, timeout_s, f"{name} v{version}", 0.05, retry_on=())


async def test_restart_keeps_every_plan_and_version(procs: Procs, consul_addr: str):
    first = procs.orchestrator(consul_addr, "--no-learning", *PYTHON_MODULES)
    async with MeshServeClient(first.address, token=TOKEN) as client:
        for i in range(3):
            assert (await client.apply_plan(_py_plan("state-restart", f"v{i + 1}")))[1] == i + 1
        with pytest.raises(CheckAndSetError) as err:
            await client.apply_plan(_py_plan("state-restart", "stale"), expected_version=2)
        assert err.value.code == grpc.StatusCode.ABORTED
        assert await client.rollback_plan("state-restart", 1) == 4
        before = {p.name: (p.active_version, list(p.versions)) for p in await client.list_plans()}
    assert first.stop() == 0
    second = procs.orchestrator(consul_addr, "--no-learning", *PYTHON_MODULES)
    async with MeshServeClient(second.address, token=TOKEN) as client:
        after = {p.name: (p.active_version, list(p.versions)) for p in await client.list_plans()}
        assert after["state-restart"] == before["state-restart"] == (4, [1, 2, 3, 4])
        active = await client.get_plan("state-restart")
        assert (active.version, active.description) == (4, "v1")
        assert (await client.get_plan("state-restart", 3)).description == "v3"
        assert await client.delete_plan("state-restart") == 4
        with pytest.raises(NotFoundError) as err:
            await client.get_plan("state-restart")
        assert err.value.code == grpc.StatusCode.NOT_FOUND
    second.stop()


async def test_two_orchestrators_share_plans(procs: Procs, consul_addr: str):
    a = procs.orchestrator(consul_addr, "--no-learning", *PYTHON_MODULES)
    b = procs.orchestrator(consul_addr, "--no-learning", *PYTHON_MODULES)
    async with (
        MeshServeClient(a.address, token=TOKEN) as ca,
        MeshServeClient(b.address, token=TOKEN) as cb,
    ):
        name, version = await ca.apply_plan(_py_plan("state-shared", "from a"))
        await _wait_plan(cb, name, version)
        name, version = await cb.apply_plan(_py_plan("state-shared", "from b"))
        await _wait_plan(ca, name, version)
        assert (await ca.get_plan(name)).description == "from b"
        # concurrent writers: every apply gets its own version, none is lost
        results = await asyncio.gather(
            *(c.apply_plan(_py_plan(name, f"race {i}")) for i, c in enumerate([ca, cb] * 3))
        )
        assert sorted(v for _, v in results) == list(range(version + 1, version + 7))
        await _wait_plan(ca, name, version + 6)
        await _wait_plan(cb, name, version + 6)
        stats = [await ca.stats(), await cb.stats()]
        assert sum(s.leader for s in stats) <= 1
        assert {s.instance_id for s in stats} == {s.instance_id for s in stats if s.instance_id}
        await ca.delete_plan(name)
    a.stop()
    b.stop()


async def test_wiped_kv_is_re_persisted_and_deletes_still_propagate(procs: Procs, consul_addr: str):
    """A KV that lost the plans (a restarted dev agent keeps nothing) gets them back from the
    orchestrators' memory; a plan deleted through Admin stays deleted everywhere."""
    a = procs.orchestrator(consul_addr, "--no-learning", *PYTHON_MODULES)
    b = procs.orchestrator(consul_addr, "--no-learning", *PYTHON_MODULES)
    async with (
        MeshServeClient(a.address, token=TOKEN) as ca,
        MeshServeClient(b.address, token=TOKEN) as cb,
        KV(ConsulConfig(address=consul_addr)) as kv,
    ):
        for i in range(2):
            await ca.apply_plan(_py_plan("state-wiped", f"v{i + 1}"))
        await ca.apply_plan(_py_plan("state-doomed", "v1"))
        await ca.set_traffic_split("wiped-model", {"1": 1.0})
        await _wait_plan(cb, "state-wiped", 2)
        await kv.delete(procs.kv_prefix, recurse=True)  # everything of this group, marker too

        async def restored() -> bool:
            keys = {e.key[len(procs.kv_prefix) :] for e in await kv.list(procs.kv_prefix)}
            want = {"plans/state-wiped/1", "plans/state-wiped/2", "plans/state-wiped/active"}
            return want <= keys and "traffic/wiped-model" in keys and "plans/.store" in keys

        await wait_until(restored, 15, "the wiped KV state restored from memory", retry_on=())
        for client in (ca, cb):  # served from memory all along
            assert (await client.get_plan("state-wiped")).description == "v2"
            policies = await client.list_traffic_policies()
            assert [p.model for p in policies] == ["wiped-model"]
        assert (await ca.apply_plan(_py_plan("state-wiped", "v3")))[1] == 3  # no number reused
        await cb.delete_plan("state-doomed")

        async def deleted() -> bool:
            return "state-doomed" not in {p.name for p in await ca.list_plans()}

        await wait_until(deleted, 10, "a deletion through b to reach a", 0.05, retry_on=())
        await ca.delete_plan("state-wiped")
    a.stop()
    b.stop()
