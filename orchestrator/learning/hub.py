"""The orchestrator's online learning: bandit steps, online learners, feedback, durable state.

`LearningHub` implements the engine's ``Learning`` port (orchestrator/learning_port.py):
- ``choose_arm`` picks a branch of a bandit step per context with a seeded rng and remembers
  (request id -> plan/step, context, arm) in a bounded TTL memory;
- ``observe`` (called by the ``learner.observe`` logic step) remembers a request's features;
- ``feedback`` applies a reward to the remembered bandit decisions or a label to the remembered
  observations, persists the new state to Consul KV with check-and-set *before* returning (so
  acknowledged feedback is never lost), and may start a learner's export/deploy cycle.
Only the leader (when a LeaderElection is given) writes: followers refuse feedback with
UNAVAILABLE and reload the persisted state every `refresh_interval_s`; a follower that becomes
the leader reloads and redeploys its learners' serving versions. A lost CAS (another writer)
reloads the key, re-applies the update on top, and retries once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import numpy as np

from meshserve.errors import CheckAndSetError, InvalidInputError, NotFoundError, UnavailableError
from meshserve.messages import fill
from meshserve.names import check_name
from meshserve.orchestrator import metrics
from meshserve.orchestrator.learning.bandits import BanditState, choose, normalise_policy
from meshserve.orchestrator.learning.decisions import DecisionMemory, Record
from meshserve.orchestrator.learning.online import Deployer, LearnerConfig, LearnerSlot
from meshserve.orchestrator.learning.store import (
    PREFIX,
    KVLike,
    StateStore,
    bandit_key,
    learner_key,
)
from meshserve.v1 import admin_pb2

__all__ = ["HubConfig", "LearningHub", "active_hub"]

S = TypeVar("S")
log = logging.getLogger(__name__)


class LeaderLike(Protocol):
    @property
    def is_leader(self) -> bool: ...


@dataclass(frozen=True)
class HubConfig:
    """Memory bounds for decisions awaiting feedback, follower refresh period, KV prefix."""

    decision_ttl_s: float = 3600.0
    max_pending_requests: int = 100_000
    refresh_interval_s: float = 2.0
    kv_prefix: str = PREFIX


@dataclass
class _Bandit:
    plan: str
    step: str
    state: BanditState = field(default_factory=BanditState)
    rng: np.random.Generator | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_active: LearningHub | None = None


def active_hub() -> LearningHub:
    """The started hub of this process (used by the ``learner.observe`` logic step)."""
    if _active is None:
        raise UnavailableError("no learning hub is running in this orchestrator")
    return _active


class LearningHub:
    """Bandits and online learners of one orchestrator (see the module docstring)."""

    def __init__(
        self,
        kv: KVLike,
        *,
        config: HubConfig | None = None,
        leader: LeaderLike | None = None,
        deployer: Deployer | None = None,
        clock: Callable[[], float] = time.monotonic,
        instance_id: str = "",
    ) -> None:
        self.config = config or HubConfig()
        self._kv = kv
        self._store = StateStore(kv)
        self._leader = leader
        self.deployer = deployer
        self.instance_id = instance_id
        self._clock = clock
        self._memory = DecisionMemory(
            self.config.max_pending_requests, self.config.decision_ttl_s, clock
        )
        self._bandits: dict[tuple[str, str], _Bandit] = {}
        self._learners: dict[str, LearnerSlot] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self.feedback_total = 0

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Load every persisted bandit and learner, then keep followers in sync."""
        global _active
        await self.reload()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="learning-refresh")
        _active = self
        if self.is_leader:
            self._redeploy_all()

    async def stop(self) -> None:
        """Stop background work (rollouts in progress are cancelled; state is already saved)
        and the model versions this hub's deployer started."""
        global _active
        if _active is self:
            _active = None
        tasks = [t for t in [self._refresher, *self._tasks] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._refresher = None
        close = getattr(self.deployer, "close", None)
        if close is not None:
            await close()

    async def reload(self) -> None:
        """Replace in-memory learned state with what KV holds (start, follower refresh)."""
        prefix = self.config.kv_prefix
        entries = await self._kv.list(prefix)  # type: ignore[attr-defined]
        for entry in entries:
            rest = entry.key[len(prefix) :]
            kind, _, name = rest.partition("/")
            if kind == "bandits" and "/" in name:
                plan, _, step = name.rpartition("/")
                bandit = self._bandit(plan, step)
                async with bandit.lock:
                    data = await self._store.load(entry.key)
                    if data is not None:
                        pulls = {k: s.pulls for k, s in bandit.state.arms.items()}
                        bandit.state = BanditState.from_json(data)
                        for k, s in bandit.state.arms.items():  # keep local pull counts
                            bandit.state.arms[k] = replace(s, pulls=max(s.pulls, pulls.get(k, 0)))
            elif kind == "learners" and name:
                slot = self._learners.get(name)
                if slot is None:
                    data = await self._store.load(entry.key)
                    slot = self._learners.get(name)
                    if slot is None:
                        if data is not None:
                            self._learners[name] = LearnerSlot.from_json(data)
                        continue
                    # observe() made it meanwhile: its first write must not reuse this index
                    self._store.forget(entry.key)
                # Read under the learner's lock: a read racing a feedback write would otherwise
                # install stale weights with a fresh CAS index (a lost update).
                async with slot.lock:
                    data = await self._store.load(entry.key)
                    if data is not None:
                        slot.adopt(LearnerSlot.from_json(data))

    async def _refresh_loop(self) -> None:
        """Followers reload every `refresh_interval_s`; a follower that becomes the leader
        reloads once (its view may be stale) and redeploys the learners' serving versions."""
        was_leader = self.is_leader
        last_reload = self._clock()
        while True:
            await asyncio.sleep(min(1.0, self.config.refresh_interval_s))
            leader = self.is_leader
            try:
                if leader and not was_leader:
                    log.info("learning: this orchestrator became the leader; reloading state")
                    await self.reload()
                    self._redeploy_all()
                elif not leader and self._clock() - last_reload >= self.config.refresh_interval_s:
                    await self.reload()
                    last_reload = self._clock()
                was_leader = leader
            except Exception as exc:  # Consul down: keep the last state, retry next tick
                log.warning("learning state refresh failed: %s", exc)

    def _redeploy_all(self) -> None:
        if self.deployer is None:
            return
        for slot in self._learners.values():
            if slot.deployed_version and slot.deployed_model is not None:
                self._spawn(slot.redeploy(self.deployer))

    @property
    def is_leader(self) -> bool:
        return self._leader is None or bool(self._leader.is_leader)

    def _require_leader(self) -> None:
        if not self.is_leader:
            raise UnavailableError(
                f"orchestrator {self.instance_id or '(this one)'} is a follower; learned state "
                "is written by the leader only: send feedback to the leader orchestrator"
            )

    # -- bandits ----------------------------------------------------------------------------
    def _bandit(self, plan: str, step: str) -> _Bandit:
        bandit = self._bandits.get((plan, step))
        if bandit is None:
            bandit = _Bandit(plan, step)
            self._bandits[(plan, step)] = bandit
        return bandit

    async def choose_arm(
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
    ) -> str:
        """The arm serving this request; remembered under `request_id` for feedback."""
        name = normalise_policy(policy)
        bandit = self._bandit(plan, step)
        if bandit.rng is None:
            bandit.rng = np.random.default_rng(seed)
        arm = choose(bandit.state, context, list(arms), name, epsilon, bandit.rng)
        current = bandit.state.get(context, arm)
        bandit.state.arms[(context, arm)] = replace(current, pulls=current.pulls + 1)
        if request_id:
            self._memory.add(request_id, Record("bandit", f"{plan}/{step}", (context, arm)))
        return arm

    async def _reward(self, record: Record, reward: float) -> None:
        plan, _, step = record.key.rpartition("/")
        context, arm = record.value
        bandit = self._bandit(plan, step)
        key = bandit_key(plan, step, self.config.kv_prefix)

        def draft_from(state: BanditState) -> BanditState:
            draft = state.copy()
            draft.arms[(context, arm)] = draft.get(context, arm).rewarded(reward)
            return draft

        def reload(data: dict[str, Any]) -> None:
            bandit.state = BanditState.from_json(data)

        async with bandit.lock:
            draft = await self._save_cas(
                key, lambda: draft_from(bandit.state), lambda d: d.to_json(), reload
            )
            rewarded = draft.get(context, arm)
            current = bandit.state.get(context, arm)  # choices made meanwhile count as pulls
            bandit.state.arms[(context, arm)] = replace(
                rewarded, pulls=max(current.pulls, rewarded.pulls)
            )

    # -- learners ---------------------------------------------------------------------------
    def add_learner(self, config: LearnerConfig) -> LearnerSlot:
        """The learner named ``config.name`` (created from `config` when it is new)."""
        check_name("learner", config.name)
        slot = self._learners.get(config.name)
        if slot is None:
            slot = LearnerSlot(config)
            self._learners[config.name] = slot
        return slot

    def learner(self, name: str) -> LearnerSlot:
        slot = self._learners.get(name)
        if slot is None:
            raise NotFoundError(f"no online learner {name!r}; known: {sorted(self._learners)}")
        return slot

    async def observe(
        self, name: str, request_id: str, features: Any, params: Mapping[str, Any] | None = None
    ) -> None:
        """Remember the features a request showed learner `name` until its label arrives."""
        if not request_id:
            raise InvalidInputError(f"learner {name!r}: observing needs a request id")
        slot = self._learners.get(name) or self.add_learner(
            LearnerConfig.from_params(name, params or {})
        )
        x = slot.check(features)
        self._memory.add(request_id, Record("learner", name, x))

    async def _teach(self, record: Record, label: int) -> None:
        slot = self.learner(record.key)
        x: np.ndarray = record.value
        key = learner_key(record.key, self.config.kv_prefix)
        async with slot.lock:
            slot.model = await self._save_cas(
                key,
                lambda: slot.model.update(x, np.full(x.shape[0], label)),
                slot.to_json,
                lambda data: slot.adopt(LearnerSlot.from_json(data)),
            )
            roll_back = slot.score_live(x, label)
        if roll_back and self.deployer is not None:
            self._spawn(slot.rollback(self.deployer, self._persist, "live accuracy regressed"))
        elif slot.rollout_due() and not slot.rollout_queued:
            slot.rollout_queued = True
            self._spawn(slot.rollout(self.deployer, self._persist, only_if_due=True))

    async def _save_cas(
        self,
        key: str,
        build: Callable[[], S],
        encode: Callable[[S], Mapping[str, Any]],
        reload: Callable[[dict[str, Any]], None],
    ) -> S:
        """Save what `build` makes; on a lost check-and-set, `reload` the stored state and build
        once more (a second loss raises CheckAndSetError). Returns what was saved."""
        for attempt in (1, 2):
            built = build()
            try:
                await self._store.save(key, encode(built))
                return built
            except CheckAndSetError:
                if attempt == 2:
                    raise
                data = await self._store.load(key)
                if data is not None:
                    reload(data)
        raise AssertionError("unreachable")

    async def _persist(self, slot: LearnerSlot) -> None:
        key = learner_key(slot.config.name, self.config.kv_prefix)
        await self._store.save(key, slot.to_json())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("learning background task failed: %s", task.exception())

    async def rollout_now(self, name: str) -> dict[str, Any]:
        """Run one export/validate/deploy cycle of learner `name` now (admin and tests)."""
        self._require_leader()
        entry = await self.learner(name).rollout(self.deployer, self._persist)
        assert entry is not None
        return entry

    async def wait_idle(self, timeout_s: float) -> None:
        """Wait for background rollouts to finish (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait_for(asyncio.gather(*list(self._tasks)), timeout_s)

    # -- feedback ---------------------------------------------------------------------------
    async def feedback(
        self, request_id: str, *, reward: float | None = None, label: int | None = None
    ) -> list[str]:
        """Apply a reward (bandits) or a label (learners) to what served `request_id`.

        Returns the steps/learners it applied to, after their new state is durable in KV.
        """
        if (reward is None) == (label is None):
            raise InvalidInputError("feedback needs exactly one of 'reward' or 'label'")
        if reward is not None and not (math.isfinite(reward) and 0.0 <= reward <= 1.0):
            raise InvalidInputError(f"feedback reward {reward} must be in [0, 1]")
        self._require_leader()
        kind = "bandit" if reward is not None else "learner"
        records = self._memory.take(request_id, kind)
        if not records:
            what = "bandit decision" if kind == "bandit" else "learner observation"
            raise NotFoundError(
                f"request {request_id!r} has no pending {what} (unknown id, older than "
                f"{self.config.decision_ttl_s:.0f}s, or already rated)"
            )
        applied: list[str] = []
        try:
            for record in records:
                if reward is not None:
                    await self._reward(record, float(reward))
                else:
                    await self._teach(record, int(label))  # type: ignore[arg-type]
                applied.append(record.key)
                metrics.LEARNER_FEEDBACK.labels(record.key).inc()
                if reward is not None:
                    metrics.LEARNER_REWARD.labels(record.key, record.value[1]).inc(reward)
        except BaseException:
            self._memory.put_back(request_id, records[len(applied) :])
            raise
        self.feedback_total += 1
        return applied

    # -- observability ----------------------------------------------------------------------
    def bandit_stats(self) -> list[admin_pb2.BanditStats]:
        out = []
        for (plan, step), bandit in sorted(self._bandits.items()):
            arms = [
                fill(admin_pb2.ArmStats, s, arm=arm, context=context)
                for (context, arm), s in sorted(bandit.state.arms.items())
            ]
            out.append(admin_pb2.BanditStats(plan=plan, step=step, arms=arms))
        return out

    def learner_stats(self) -> list[admin_pb2.LearnerStats]:
        return [
            admin_pb2.LearnerStats(
                name=name,
                updates=slot.model.updates,
                deployed_version=slot.deployed_version,
                holdout_accuracy=slot.deployed_accuracy,
            )
            for name, slot in sorted(self._learners.items())
        ]

    def stats(self) -> tuple[list[admin_pb2.BanditStats], list[admin_pb2.LearnerStats]]:
        """(bandits, learners) for Admin.GetStats."""
        return self.bandit_stats(), self.learner_stats()
