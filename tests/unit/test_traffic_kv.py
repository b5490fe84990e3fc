"""The one writer of traffic policies: validated, check-and-set, restore never overrides."""

from __future__ import annotations

import pytest

from meshserve.errors import CheckAndSetError, InvalidInputError
from meshserve.orchestrator.traffic import TrafficPolicy
from meshserve.orchestrator.traffic_kv import CAS_ATTEMPTS, TrafficPolicies, decode_policy
from tests.unit.memkv import Entry, MemoryKV

PREFIX = "app/traffic/"


class RacingKV(MemoryKV):
    """Another writer changes the key between every read and write."""

    async def get(self, key: str) -> Entry | None:
        entry = await super().get(key)
        await super().put(key, b'{"model": "m", "version_weights": {"9": 1.0}}')
        return entry


async def test_write_stores_json_under_the_prefix_with_cas() -> None:
    kv = MemoryKV()
    policies = TrafficPolicies(kv, PREFIX)
    await policies.write(TrafficPolicy("m", {"1": 0.25, "2": 0.75}, sticky=True))
    await policies.write(TrafficPolicy("m", {"2": 1.0}))
    entry = kv.data[PREFIX + "m"]
    assert decode_policy(entry) == TrafficPolicy("m", {"2": 1.0})
    assert kv.puts == 2


async def test_write_refuses_an_invalid_policy_before_touching_the_kv() -> None:
    kv = MemoryKV()
    with pytest.raises(InvalidInputError, match="weight"):
        await TrafficPolicies(kv, PREFIX).write(TrafficPolicy("m", {"1": -1.0}))
    assert kv.puts == 0


async def test_write_gives_up_after_the_cas_budget_against_a_racing_writer() -> None:
    kv = RacingKV()
    with pytest.raises(CheckAndSetError, match="concurrent writers"):
        await TrafficPolicies(kv, PREFIX).write(TrafficPolicy("m", {"1": 1.0}))
    assert kv.puts == CAS_ATTEMPTS  # only the racing writer's puts landed


async def test_restore_creates_a_missing_policy_but_never_overrides() -> None:
    kv = MemoryKV()
    policies = TrafficPolicies(kv, PREFIX)
    await policies.restore(TrafficPolicy("m", {"1": 1.0}))
    await policies.restore(TrafficPolicy("m", {"2": 1.0}))
    assert decode_policy(kv.data[PREFIX + "m"]).version_weights == {"1": 1.0}


async def test_rollout_deployer_publishes_through_the_writer(tmp_path) -> None:
    from meshserve.orchestrator.learning.rollout import DeployConfig, ProcessDeployer
    from meshserve.registry import ConsulConfig

    kv = MemoryKV()
    policies = TrafficPolicies(kv, PREFIX)
    deployer = ProcessDeployer(ConsulConfig(), DeployConfig(work_dir=str(tmp_path)), policies.write)
    await deployer.set_traffic("m", {"3": 1.0})
    assert decode_policy(kv.data[PREFIX + "m"]) == TrafficPolicy("m", {"3": 1.0})
    with pytest.raises(InvalidInputError):
        await deployer.set_traffic("m", {})
