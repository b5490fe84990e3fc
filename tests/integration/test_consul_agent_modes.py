"""The local Consul agent's two modes: a dev agent forgets everything when it restarts, a
single-node server with a data dir (``meshserve up --consul-data-dir``) keeps its KV."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig
from meshserve.registry import KV, ConsulConfig

pytestmark = [pytest.mark.integration]


async def _restart_and_read(agent: ConsulAgent) -> bytes | None:
    async with KV(ConsulConfig(address=agent.address)) as kv:
        assert await kv.put("meshserve/plans/kept/1", b"plan")
    agent.stop()
    agent.start()  # same ports
    async with KV(ConsulConfig(address=agent.address)) as kv:
        entry = await kv.get("meshserve/plans/kept/1")
    return None if entry is None else entry.value


async def test_server_agent_with_data_dir_keeps_kv_across_restart(tmp_path: Path) -> None:
    config = ConsulAgentConfig(data_dir=str(tmp_path / "data"), log_path=str(tmp_path / "log"))
    agent = ConsulAgent(config).start()
    try:
        assert await _restart_and_read(agent) == b"plan"
    finally:
        agent.stop()
    assert agent.process is None


async def test_dev_agent_forgets_kv_on_restart(tmp_path: Path) -> None:
    agent = ConsulAgent(ConsulAgentConfig(log_path=str(tmp_path / "log"))).start()
    try:
        assert await _restart_and_read(agent) is None
    finally:
        agent.stop()
