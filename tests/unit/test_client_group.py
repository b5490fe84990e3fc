"""The SDK's orchestrator group: targets parsed, round robin over the endpoints that are up, a
failed endpoint tried last until its down time passes (injected clock; channels never connect)."""

from __future__ import annotations

import pytest

from meshserve.clients.group import OrchestratorGroup, parse_targets
from meshserve.errors import InvalidInputError, MeshError


def test_targets_are_parsed():
    assert parse_targets("a:1") == (("a:1",), "", "meshserve-orchestrator")
    assert parse_targets("a:1, b:2,a:1") == (("a:1", "b:2"), "", "meshserve-orchestrator")
    assert parse_targets(["a:1", "consul://c:8500/orch"]) == (("a:1",), "c:8500", "orch")
    assert parse_targets("consul://c:8500") == ((), "c:8500", "meshserve-orchestrator")
    with pytest.raises(InvalidInputError, match="expected HOST:PORT"):
        parse_targets(" , ")


async def test_round_robin_skips_down_endpoints_until_they_recover():
    now = [0.0]
    group = OrchestratorGroup("a:1,b:2,c:3", down_s=5.0, clock=lambda: now[0])
    try:
        firsts = [(await group.order())[0].target for _ in range(6)]
        assert firsts == ["a:1", "b:2", "c:3", "a:1", "b:2", "c:3"]
        b = next(e for e in group.endpoints if e.target == "b:2")
        group.mark_down(b)
        orders = [[e.target for e in await group.order()] for _ in range(3)]
        assert all(order[-1] == "b:2" for order in orders)  # tried last, never dropped
        assert {order[0] for order in orders} == {"a:1", "c:3"}
        now[0] = 5.0
        assert "b:2" in {(await group.order())[0].target for _ in range(3)}
    finally:
        await group.close()


async def test_a_consul_outage_keeps_the_known_endpoints():
    now = [0.0]
    # nothing listens on port 1: discovery fails at once
    group = OrchestratorGroup("a:1,consul://127.0.0.1:1", refresh_s=0.0, clock=lambda: now[0])
    try:
        assert [e.target for e in await group.order()] == ["a:1"]
    finally:
        await group.close()
    lonely = OrchestratorGroup("consul://127.0.0.1:1", clock=lambda: now[0])
    with pytest.raises(MeshError):
        await lonely.order()
    await lonely.close()
