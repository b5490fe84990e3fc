"""The ACL token from ConsulConfig reaches a real ACL-enforcing Consul agent (default deny)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig
from meshserve.errors import PermissionDeniedError
from meshserve.registry import KV, ConsulConfig, list_services

pytestmark = pytest.mark.integration

MASTER_TOKEN = "5f1b0c52-6f2e-4f7a-9a7e-meshserve-test"
ACL_HCL = (
    'acl { enabled = true default_policy = "deny" enable_token_persistence = false '
    f'tokens {{ master = "{MASTER_TOKEN}" agent = "{MASTER_TOKEN}" }} }}'
)


@pytest.fixture(scope="module")
def acl_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsulAgent]:
    log = tmp_path_factory.mktemp("consul-acl") / "consul.log"
    agent = ConsulAgent(ConsulAgentConfig(log_path=str(log), extra_args=("-hcl", ACL_HCL)))
    agent.start()
    yield agent
    agent.stop()


async def test_token_is_sent_and_anonymous_calls_are_denied(acl_agent: ConsulAgent) -> None:
    with_token = ConsulConfig(address=acl_agent.address, token=MASTER_TOKEN)
    anonymous = ConsulConfig(address=acl_agent.address)

    async with KV(with_token) as kv:
        assert await kv.put("meshserve-acl/key", b"secret")
        entry = await kv.get("meshserve-acl/key")
        assert entry is not None and entry.value == b"secret"

    async with KV(anonymous) as kv:
        with pytest.raises(PermissionDeniedError, match="ACL token"):
            await kv.put("meshserve-acl/key", b"overwritten", strict=True)
        with pytest.raises(PermissionDeniedError):
            await kv.get("meshserve-acl/key")

    assert "consul" in await list_services(with_token)
