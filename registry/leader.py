"""Leader election on a Consul session lock.

Algorithm: create a session with a TTL (kept alive by a `SessionKeeper`, registry/session.py:
renewed every ttl/2, transient failures retried with jittered backoff, a 404 confirmed by a
consistent read before it is believed) and try ``PUT /v1/kv/<key>?acquire=<session>``; the
key's value becomes the holder id. Then follow the key with blocking queries: whenever it is
free (no Session), try to acquire it again. The leader is whoever's session holds the key.

State machine (`LeaderElection.state`; every transition is logged and counted in
`transitions`)::

    FOLLOWER --acquired (the key shows our session)----------------------> LEADER
    LEADER --a renewal failed (Consul down, 5xx, refused, unconfirmed 404)--> RECOVERING
    RECOVERING --a renewal succeeded--------------------> LEADER (FOLLOWER if not holding)
    LEADER, RECOVERING --Consul confirms the session is gone------------> LOST
    FOLLOWER --Consul confirms the session is gone----------------------> LOST
    LOST --a new session created-----------------------------------------> FOLLOWER
    LEADER, RECOVERING --the key shows another session or none---------> FOLLOWER

RECOVERING keeps `is_leader` true until a TTL has passed since the last good renewal (Consul
cannot hand the lock to anyone else sooner: it re-arms every session's TTL timer when it
restarts), then false while renewals keep being retried. So after any Consul restart the
election leads again by itself: with the old session when Consul kept it (a server with a data
dir), else with a new session as soon as Consul confirms the old one is gone.

Invariants:

* `is_leader` is True only while our session holds the key *and* the last successful renewal is
  younger than the TTL (a leader cut off from Consul stops believing it leads before Consul
  lets anybody else take over, which happens at the earliest after the TTL);
* `lock_index` is the key's ModifyIndex when we acquired it: it only grows from one leader to
  the next, so writers can fence with it;
* a session Consul no longer knows (expired, agent restarted) is replaced by a new one, never
  on a 404 alone (a restarting server answers 404 for sessions it has not replayed yet);
* `stop()` destroys the session, which releases the lock at once;
* `start()` releases the lock from, and destroys, sessions with our name (same key and holder
  id) that a killed earlier process left behind, so a restart with the same instance id leads
  at once (two live processes must never share a holder id).

Leadership-move bound after a leader dies without `stop()` (kill -9, host loss): Consul
invalidates a TTL session between TTL and 2 x TTL after its last renewal, then refuses the
lock for `lock_delay_s`; a follower's blocking query on the key wakes at once, so another
process leads within ``2 * ttl_s + lock_delay_s`` plus one Consul round trip (about 20 s with
the orchestrator's defaults, ttl 10 s, lock delay 0). The restarted process itself (same
instance id) leads at once, by releasing its predecessor's session.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from meshserve.errors import InvalidInputError, MeshError
from meshserve.registry.blocking import Backoff, BlockingOptions, BlockingQuery, Clock, Sleep
from meshserve.registry.client import ConsulClient, duration, parse_index
from meshserve.registry.config import ConsulConfig
from meshserve.registry.kv import KVEntry
from meshserve.registry.session import SessionEvent, SessionKeeper, SessionOps

__all__ = ["LeaderElection", "LeaderOptions", "LeaderState"]

log = logging.getLogger(__name__)

MIN_TTL_S = 10.0  # Consul's session_ttl_min
MAX_TTL_S = 86400.0


@dataclass(frozen=True)
class LeaderOptions:
    """`lock_delay_s`: how long Consul refuses the lock after a holder's session is
    invalidated (whole seconds); `behavior`: what invalidation does to the key ("release" or
    "delete"); `watch`: timing of the blocking queries on the key."""

    lock_delay_s: int = 0
    behavior: str = "release"
    watch: BlockingOptions = field(default_factory=BlockingOptions)


class LeaderState(enum.Enum):
    """Where a LeaderElection stands (see the module docstring for the transitions)."""

    FOLLOWER = "follower"
    LEADER = "leader"
    RECOVERING = "recovering"
    LOST = "lost"


class _ConsulSessions:
    """SessionOps on Consul's session endpoints for one lock."""

    def __init__(self, client: ConsulClient, name: str, ttl_s: float, opts: LeaderOptions):
        self._client = client
        self._name = name
        self._ttl_s = ttl_s
        self._opts = opts

    async def create(self) -> str:
        opts = self._opts
        sid: str = await self._client.call(
            f"create session {self._name!r}",
            lambda c: c.session.create(
                name=self._name,
                lock_delay=opts.lock_delay_s,
                behavior=opts.behavior,
                ttl=round(self._ttl_s),
            ),
        )
        return sid

    async def renew(self, session_id: str) -> None:
        await self._client.call(
            f"renew session {session_id}", lambda c: c.session.renew(session_id)
        )

    async def release_previous(self, key: str) -> int:
        """Release `key` from, and destroy, sessions of this name left by an earlier process
        with the same holder id (killed, so never destroyed): a restart then leads at once
        instead of waiting out the dead session's TTL. A release, unlike an invalidation,
        has no lock delay. Returns how many sessions it destroyed."""
        _, sessions = await self._client.call("list sessions", lambda c: c.session.list())
        previous = [str(s["ID"]) for s in sessions or () if s.get("Name") == self._name]
        for sid in previous:
            await self._release(key, sid)
            log.info("destroyed session %s left by an earlier process named %r", sid, self._name)
        return len(previous)

    async def _release(self, key: str, sid: str) -> None:
        _, item = await self._client.call(f"read lock {key!r}", lambda c: c.kv.get(key))
        if item and item.get("Session") == sid:
            value = item.get("Value") or b""
            await self._client.call(
                f"release lock {key!r}", lambda c: c.kv.put(key, value, release=sid)
            )
        await self._client.call(f"destroy session {sid}", lambda c: c.session.destroy(sid))

    async def exists(self, session_id: str) -> bool:
        _, info = await self._client.call(
            f"look up session {session_id}",
            lambda c: c.session.info(session_id, consistency="consistent"),
        )
        return info is not None


class _KeyBusy(Exception):
    """The key looked free but the acquire was refused (lock delay): look again later."""


class LeaderElection:
    """Contend for leadership on `key` as `holder_id` with a session of `ttl_s` seconds."""

    def __init__(
        self,
        config: ConsulConfig,
        key: str,
        holder_id: str,
        ttl_s: float = 10.0,
        *,
        options: LeaderOptions | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        sessions: SessionOps | None = None,
    ) -> None:
        """`sessions`: the Consul session calls (tests inject fakes); default Consul's."""
        if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
            raise InvalidInputError(
                f"leader election on {key!r}: ttl_s={ttl_s} but Consul sessions need a TTL "
                f"between {MIN_TTL_S:.0f} and {MAX_TTL_S:.0f} seconds"
            )
        self.options = options or LeaderOptions()
        if self.options.behavior not in ("release", "delete"):
            raise InvalidInputError(
                f"session behavior {self.options.behavior!r}: expected 'release' or 'delete'"
            )
        self.key = key
        self.holder_id = holder_id
        self.ttl_s = ttl_s
        self._client = ConsulClient(config)
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._consul_sessions = _ConsulSessions(
            self._client, f"meshserve-leader {key} {holder_id}", ttl_s, self.options
        )
        ops = sessions or self._consul_sessions
        self._own_sessions = sessions is None
        self._keeper = SessionKeeper(
            ops, ttl_s, name=f"lock {key!r}", on_event=self._on_session,
            clock=clock, sleep=sleep, rng=rng,
        )  # fmt: skip
        self._held = False
        self._lock_index = 0
        self._state = LeaderState.FOLLOWER
        self.transitions: collections.Counter[tuple[str, str]] = collections.Counter()
        self.leader_id = ""  # holder id of the current leader ("" when the key is free)
        self._changed = asyncio.Event()
        self._subscribers: list[Callable[[bool], object]] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def is_leader(self) -> bool:
        """True while we hold the lock and our session was renewed within the TTL."""
        return self._held and self._clock() - self._keeper.renewed_at < self.ttl_s

    @property
    def state(self) -> LeaderState:
        """FOLLOWER, LEADER, RECOVERING or LOST (module docstring)."""
        return self._state

    @property
    def renewed_at(self) -> float:
        """clock() of the session's creation or last good renewal (0.0: never)."""
        return self._keeper.renewed_at

    @property
    def lock_index(self) -> int:
        """The key's ModifyIndex when we acquired it (0 when not leader): a fencing token."""
        return self._lock_index if self.is_leader else 0

    @property
    def session_id(self) -> str:
        """The current Consul session ("" when none)."""
        return self._keeper.session_id

    def subscribe(self, callback: Callable[[bool], object]) -> None:
        """Call `callback(is_leader)` whenever leadership is gained or lost."""
        self._subscribers.append(callback)

    async def start(self) -> None:
        """Release what a dead earlier process with our holder id held, then start
        contending in the background (returns at once)."""
        if self._tasks:
            return
        if self._own_sessions:
            try:
                await self._consul_sessions.release_previous(self.key)
            except MeshError as exc:  # Consul down: its TTL ends the old session instead
                log.warning("releasing the previous session of %s failed: %s", self.holder_id, exc)
        self._tasks = [
            asyncio.create_task(self._contend(), name=f"leader-{self.key}"),
            asyncio.create_task(self._keeper.run(), name=f"leader-renew-{self.key}"),
        ]

    async def wait_until_leader(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` to become leader; True when we are."""
        return await self.wait_for(lambda: self.is_leader, timeout_s)

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait up to `timeout_s` for `predicate()`, re-checked at every state change, session
        event and renewal; True when it holds."""
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Stop contending and destroy the session (which releases the lock)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sid = self._keeper.forget()
        if sid:
            try:
                await self._client.call(f"destroy session {sid}", lambda c: c.session.destroy(sid))
            except MeshError as exc:
                log.warning("destroying session %s failed (the TTL will end it): %s", sid, exc)
        self._set_held(False, 0)
        await self._client.close()

    async def _contend(self) -> None:
        backoff = Backoff(
            self.options.watch.backoff_initial_s, self.options.watch.backoff_max_s, rng=self._rng
        )
        while True:
            query: BlockingQuery[KVEntry | None] = BlockingQuery(
                self._fetch_key,
                self.options.watch,
                name=f"watch lock {self.key!r}",
                clock=self._clock,
                sleep=self._sleep,
                rng=self._rng,
            )
            try:
                async for entry in query:
                    await self._on_key(entry)
                    backoff.reset()
            except _KeyBusy:
                await self._sleep(max(self.options.lock_delay_s, 0.1))
            except MeshError as exc:
                delay = backoff.next_delay_s()
                log.warning("leader election on %r: %s; retrying in %.2fs", self.key, exc, delay)
                await self._sleep(delay)

    async def _on_key(self, entry: KVEntry | None) -> None:
        holder = entry.session if entry else ""
        if holder and holder == self._keeper.session_id:
            self.leader_id = self.holder_id
            if not self._held:
                assert entry is not None
                self._set_held(True, entry.modify_index)
            return
        if holder:
            self.leader_id = entry.value.decode(errors="replace") if entry else ""
            self._set_held(False, 0)
            return
        self.leader_id = ""
        self._set_held(False, 0)
        sid = await self._keeper.ensure()
        try:
            acquired = await self._client.call(
                f"acquire lock {self.key!r}",
                lambda c: c.kv.put(self.key, self.holder_id, acquire=sid),
            )
        except MeshError:
            await self._keeper.gone(sid)  # a new session then comes with the next attempt
            raise
        if not acquired:
            raise _KeyBusy
        # The blocking query sees our session on the key next and makes us leader.

    async def _fetch_key(self, index: int, wait_s: float) -> tuple[int, KVEntry | None]:
        wait = duration(wait_s) if wait_s else None
        returned, item = await self._client.call(
            f"watch lock {self.key!r}",
            lambda c: c.kv.get(self.key, index=index or None, wait=wait),
            timeout_s=self._client.blocking_timeout_s(wait_s),
        )
        return parse_index(returned), KVEntry.from_consul(item) if item else None

    def _on_session(self, event: SessionEvent, sid: str) -> None:
        """SessionKeeper events -> state transitions."""
        if event is SessionEvent.FAILED and self._state is LeaderState.LEADER:
            self._transition(LeaderState.RECOVERING, f"renewing session {sid} failed")
        elif event is SessionEvent.RENEWED and self._state is LeaderState.RECOVERING:
            state = LeaderState.LEADER if self._held else LeaderState.FOLLOWER
            self._transition(state, f"session {sid} renewed again")
        elif event is SessionEvent.GONE:
            was_held, self._held, self._lock_index = self._held, False, 0
            self._transition(LeaderState.LOST, f"session {sid} is gone")
            if was_held:
                self._notify_subscribers(False)
        elif event is SessionEvent.CREATED and self._state is LeaderState.LOST:
            self._transition(LeaderState.FOLLOWER, f"new session {sid}")
        self._notify()  # is_leader may have lapsed and come back

    def _set_held(self, held: bool, lock_index: int) -> None:
        if held == self._held:
            return
        self._held, self._lock_index = held, lock_index
        if held:
            self._transition(LeaderState.LEADER, "acquired the lock")
        elif self._state is not LeaderState.LOST:
            self._transition(LeaderState.FOLLOWER, "the lock is not ours")
        self._notify()
        self._notify_subscribers(held)

    def _transition(self, state: LeaderState, reason: str) -> None:
        previous, self._state = self._state, state
        if previous is state:
            return
        self.transitions[(previous.value, state.value)] += 1
        log.info("%s on %r: %s -> %s (%s)",
                 self.holder_id, self.key, previous.value, state.value, reason)  # fmt: skip

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def _notify_subscribers(self, held: bool) -> None:
        for callback in list(self._subscribers):
            try:
                callback(held)
            except Exception:
                log.exception("leadership subscriber %r failed", callback)
