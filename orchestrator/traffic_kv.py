"""Traffic policies in Consul KV: the one codec and the one writer of ``<prefix>traffic/<model>``.

Every write of a policy goes through `TrafficPolicies.write`: the policy is validated, then
stored with check-and-set against the entry it read (a concurrent writer makes it re-read and
try again, at most `CAS_ATTEMPTS` times, then CheckAndSetError). The plan store's Admin path
(`SetTrafficSplit`) and the learners' rollouts both use it, so both follow the same rules.
`restore` re-creates a policy the KV lost (``cas=0``: whatever another writer stored meanwhile
wins). The value is JSON ``{"model", "version_weights", "sticky"}`` with sorted keys.
"""

from __future__ import annotations

import builtins
import json
from typing import Protocol

from meshserve.errors import CheckAndSetError
from meshserve.names import kv_key
from meshserve.orchestrator.traffic import TrafficPolicy
from meshserve.registry import KVEntry

__all__ = ["CAS_ATTEMPTS", "PolicyKV", "TrafficPolicies", "decode_policy", "encode_policy"]

CAS_ATTEMPTS = 8


def encode_policy(policy: TrafficPolicy) -> str:
    """The KV value of `policy`."""
    body = {
        "model": policy.model,
        "version_weights": dict(policy.version_weights),
        "sticky": policy.sticky,
    }
    return json.dumps(body, sort_keys=True)


def decode_policy(entry: KVEntry) -> TrafficPolicy:
    """The policy stored in `entry`; ValueError, KeyError or TypeError when it is unreadable."""
    raw = json.loads(entry.value)
    return TrafficPolicy(
        model=raw["model"],
        version_weights={str(k): float(v) for k, v in raw["version_weights"].items()},
        sticky=bool(raw.get("sticky", False)),
    )


class PolicyKV(Protocol):
    """The part of meshserve.registry.KV traffic policies need."""

    async def get(self, key: str) -> KVEntry | None: ...
    async def put(self, key: str, value: bytes | str, cas: int | None = None) -> bool: ...
    async def list(self, prefix: str) -> builtins.list[KVEntry]: ...


class TrafficPolicies:
    """Reads and writes the traffic policies under `prefix` (``<kv_prefix>traffic/``)."""

    def __init__(self, kv: PolicyKV, prefix: str) -> None:
        self.kv = kv
        self.prefix = prefix

    def key(self, model: str) -> str:
        return kv_key(self.prefix, model)

    async def write(self, policy: TrafficPolicy) -> None:
        """Validate and store `policy` with check-and-set (see the module docstring)."""
        policy.validate()
        key = self.key(policy.model)
        value = encode_policy(policy)
        for _ in range(CAS_ATTEMPTS):
            entry = await self.kv.get(key)
            if await self.kv.put(key, value, cas=entry.modify_index if entry else 0):
                return
        raise CheckAndSetError(f"traffic policy of '{policy.model}': too many concurrent writers")

    async def restore(self, policy: TrafficPolicy) -> None:
        """Create `policy`'s key when it is missing (a KV that lost its state)."""
        await self.kv.put(self.key(policy.model), encode_policy(policy), cas=0)

    async def list(self) -> list[KVEntry]:
        return await self.kv.list(self.prefix)
