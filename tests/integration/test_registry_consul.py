"""The registry against a real Consul agent (1.8.7 here) and real in-process gRPC servers."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshserve.errors import CheckAndSetError, InvalidInputError
from meshserve.registry import (
    KV,
    BlockingOptions,
    ConsulConfig,
    EndpointWatcher,
    KVEntry,
    KVIntegrityError,
    LeaderElection,
    LeaderOptions,
    Registration,
    ServiceInstance,
    list_services,
)
from meshserve.registry.client import ConsulClient
from tests.integration.registry_helpers import no_leaked_registry_tasks  # noqa: F401

pytestmark = pytest.mark.integration

SERVICE = "meshserve.v1.ModelService"
FAST = BlockingOptions(wait_s=5.0, min_interval_s=0.05, backoff_initial_s=0.1, backoff_max_s=1.0)


@dataclass
class HealthServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int

    async def set(self, status: int) -> None:
        await self.health.set(SERVICE, status)


@pytest.fixture
async def health_server() -> AsyncIterator[HealthServer]:
    """A real grpc.aio server on a port the OS picked, serving grpc.health.v1."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    yield HealthServer(server, servicer, port)
    await server.stop(grace=None)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def instance_for(name: str, port: int, version: str = "1") -> ServiceInstance:
    return ServiceInstance(
        name=name,
        instance_id=f"{name}-127.0.0.1-{port}",
        address="127.0.0.1",
        port=port,
        tags=("meshserve-model", f"version={version}"),
        meta={"version": version, "batch_max": "32"},
        grpc_health_service=SERVICE,
        check_interval_s=0.5,
        check_timeout_s=0.5,
        deregister_critical_after_s=60.0,
    )


async def test_registered_service_passes_is_discovered_and_disappears(
    consul_addr: str, health_server: HealthServer
) -> None:
    config = ConsulConfig(address=consul_addr)
    name = unique("svc")
    inst = instance_for(name, health_server.port, version="3")
    watcher = EndpointWatcher(config, name, tag="meshserve-model", options=FAST)
    changes: list[tuple[str, ...]] = []
    watcher.subscribe(lambda eps: changes.append(tuple(e.instance_id for e in eps)))
    await watcher.start()
    assert watcher.loaded and watcher.endpoints() == ()
    reg = Registration(config, inst)
    try:
        await reg.start()
        # Critical until Consul's own gRPC check passes; then the blocking query wakes up.
        (ep,) = await watcher.wait_for(lambda eps: len(eps) == 1, timeout_s=10)
        assert (ep.instance_id, ep.target, ep.version) == (
            inst.instance_id,
            f"127.0.0.1:{inst.port}",
            "3",
        )
        assert ep.meta["batch_max"] == "32" and "meshserve-model" in ep.tags
        assert watcher._query.index > 1  # a real blocking index was fed back

        services = await list_services(config)
        assert services[name] == ["meshserve-model", "version=3"]

        await health_server.set(health_pb2.HealthCheckResponse.NOT_SERVING)
        await watcher.wait_for(lambda eps: eps == (), timeout_s=10)
        await health_server.set(health_pb2.HealthCheckResponse.SERVING)
        await watcher.wait_for(lambda eps: len(eps) == 1, timeout_s=10)
    finally:
        await reg.stop()
    await watcher.wait_for(lambda eps: eps == (), timeout_s=10)
    await watcher.stop()
    assert changes[0] == () and changes[-1] == ()
    assert (inst.instance_id,) in changes
    assert name not in await list_services(config)  # stop() deregistered it


async def test_kv_cas_rejects_stale_index(consul_addr: str) -> None:
    async with KV(ConsulConfig(address=consul_addr)) as kv:
        key = f"test/{unique('cas')}"
        assert await kv.put(key, b"v1", cas=0)  # create-only
        assert not await kv.put(key, b"again", cas=0)  # exists: create-only fails
        first = await kv.get(key)
        assert first is not None and first.value == b"v1"
        assert await kv.put(key, b"v2", cas=first.modify_index)
        assert not await kv.put(key, b"v3", cas=first.modify_index)  # stale index
        with pytest.raises(CheckAndSetError, match="changed since ModifyIndex"):
            await kv.put(key, b"v3", cas=first.modify_index, strict=True)
        current = await kv.get(key)
        assert current is not None and current.value == b"v2"
        assert not await kv.delete(key, cas=first.modify_index)
        assert await kv.delete(key, cas=current.modify_index)
        assert await kv.get(key) is None
        with pytest.raises(InvalidInputError, match=r"use KV\.put_large"):
            await kv.put(key, b"x" * (600 * 1024))


async def test_kv_large_value_round_trip_and_checksum(consul_addr: str) -> None:
    async with KV(ConsulConfig(address=consul_addr)) as kv:
        key = f"test/{unique('large')}"
        value = os.urandom(1_300_000)
        assert await kv.put_large(key, value, cas=0) == 3
        assert await kv.get_large(key) == value
        with pytest.raises(CheckAndSetError):
            await kv.put_large(key, b"other", cas=0)  # manifest is create-only with cas=0
        manifest = await kv.get(key)
        assert manifest is not None
        smaller = os.urandom(700_000)
        assert await kv.put_large(key, smaller, cas=manifest.modify_index) == 2
        assert await kv.get_large(key) == smaller
        assert [e.key.rsplit("/", 1)[-1] for e in await kv.list(f"{key}/chunks/")] == ["0", "1"]
        # Corrupt one chunk behind the manifest's back: the reader must notice.
        await kv.put(f"{key}/chunks/1", b"tampered")
        with pytest.raises(KVIntegrityError, match="corrupt"):
            await kv.get_large(key)
        assert await kv.get_large(f"test/{unique('absent')}") is None
        await kv.delete(key, recurse=True)


async def test_kv_watch_sees_changes(consul_addr: str) -> None:
    prefix = f"test/{unique('watch')}/"
    async with KV(ConsulConfig(address=consul_addr), watch_options=FAST) as kv:
        seen: asyncio.Queue[list[KVEntry]] = asyncio.Queue()

        async def consume() -> None:
            async for entries in kv.watch(prefix):
                await seen.put(entries)

        task = asyncio.create_task(consume())
        try:
            assert await asyncio.wait_for(seen.get(), 5) == []
            await kv.put(prefix + "a", b"1")
            got = await asyncio.wait_for(seen.get(), 5)
            assert [(e.key, e.value) for e in got] == [(prefix + "a", b"1")]
            await kv.put(prefix + "b", "2")
            got = await asyncio.wait_for(seen.get(), 5)
            assert [e.value for e in got] == [b"1", b"2"]
            await kv.delete(prefix + "a")
            got = await asyncio.wait_for(seen.get(), 5)
            assert [e.key for e in got] == [prefix + "b"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await kv.delete(prefix, recurse=True)


async def _a_leads_b_follows(
    consul_addr: str, label: str
) -> tuple[ConsulConfig, str, LeaderElection, LeaderElection]:
    """Two candidates for one fresh lock key: `a` started and leading, then `b` started."""
    config = ConsulConfig(address=consul_addr)
    key = f"test/{unique(label)}"
    opts = LeaderOptions(lock_delay_s=0, watch=FAST)
    a = LeaderElection(config, key, "node-a", ttl_s=10, options=opts)
    b = LeaderElection(config, key, "node-b", ttl_s=10, options=opts)
    await a.start()
    assert await a.wait_until_leader(5)
    await b.start()
    return config, key, a, b


async def test_leader_election_one_leader_then_takeover(consul_addr: str) -> None:
    config, key, a, b = await _a_leads_b_follows(consul_addr, "leader")
    assert not await b.wait_until_leader(1.0)
    assert a.is_leader and not b.is_leader
    assert b.leader_id == "node-a"
    first_fence = a.lock_index
    assert first_fence > 0 and b.lock_index == 0

    a_session = a.session_id
    await a.stop()  # destroys a's session: the lock is released at once
    assert await b.wait_until_leader(5)
    assert not a.is_leader
    assert b.lock_index > first_fence  # fencing tokens grow across leaders
    async with KV(config) as kv:
        entry = await kv.get(key)
        assert entry is not None and entry.session == b.session_id and entry.value == b"node-b"
    b_session = b.session_id
    await b.stop()
    async with KV(config) as kv:
        entry = await kv.get(key)
        assert entry is not None and entry.session == ""  # released, not held by a dead session
        await kv.delete(key)
    async with ConsulClient(config) as client:
        _, sessions = await client.call("list sessions", lambda c: c.session.list())
    ids = {s["ID"] for s in sessions}
    assert not ids & {a_session, b_session}  # teardown leaked no session
    with pytest.raises(InvalidInputError, match="between 10 and 86400"):
        LeaderElection(config, key, "node-c", ttl_s=1)


@pytest.mark.slow
async def test_leader_lock_released_when_holder_stops_renewing(consul_addr: str) -> None:
    config, key, a, b = await _a_leads_b_follows(consul_addr, "ttl")
    # "Kill" a: its tasks stop (no renewals, no release), its session is left to expire.
    for task in a._tasks:
        task.cancel()
    await asyncio.gather(*a._tasks, return_exceptions=True)
    a._tasks, a._session_id = [], ""
    started = time.monotonic()
    assert await b.wait_until_leader(35)  # Consul expires a TTL session within 2 x TTL
    assert time.monotonic() - started >= 5  # it really was the TTL, not a release
    await b.stop()
    await a.stop()
    async with KV(config) as kv:
        await kv.delete(key)
