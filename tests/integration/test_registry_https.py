"""ConsulConfig's HTTPS settings reach a real Consul agent serving its API over TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig, free_port
from meshserve.errors import UnavailableError
from meshserve.registry import KV, ConsulConfig
from tests.certs import self_signed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def https_agent(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ConsulAgent, int, Path]]:
    tmp = tmp_path_factory.mktemp("consul-https")
    cert, key = self_signed(tmp, "consul")
    port = free_port()
    hcl = f'ports {{ https = {port} }} cert_file = "{cert}" key_file = "{key}" ca_file = "{cert}"'
    agent = ConsulAgent(
        ConsulAgentConfig(log_path=str(tmp / "consul.log"), extra_args=("-hcl", hcl))
    )
    agent.start()
    yield agent, port, cert
    agent.stop()


async def test_https_with_ca_works_and_unverified_server_is_refused(
    https_agent: tuple[ConsulAgent, int, Path],
) -> None:
    _, port, cert = https_agent
    trusted = ConsulConfig(address=f"https://127.0.0.1:{port}", ca_file=str(cert))
    async with KV(trusted) as kv:
        assert await kv.put("meshserve-https/key", b"over tls")
        entry = await kv.get("meshserve-https/key")
        assert entry is not None and entry.value == b"over tls"

    untrusted = ConsulConfig(address=f"https://127.0.0.1:{port}", request_timeout_s=3)
    async with KV(untrusted) as kv:
        with pytest.raises(UnavailableError, match=r"unreachable|failed"):
            await kv.get("meshserve-https/key")
