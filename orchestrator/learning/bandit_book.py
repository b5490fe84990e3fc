"""The bandit steps of one learning hub: choices, rewards (plain, contextual, per user), resets.

`BanditBook` keeps each step's state in memory and writes it through the hub's check-and-set
save (with the feedback marker: feedback.py). A reward's record value is ``(context, arm)``,
``(context, arm, features)`` for contextual policies or ``(user, arm, PERSONAL)`` for
personalised steps (personal.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from meshserve.orchestrator.learning.bandits import (
    ArmState,
    BanditState,
    choose,
    normalise_policy,
)
from meshserve.orchestrator.learning.config import HubConfig
from meshserve.orchestrator.learning.decisions import Record
from meshserve.orchestrator.learning.personal import PersonalStore
from meshserve.orchestrator.learning.store import StateStore, bandit_key

__all__ = ["PERSONAL", "BanditBook", "SaveFn"]

PERSONAL = "personal"  # third item of a personalised bandit record: (user, arm, PERSONAL)

# The hub's check-and-set save: (key, build, encode, reload, marker) -> saved or None (marker
# existed).
SaveFn = Callable[..., Awaitable[Any]]


@dataclass
class _Bandit:
    plan: str
    step: str
    state: BanditState = field(default_factory=BanditState)
    rng: np.random.Generator | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    personal: PersonalStore | None = None


class BanditBook:
    """Every bandit step this hub has seen (module docstring)."""

    def __init__(
        self,
        store: StateStore,
        config: HubConfig,
        save: SaveFn,
        remember: Callable[[str, Record], None],
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ) -> None:
        self._store = store
        self.config = config
        self._save_cas = save
        self._remember = remember
        self._clock = clock
        self._wall = wall_clock
        self.bandits: dict[tuple[str, str], _Bandit] = {}

    def states(self) -> dict[tuple[str, str], BanditState]:
        return {k: b.state for k, b in self.bandits.items()}

    async def reload_key(self, key: str, plan: str, step: str) -> None:
        bandit = self._bandit(plan, step)
        async with bandit.lock:
            data = await self._store.load(key)
            if data is not None:
                self._adopt_bandit(bandit, data)

    def _bandit(self, plan: str, step: str) -> _Bandit:
        bandit = self.bandits.get((plan, step))
        if bandit is None:
            bandit = _Bandit(plan, step)
            self.bandits[(plan, step)] = bandit
        return bandit

    async def choose(
        self,
        *,
        plan: str,
        step: str,
        arms: Sequence[str],
        policy: str | int,
        epsilon: float,
        context: str,
        request_id: str,
        seed: int,
        features: Sequence[float] | None = None,
        exploration: float = 0.0,
        user: str = "",
    ) -> str:
        """The arm serving this request; remembered under `request_id` for feedback (with the
        features, which a contextual policy learns from). With `user`, the statistics are that
        user's (personal.py)."""
        name = normalise_policy(policy)
        bandit = self._bandit(plan, step)
        if bandit.rng is None:
            bandit.rng = np.random.default_rng(seed)
        if user:
            return await self._choose_personal(bandit, user, arms, name, epsilon, request_id)
        x = None if features is None else [float(v) for v in features]
        arm = choose(
            bandit.state, context, list(arms), name, epsilon, bandit.rng,
            features=x, exploration=exploration,
        )  # fmt: skip
        current = bandit.state.get(context, arm)
        bandit.state.arms[(context, arm)] = replace(current, pulls=current.pulls + 1)
        if request_id:
            value = (context, arm) if x is None else (context, arm, tuple(x))
            self._remember(request_id, Record("bandit", f"{plan}/{step}", value))
        return arm

    def personal_store(self, plan: str, step: str) -> PersonalStore:
        bandit = self._bandit(plan, step)
        if bandit.personal is None:
            bandit.personal = PersonalStore(
                self._store, self.config.personal_prefix, plan, step, self.config.personal,
                clock=self._clock, wall_clock=self._wall,
            )  # fmt: skip
        return bandit.personal

    async def _choose_personal(
        self,
        bandit: _Bandit,
        user: str,
        arms: Sequence[str],
        policy: str,
        epsilon: float,
        request_id: str,
    ) -> str:
        personal = self.personal_store(bandit.plan, bandit.step)
        stats = await personal.arms(user)
        state = BanditState({(user, a): s for a, s in stats.items()})
        assert bandit.rng is not None
        arm = choose(state, user, list(arms), policy, epsilon, bandit.rng)
        personal.count_pull(user, arm)
        if request_id:
            value = (user, arm, PERSONAL)
            key = f"{bandit.plan}/{bandit.step}"
            self._remember(request_id, Record("bandit", key, value))
        return arm

    async def personal_arms(self, plan: str, step: str, user: str) -> dict[str, ArmState]:
        """One user's arm statistics of a personalised bandit (admin, tests)."""
        return dict(await self.personal_store(plan, step).arms(user))

    async def _reward_personal(
        self, plan: str, step: str, user: str, arm: str, reward: float, marker: tuple[str, bytes]
    ) -> bool:
        personal = self.personal_store(plan, step)
        key = personal.user_key(user)
        async with personal.lock(user):
            await personal.arms(user)  # cached, else read (sets the CAS index)
            saved = await self._save_cas(
                key, lambda: personal.rewarded_doc(user, arm, reward), lambda d: d,
                lambda data: personal.adopt(user, data), marker,
            )  # fmt: skip
            if saved is None:
                return False
            personal.adopt(user, saved)
        return True

    async def reward(self, record: Record, reward: float, marker: tuple[str, bytes]) -> bool:
        """Apply `reward` to the arm in `record` with its marker; False: applied before."""
        plan, _, step = record.key.rpartition("/")
        if len(record.value) > 2 and record.value[2] == PERSONAL:
            user, arm = record.value[0], record.value[1]
            return await self._reward_personal(plan, step, user, arm, reward, marker)
        context, arm = record.value[0], record.value[1]
        features = record.value[2] if len(record.value) > 2 else None  # contextual
        bandit = self._bandit(plan, step)
        key = bandit_key(plan, step, self.config.kv_prefix)

        def draft_from(state: BanditState) -> BanditState:
            return state.rewarded(context, arm, reward, features)

        def reload(data: dict[str, Any]) -> None:
            self._adopt_bandit(bandit, data)

        async with bandit.lock:
            draft = await self._save_cas(
                key, lambda: draft_from(bandit.state), lambda d: d.to_json(), reload, marker
            )
            if draft is None:
                return False
            rewarded = draft.get(context, arm)
            current = bandit.state.get(context, arm)  # choices made meanwhile count as pulls
            bandit.state.arms[(context, arm)] = replace(
                rewarded, pulls=max(current.pulls, rewarded.pulls)
            )
            if features is not None:
                bandit.state.linear[(context, arm)] = draft.linear[(context, arm)]
        return True

    @staticmethod
    def _adopt_bandit(bandit: _Bandit, data: Mapping[str, Any]) -> None:
        """Take the stored posteriors, keeping local pull counts (choices not yet rewarded)."""
        old = bandit.state
        pulls = {k: s.pulls for k, s in old.arms.items()}
        bandit.state = BanditState.from_json(data)
        if bandit.state.generation != old.generation:
            return  # reset meanwhile: the old pull counts are gone too
        for k, s in bandit.state.arms.items():
            bandit.state.arms[k] = replace(s, pulls=max(s.pulls, pulls.get(k, 0)))

    async def reset(self, plan: str, step: str) -> bool:
        """Write an empty state (a new generation) for `plan`/`step`; False when none exists."""
        key = bandit_key(plan, step, self.config.kv_prefix)
        if await self._store.load(key) is None and (plan, step) not in self.bandits:
            return False
        bandit = self._bandit(plan, step)
        async with bandit.lock:

            def reload(data: dict[str, Any]) -> None:
                bandit.state = BanditState.from_json(data)

            saved = await self._save_cas(
                key,
                lambda: BanditState(generation=bandit.state.generation + 1),
                lambda d: d.to_json(),
                reload,
                None,
            )
            assert saved is not None
            bandit.state = saved
        return True
