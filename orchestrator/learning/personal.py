"""Personalised bandits: arm statistics per user (or group), bounded in memory, durable in KV.

A bandit step with ``personalize_by`` keeps one set of arm statistics per user key (the request's
``routing_key`` or an attribute). Each user is one small KV document
``<P>learning-personal/<plan>/<step>/<h[:2]>/<h[2:34]>`` (h = sha256 of the key: 256 folders, so
no listing is ever large), written with check-and-set together with the feedback marker in one
transaction (feedback.py). A document holds the arms' counters only (bounded size, no history).
In memory an LRU keeps at most `max_users_in_memory` users; a user not in it (or cached longer
than `cache_ttl_s`, since another orchestrator may have rewarded it) is read from KV. A reward
costs one read only when the user is not cached, then one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from meshserve.errors import InvalidInputError
from meshserve.names import kv_key
from meshserve.orchestrator.learning.bandits import ArmState
from meshserve.orchestrator.learning.store import StateStore

__all__ = ["PersonalConfig", "PersonalStore"]

UserArms = dict[str, ArmState]


@dataclass(frozen=True)
class PersonalConfig:
    """Bounds of the per-user bandit state (module docstring)."""

    max_users_in_memory: int = 1_000
    cache_ttl_s: float = 10.0
    max_user_key_chars: int = 200


def _arm_json(s: ArmState) -> list[float]:
    return [s.pulls, s.updates, s.reward_sum, s.alpha, s.beta]


def _arm_from(v: list[float]) -> ArmState:
    return ArmState(int(v[0]), int(v[1]), float(v[2]), float(v[3]), float(v[4]))


def _arms_from(doc: Mapping[str, Any]) -> UserArms:
    return {str(a): _arm_from(v) for a, v in doc.get("arms", {}).items()}


class PersonalStore:
    """The per-user arm statistics of one bandit step (module docstring)."""

    def __init__(
        self,
        store: StateStore,
        prefix: str,
        plan: str,
        step: str,
        config: PersonalConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or PersonalConfig()
        self._store = store
        self._prefix, self._plan, self._step = prefix, plan, step
        self._clock, self._wall = clock, wall_clock
        self._cache: OrderedDict[str, tuple[float, UserArms]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    def __len__(self) -> int:
        """Users held in memory (at most `max_users_in_memory`)."""
        return len(self._cache)

    def user_key(self, user: str) -> str:
        """The KV key of `user`'s document."""
        h = hashlib.sha256(user.encode()).hexdigest()
        return kv_key(self._prefix, self._plan, self._step, h[:2], h[2:34])

    def lock(self, user: str) -> asyncio.Lock:
        """The lock serialising this process's writes of one user (dropped with its entry)."""
        return self._locks.setdefault(user, asyncio.Lock())

    def check(self, user: str) -> None:
        if len(user) > self.config.max_user_key_chars:
            raise InvalidInputError(
                f"user key {user[:40]!r}... is {len(user)} characters; at most "
                f"{self.config.max_user_key_chars}"
            )

    async def arms(self, user: str) -> UserArms:
        """The user's arm statistics (from memory, else from KV)."""
        self.check(user)
        cached = self._cache.get(user)
        if cached is not None and self._clock() - cached[0] <= self.config.cache_ttl_s:
            self._cache.move_to_end(user)
            return cached[1]
        doc = await self._store.load(self.user_key(user)) or {}
        arms = _arms_from(doc)
        self._remember(user, arms)
        return arms

    def count_pull(self, user: str, arm: str) -> None:
        """A local pull count (not persisted until the user is rewarded)."""
        cached = self._cache.get(user)
        if cached is not None:
            current = cached[1].get(arm, ArmState())
            cached[1][arm] = replace(current, pulls=current.pulls + 1)

    def rewarded_doc(self, user: str, arm: str, reward: float) -> dict[str, Any]:
        """The user's document with one reward for `arm`, from the cached statistics."""
        cached = self._cache.get(user)
        arms = dict(cached[1]) if cached else {}
        arms[arm] = arms.get(arm, ArmState()).rewarded(reward)
        return {
            "user": user,
            "t": self._wall(),
            "arms": {a: _arm_json(s) for a, s in sorted(arms.items())},
        }

    def adopt(self, user: str, doc: Mapping[str, Any]) -> None:
        """Cache what a stored document says of `user` (after a write or a reload)."""
        self._remember(user, _arms_from(doc))

    def _remember(self, user: str, arms: UserArms) -> None:
        self._cache[user] = (self._clock(), arms)
        self._cache.move_to_end(user)
        while len(self._cache) > self.config.max_users_in_memory:
            evicted, _ = self._cache.popitem(last=False)
            self._store.forget(self.user_key(evicted))
            lock = self._locks.get(evicted)
            if lock is not None and not lock.locked():
                del self._locks[evicted]
