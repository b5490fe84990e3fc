"""Leadership recovers by itself after every restart of a real Consul server (single node with
a data dir, restarted on the same ports): the session Consul kept is renewed again, or a new one
is made when Consul lost it, within 2 x TTL each time. Every other restart waits until a renewal
failed against the stopped server, so renewals are retried through the server's startup."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig
from meshserve.registry import (
    KV,
    BlockingOptions,
    ConsulConfig,
    LeaderElection,
    LeaderOptions,
    LeaderState,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RESTARTS = 5
TTL_S = 10.0
KEY = "meshserve/leader-restarts"


async def test_leadership_recovers_after_each_of_several_consul_server_restarts(
    tmp_path: Path,
) -> None:
    agent = ConsulAgent(
        ConsulAgentConfig(data_dir=str(tmp_path / "data"), log_path=str(tmp_path / "consul.log"))
    ).start()
    config = ConsulConfig(address=agent.address, request_timeout_s=2.0)
    watch = BlockingOptions(wait_s=5.0, backoff_initial_s=0.1, backoff_max_s=1.0)
    election = LeaderElection(
        config, KEY, "orch-1", ttl_s=TTL_S, options=LeaderOptions(watch=watch)
    )
    recoveries: list[tuple[float, bool]] = []  # (seconds after the start, same session)
    try:
        await election.start()
        assert await election.wait_until_leader(15)
        for restart in range(RESTARTS):
            before = election.session_id
            await asyncio.to_thread(agent.stop)
            if restart % 2 == 0:
                # Keep Consul down until a renewal has failed, so the retries run into the
                # restarted server's own recovery (no leader yet, state not replayed yet).
                assert await election.wait_for(
                    lambda: election.state is LeaderState.RECOVERING, TTL_S
                )
            started_at = time.monotonic()
            await asyncio.to_thread(agent.start)  # same ports, same data dir
            recovered = await election.wait_for(
                lambda since=started_at: (
                    election.state is LeaderState.LEADER
                    and election.is_leader
                    and election.renewed_at > since  # renewed on the restarted server
                ),
                2 * TTL_S,
            )
            elapsed = time.monotonic() - started_at
            assert recovered, (
                f"not leader again {elapsed:.1f}s after restart {len(recoveries) + 1} "
                f"(state {election.state.value}, transitions {dict(election.transitions)})"
            )
            recoveries.append((elapsed, election.session_id == before))
            async with KV(config) as kv:  # Consul agrees: our current session holds the key
                entry = await kv.get(KEY)
            assert entry is not None and entry.session == election.session_id
        print("leader recovery after each Consul restart (s, same session):",
              ", ".join(f"{t:.2f}{'' if same else ' new'}" for t, same in recoveries))  # fmt: skip
        assert (
            election.transitions[("recovering", "lost")] + election.transitions[("leader", "lost")]
            <= RESTARTS
        )
    finally:
        await election.stop()
        agent.stop()
    assert agent.process is None
