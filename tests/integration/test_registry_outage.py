"""A Consul agent stopped mid-watch and started again (a dev agent forgets everything)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig
from meshserve.registry import (
    BlockingOptions,
    ConsulConfig,
    Endpoint,
    EndpointWatcher,
    LeaderElection,
    LeaderOptions,
    ReconcileOptions,
    Registration,
    ServiceInstance,
)
from tests.integration.registry_helpers import no_leaked_registry_tasks  # noqa: F401
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVICE = "meshserve.v1.ModelService"


@pytest.fixture
def own_agent(tmp_path: Path) -> Iterator[ConsulAgent]:
    """A Consul agent of this test's own (never the shared one), stopped by PID."""
    agent = ConsulAgent(ConsulAgentConfig(log_path=str(tmp_path / "consul.log")))
    agent.start()
    yield agent
    agent.stop()
    assert agent.process is None


async def test_watch_serves_cache_during_outage_and_recovers(own_agent: ConsulAgent) -> None:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)

    config = ConsulConfig(address=own_agent.address, request_timeout_s=2.0)
    inst = ServiceInstance(
        name="outage-svc",
        instance_id=f"outage-svc-{port}",
        address="127.0.0.1",
        port=port,
        tags=("version=1",),
        grpc_health_service=SERVICE,
        check_interval_s=0.5,
        check_timeout_s=0.5,
    )
    reg = Registration(config, inst, options=ReconcileOptions(0.5, 0.1, 1.0))
    watch_opts = BlockingOptions(wait_s=5.0, backoff_initial_s=0.1, backoff_max_s=1.0)
    watcher = EndpointWatcher(config, "outage-svc", options=watch_opts)
    leader = LeaderElection(
        config, "meshserve/leader", "orch-1", ttl_s=10, options=LeaderOptions(watch=watch_opts)
    )
    try:
        await reg.start()
        await watcher.start()
        await leader.start()
        (before,) = await watcher.wait_for(lambda eps: len(eps) == 1, timeout_s=10)
        assert await leader.wait_until_leader(5)
        old_session = leader.session_id

        await asyncio.to_thread(own_agent.stop)
        await wait_until(lambda: watcher.failures >= 2, 10, "the watcher to notice the outage")
        await wait_until(lambda: not reg.registered, 10, "the registration to notice the outage")
        assert watcher.endpoints() == (before,)  # last known view still served

        restarted_at = time.monotonic()
        await asyncio.to_thread(own_agent.start)  # same ports, empty state
        await wait_until(lambda: reg.registrations >= 2, 15, "re-registration after the restart")
        await wait_until(
            lambda: (
                (watcher.last_success_at or 0) > restarted_at
                and len(watcher.endpoints()) == 1
                and not watcher.holding
            ),  # not the pre-restart view kept while registrations re-sync
            15,
            "a view of the re-registered instance from the restarted agent",
        )
        (after,) = watcher.endpoints()
        # The new agent knows no sessions: the election makes a new one and leads again.
        await wait_until(
            lambda: leader.is_leader and leader.session_id not in ("", old_session),
            15,
            "leadership with a new session on the restarted agent",
        )
        assert isinstance(after, Endpoint) and after.instance_id == inst.instance_id
        failures_after_restart = watcher.failures

        # The watch is live again: a health change on the new agent reaches it.
        await servicer.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        await watcher.wait_for(lambda eps: eps == (), timeout_s=10)
        assert watcher.failures == failures_after_restart  # no errors once recovered
    finally:
        await leader.stop()
        await watcher.stop()
        await reg.stop()
        await server.stop(grace=None)
