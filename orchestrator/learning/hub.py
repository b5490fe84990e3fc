"""The orchestrator's online learning: bandit steps, online learners, feedback, durable state.

`LearningHub` implements the engine's ``Learning`` port (orchestrator/learning_port.py):
- ``choose_arm`` picks a branch of a bandit step per context with a seeded rng and remembers
  (request id -> plan/step, context, arm) in a bounded TTL memory;
- ``observe`` (called by the ``learner.observe`` logic step) remembers a request's features;
- ``token_for`` signs what a request decided into its feedback token (learning/tokens.py);
- ``apply_feedback`` (THE entry point for feedback from any source) applies a reward to a
  request's bandit decisions or a label to its observations, taken from its token (any
  orchestrator) or from this process's memory, each step in one Consul transaction with its
  "applied" marker (learning/feedback.py): durable before it returns, exactly once per request
  and step, duplicates reported as such. A lost CAS (another writer) reloads the key and
  re-applies on top, up to `cas_attempts` times.
Every orchestrator accepts feedback and reloads the persisted state every `refresh_interval_s`.
Only the leader (when a LeaderElection is given) runs learner rollouts and deletes old markers;
a follower that becomes the leader reloads and redeploys its learners' serving versions.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import numpy as np

from meshserve.errors import (
    CheckAndSetError,
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from meshserve.names import check_name
from meshserve.orchestrator.learning.bandit_book import BanditBook
from meshserve.orchestrator.learning.bandits import (
    ArmState,
)
from meshserve.orchestrator.learning.config import HubConfig
from meshserve.orchestrator.learning.decisions import DecisionMemory, Record
from meshserve.orchestrator.learning.feedback import (
    Feedback,
    FeedbackOutcome,
    marker_for,
    stale_buckets,
)
from meshserve.orchestrator.learning.metrics import (
    BANDIT_REWARD_SUM,
    BANDIT_REWARDS,
    FEEDBACK_OUTCOMES,
    LEARNER_HOLDOUT_ACCURACY,
    LEARNER_VERSION,
)
from meshserve.orchestrator.learning.online import Deployer, LearnerConfig, LearnerSlot
from meshserve.orchestrator.learning.store import (
    KVLike,
    StateStore,
    learner_key,
)
from meshserve.orchestrator.learning.tokens import Decisions, TokenSigner
from meshserve.orchestrator.learning.views import bandit_stats, learned_digest, learner_stats
from meshserve.v1 import admin_pb2

__all__ = ["HubConfig", "LearningHub", "active_hub"]

S = TypeVar("S")
log = logging.getLogger(__name__)


class LeaderLike(Protocol):
    @property
    def is_leader(self) -> bool: ...


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
        wall_clock: Callable[[], float] = time.time,
        instance_id: str = "",
        feedback_keys: Sequence[bytes] = (),
        rng: random.Random | None = None,
    ) -> None:
        """`feedback_keys`: HMAC keys of feedback tokens (first signs); none: one shared through
        Consul KV at `config.key_path`, created by the first orchestrator."""
        self.config = config or HubConfig()
        self._kv = kv
        self._store = StateStore(kv)
        self._leader = leader
        self.deployer = deployer
        self.instance_id = instance_id
        self._clock = clock
        self._wall = wall_clock
        self._rng = rng or random.Random()
        self._feedback_keys = list(feedback_keys)
        self.signer: TokenSigner | None = None
        self._memory = DecisionMemory(
            self.config.max_pending_requests, self.config.retention_s, clock
        )
        self.bandits = BanditBook(
            self._store, self.config, self._save_cas,
            lambda rid, record: self._memory.add(rid, record, self._wall()),
            clock=clock, wall_clock=wall_clock,
        )  # fmt: skip
        self._learners: dict[str, LearnerSlot] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refresher: asyncio.Task[None] | None = None
        self.feedback_total = 0
        self.feedback_applied_total = 0
        self.feedback_duplicates_total = 0
        self._last_prune = 0.0

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Load every persisted bandit and learner, then keep followers in sync."""
        global _active
        self.signer = TokenSigner(
            self._feedback_keys or [await self._shared_key()],
            replace(self.config.tokens, retention_s=self.config.retention_s),
            self._wall,
        )
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

    async def _shared_key(self) -> bytes:
        """The group's feedback key from KV, created (cas=0) by whoever comes first."""
        key = self.config.key_path
        for _ in range(3):
            entry = await self._kv.get(key)
            if entry is not None and bytes(entry.value):
                return bytes(entry.value)
            await self._kv.put(key, secrets.token_hex(32).encode(), cas=0)
        raise UnavailableError(f"could not read or create the feedback key at {key!r}")

    async def reload(self) -> None:
        """Replace in-memory learned state with what KV holds (start, follower refresh)."""
        prefix = self.config.kv_prefix
        entries = await self._kv.list(prefix)  # type: ignore[attr-defined]
        for entry in entries:
            rest = entry.key[len(prefix) :]
            kind, _, name = rest.partition("/")
            if kind == "bandits" and "/" in name:
                plan, _, step = name.rpartition("/")
                await self.bandits.reload_key(entry.key, plan, step)
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
        """Every orchestrator reloads every `refresh_interval_s` (any of them may have applied
        feedback); one that becomes the leader reloads at once and redeploys the learners'
        serving versions; the leader starts rollouts that are due and prunes old markers."""
        was_leader = self.is_leader
        last_reload = self._clock()
        while True:
            await asyncio.sleep(min(1.0, self.config.refresh_interval_s))
            leader = self.is_leader
            try:
                if leader and not was_leader:
                    log.info("learning: this orchestrator became the leader; reloading state")
                    await self.reload()
                    last_reload = self._clock()
                    self._redeploy_all()
                elif self._clock() - last_reload >= self.config.refresh_interval_s:
                    await self.reload()
                    last_reload = self._clock()
                was_leader = leader
                self.learner_stats()  # keeps the learner gauges current
                if leader:
                    self._start_due_rollouts()
                    if self._clock() - self._last_prune >= self.config.prune_interval_s:
                        self._last_prune = self._clock()
                        await self.prune_markers()
            except Exception as exc:  # Consul down: keep the last state, retry next tick
                log.warning("learning state refresh failed: %s", exc)

    def _start_due_rollouts(self) -> None:
        for slot in self._learners.values():
            if slot.rollout_due() and not slot.rollout_queued:
                slot.rollout_queued = True
                self._spawn(slot.rollout(self.deployer, self._persist, only_if_due=True))

    async def prune_markers(self) -> int:
        """Delete the marker buckets older than the retention window; returns how many."""
        prefix = self.config.applied_prefix
        buckets = {
            int(part)
            for entry in await self._kv.list(prefix)  # type: ignore[attr-defined]
            if (part := entry.key[len(prefix) :].partition("/")[0]).isdigit()
        }
        stale = stale_buckets(
            sorted(buckets), self._wall(), self.config.retention_s, self.config.retention_s
        )
        for bucket in stale:
            await self._kv.delete(f"{prefix}{bucket}/", recurse=True)  # type: ignore[attr-defined]
        return len(stale)

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
    async def choose_arm(self, **kwargs: Any) -> str:
        """The arm serving a request (BanditBook.choose), remembered for its feedback."""
        return await self.bandits.choose(**kwargs)

    async def personal_arms(self, plan: str, step: str, user: str) -> dict[str, ArmState]:
        """One user's arm statistics of a personalised bandit (admin, tests)."""
        return await self.bandits.personal_arms(plan, step, user)

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
        slot = self._learners.get(name)
        if slot is None:
            slot = self.add_learner(LearnerConfig.from_params(name, params or {}))
        if not slot.published:
            await self._publish_learner(slot)
        x = slot.check(features)
        self._memory.add(request_id, Record("learner", name, x), self._wall())

    async def _publish_learner(self, slot: LearnerSlot) -> None:
        """Store a new learner at once (cas=0) so every orchestrator can apply its labels; when
        another orchestrator stored it first, take its document."""
        key = learner_key(slot.config.name, self.config.kv_prefix)
        async with slot.lock:
            if slot.published:
                return
            try:
                await self._store.save(key, slot.to_json())
            except CheckAndSetError:
                data = await self._store.load(key)
                if data is not None:
                    slot.adopt(LearnerSlot.from_json(data))
            slot.published = True

    async def _known_learner(self, name: str) -> LearnerSlot:
        """Learner `name`, loaded from KV when another orchestrator created it."""
        if name not in self._learners:
            data = await self._store.load(learner_key(name, self.config.kv_prefix))
            if data is not None and name not in self._learners:
                self._learners[name] = LearnerSlot.from_json(data)
        return self.learner(name)

    async def _teach(self, record: Record, label: int, marker: tuple[str, bytes]) -> bool:
        """Apply `label` to the features in `record` with its marker; False: applied before."""
        slot = await self._known_learner(record.key)
        x = slot.check(record.value)
        key = learner_key(record.key, self.config.kv_prefix)
        async with slot.lock:
            model = await self._save_cas(
                key,
                lambda: slot.model.update(x, np.full(x.shape[0], label)),
                slot.to_json,
                lambda data: slot.adopt(LearnerSlot.from_json(data)),
                marker,
            )
            if model is None:
                return False
            slot.model = model
            roll_back = slot.score_live(x, label)
        if not self.is_leader:
            return True  # the leader starts rollouts once it reloads the new updates
        if roll_back and self.deployer is not None:
            self._spawn(slot.rollback(self.deployer, self._persist, "live accuracy regressed"))
        elif slot.rollout_due() and not slot.rollout_queued:
            slot.rollout_queued = True
            self._spawn(slot.rollout(self.deployer, self._persist, only_if_due=True))
        return True

    async def _save_cas(
        self,
        key: str,
        build: Callable[[], S],
        encode: Callable[[S], Mapping[str, Any]],
        reload: Callable[[dict[str, Any]], None],
        marker: tuple[str, bytes] | None,
    ) -> S | None:
        """`StateStore.save_retrying` with this hub's attempts and jittered pauses."""
        return await self._store.save_retrying(
            key, build, encode, reload, marker, self.config.cas_attempts, self._pause
        )

    async def _pause(self, attempt: int) -> None:
        await asyncio.sleep(self._rng.uniform(0, 0.002 * min(attempt, 10)))

    async def _persist(self, slot: LearnerSlot) -> None:
        """Save a learner's rollout bookkeeping (leader only). Labels applied meanwhile by
        other orchestrators win for the weights: only the leader writes versions."""

        def merge(data: dict[str, Any]) -> None:
            stored = LearnerSlot.from_json(data)
            if stored.model.updates >= slot.model.updates:
                slot.model = stored.model

        key = learner_key(slot.config.name, self.config.kv_prefix)
        await self._save_cas(key, slot.to_json, lambda doc: doc, merge, None)

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

    async def reset(self, *, plan: str = "", step: str = "", learner: str = "") -> bool:
        """Forget what bandit step `plan`/`step` or learner `learner` learned: an empty state
        (a new generation) is written with CAS, so every orchestrator adopts it at its next
        reload. A learner keeps its config and version history. False when nothing is stored."""
        if learner:
            key = learner_key(learner, self.config.kv_prefix)
            slot = await self._known_learner(learner)
            async with slot.lock:
                fresh = LearnerSlot(slot.config)
                slot.model, slot.last_export_updates = fresh.model, 0
                slot.live.clear()
                await self._save_cas(
                    key, slot.to_json, lambda d: d, lambda d: slot.adopt_versions(d), None
                )
            return True
        if not plan or not step:
            raise InvalidInputError("reset: name a bandit (plan and step) or a learner")
        return await self.bandits.reset(plan, step)

    async def rollback_learner(self, name: str) -> str:
        """Send learner `name`'s traffic back to its standby version (leader only); returns
        the version now deployed."""
        self._require_leader()
        slot = self.learner(name)
        if self.deployer is None or not slot.standby_version:
            raise FailedPreconditionError(
                f"learner {name!r} has no standby version to roll back to "
                f"(deployed: {slot.deployed_version or 'none'})"
            )
        await slot.rollback(self.deployer, self._persist, "rolled back by an operator")
        return slot.deployed_version

    # -- feedback ---------------------------------------------------------------------------
    def token_for(self, request_id: str) -> bytes:
        """The signed feedback token of `request_id` (b"" when it decided nothing to rate)."""
        pending = self._memory.peek(request_id) if request_id else None
        if pending is None or self.signer is None:
            return b""
        return self.signer.issue(Decisions(request_id, pending[0], tuple(pending[1])))

    def _decisions(self, feedback: Feedback) -> Decisions:
        if feedback.token:
            if self.signer is None:
                raise UnavailableError("the learning hub is not started yet")
            return self.signer.verify(feedback.token, feedback.request_id)
        pending = self._memory.peek(feedback.request_id)
        if pending is None:
            raise NotFoundError(
                f"request {feedback.request_id[:80]!r} is not known to this orchestrator "
                f"({self.instance_id or 'unnamed'}): send the response's feedback_token with the "
                f"feedback (any orchestrator then applies it), within "
                f"{self.config.retention_s:.0f}s of the request"
            )
        return Decisions(feedback.request_id, pending[0], tuple(pending[1]))

    async def apply_feedback(self, feedback: Feedback) -> FeedbackOutcome:
        """Apply `feedback` to what served its request, exactly once per request and step.

        The one entry point for feedback (the Feedback RPC and any other source). Returns what
        it applied now and what had it already; everything in the outcome is durable in KV.
        """
        decisions = self._decisions(feedback)
        records = [r for r in decisions.records if r.kind == feedback.kind]
        if not records:
            what = "bandit decision" if feedback.kind == "bandit" else "learner observation"
            raise NotFoundError(
                f"request {feedback.request_id[:80]!r} has no {what} to apply "
                f"{'a reward' if feedback.kind == 'bandit' else 'a label'} to"
            )
        if self.signer is not None:
            self.signer.check_fresh(decisions)
        applied: list[str] = []
        already: list[str] = []
        for record in records:
            marker = marker_for(
                self.config.applied_prefix, decisions, record, self.config.retention_s
            )
            if feedback.reward is not None:
                fresh = await self.bandits.reward(record, float(feedback.reward), marker)
            else:
                fresh = await self._teach(record, int(feedback.label or 0), marker)
            (applied if fresh else already).append(record.key)
            FEEDBACK_OUTCOMES.labels("applied" if fresh else "duplicate").inc()
            if fresh and feedback.reward is not None:
                plan_step, arm = record.key, str(record.value[1])
                plan, _, step = plan_step.rpartition("/")
                BANDIT_REWARDS.labels(plan, step, arm).inc()
                BANDIT_REWARD_SUM.labels(plan, step, arm).inc(float(feedback.reward))
        self.feedback_total += 1
        self.feedback_applied_total += len(applied)
        self.feedback_duplicates_total += len(already)
        return FeedbackOutcome(feedback.request_id, tuple(applied), tuple(already))

    async def feedback(
        self,
        request_id: str,
        *,
        reward: float | None = None,
        label: int | None = None,
        token: bytes = b"",
    ) -> list[str]:
        """`apply_feedback` for callers that want the steps applied now (tests, scripts)."""
        outcome = await self.apply_feedback(Feedback(request_id, reward, label, token))
        return list(outcome.applied)

    def digest(self) -> str:
        """The learned-state digest (views.learned_digest)."""
        return learned_digest(self.bandits.states(), self._learners)

    # -- observability ----------------------------------------------------------------------
    def bandit_stats(self) -> list[admin_pb2.BanditStats]:
        return bandit_stats(self.bandits.states())

    def learner_stats(self) -> list[admin_pb2.LearnerStats]:
        stats = learner_stats(self._learners)
        for item in stats:
            version = item.deployed_version.removeprefix("v")
            LEARNER_VERSION.labels(item.name).set(int(version) if version.isdigit() else 0)
            LEARNER_HOLDOUT_ACCURACY.labels(item.name).set(item.holdout_accuracy)
        return stats

    def summary(self) -> admin_pb2.Stats:
        """The learning digest and feedback counters (fields of Admin.GetStats)."""
        return admin_pb2.Stats(
            learning_digest=self.digest(),
            feedback_applied_total=self.feedback_applied_total,
            feedback_duplicates_total=self.feedback_duplicates_total,
        )

    def stats(self) -> tuple[list[admin_pb2.BanditStats], list[admin_pb2.LearnerStats]]:
        """(bandits, learners) for Admin.GetStats."""
        return self.bandit_stats(), self.learner_stats()
