"""Leader election on a Consul session lock.

Algorithm: create a session with a TTL (renewed in the background every ttl/2) and try
``PUT /v1/kv/<key>?acquire=<session>``; the key's value becomes the holder id. Then follow the
key with blocking queries: whenever it is free (no Session), try to acquire it again. The
leader is whoever's session holds the key. Invariants:

* `is_leader` is True only while our session holds the key *and* the last successful renewal is
  younger than the TTL (a leader cut off from Consul stops believing it leads before Consul
  lets anybody else take over, which happens at the earliest after the TTL);
* `lock_index` is the key's ModifyIndex when we acquired it: it only grows from one leader to
  the next, so writers can fence with it;
* a session Consul no longer knows (expired, agent restarted) is replaced by a new one;
* `stop()` destroys the session, which releases the lock at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from meshserve.errors import InvalidInputError, MeshError, NotFoundError
from meshserve.registry.blocking import Backoff, BlockingOptions, BlockingQuery, Clock, Sleep
from meshserve.registry.client import ConsulClient, duration, parse_index
from meshserve.registry.config import ConsulConfig
from meshserve.registry.kv import KVEntry

__all__ = ["LeaderElection", "LeaderOptions"]

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
    ) -> None:
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
        self._session_id = ""
        self._held = False
        self._renewed_at = 0.0
        self._lock_index = 0
        self.leader_id = ""  # holder id of the current leader ("" when the key is free)
        self._changed = asyncio.Condition()
        self._subscribers: list[Callable[[bool], object]] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def is_leader(self) -> bool:
        """True while we hold the lock and our session was renewed within the TTL."""
        return self._held and self._clock() - self._renewed_at < self.ttl_s

    @property
    def lock_index(self) -> int:
        """The key's ModifyIndex when we acquired it (0 when not leader): a fencing token."""
        return self._lock_index if self.is_leader else 0

    @property
    def session_id(self) -> str:
        """The current Consul session ("" when none)."""
        return self._session_id

    def subscribe(self, callback: Callable[[bool], object]) -> None:
        """Call `callback(is_leader)` whenever leadership is gained or lost."""
        self._subscribers.append(callback)

    async def start(self) -> None:
        """Start contending in the background (returns at once)."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._contend(), name=f"leader-{self.key}"),
            asyncio.create_task(self._renew_forever(), name=f"leader-renew-{self.key}"),
        ]

    async def wait_until_leader(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` to become leader; True when we are."""
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: self.is_leader)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Stop contending and destroy the session (which releases the lock)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sid, self._session_id = self._session_id, ""
        if sid:
            try:
                await self._client.call(f"destroy session {sid}", lambda c: c.session.destroy(sid))
            except MeshError as exc:
                log.warning("destroying session %s failed (the TTL will end it): %s", sid, exc)
        await self._set_held(False, 0)
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
        if holder and holder == self._session_id:
            self.leader_id = self.holder_id
            if not self._held:
                assert entry is not None
                await self._set_held(True, entry.modify_index)
            return
        if holder:
            self.leader_id = entry.value.decode(errors="replace") if entry else ""
            await self._set_held(False, 0)
            return
        self.leader_id = ""
        await self._set_held(False, 0)
        sid = await self._ensure_session()
        try:
            acquired = await self._client.call(
                f"acquire lock {self.key!r}",
                lambda c: c.kv.put(self.key, self.holder_id, acquire=sid),
            )
        except MeshError:
            await self._drop_session_if_gone(sid)
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

    async def _ensure_session(self) -> str:
        if not self._session_id:
            opts = self.options
            self._session_id = await self._client.call(
                f"create session for lock {self.key!r}",
                lambda c: c.session.create(
                    name=f"meshserve-leader {self.key} {self.holder_id}",
                    lock_delay=opts.lock_delay_s,
                    behavior=opts.behavior,
                    ttl=round(self.ttl_s),
                ),
            )
            self._renewed_at = self._clock()
            log.info("session %s created for %r", self._session_id, self.key)
        return self._session_id

    async def _drop_session_if_gone(self, sid: str) -> None:
        """Forget `sid` when Consul no longer knows it (e.g. a restarted dev agent)."""
        try:
            _, info = await self._client.call(
                f"look up session {sid}", lambda c: c.session.info(sid)
            )
        except MeshError:
            return  # cannot tell now; the renew loop will find out
        if info is None and self._session_id == sid:
            log.warning("session %s for %r no longer exists; will create another", sid, self.key)
            self._session_id = ""

    async def _renew_forever(self) -> None:
        delay = 0.2
        while True:
            await self._sleep(delay if self._session_id else 0.2)
            sid = self._session_id
            if not sid:
                continue
            try:
                await self._renew(sid)
                self._renewed_at = self._clock()
                delay = self.ttl_s / 2
                async with self._changed:
                    self._changed.notify_all()  # is_leader may have lapsed and come back
            except NotFoundError:
                log.warning("session %s for %r is gone; leadership lost", sid, self.key)
                if self._session_id == sid:
                    self._session_id = ""
                await self._set_held(False, 0)
            except MeshError as exc:
                delay = min(1.0, self.ttl_s / 10)  # retry soon: the TTL is running out
                log.warning("renewing session %s failed: %s", sid, exc)

    async def _renew(self, sid: str) -> None:
        await self._client.call(f"renew session {sid}", lambda c: c.session.renew(sid))

    async def _set_held(self, held: bool, lock_index: int) -> None:
        if held == self._held:
            return
        self._held, self._lock_index = held, lock_index
        log.info("%s %s leadership of %r", self.holder_id, "gained" if held else "lost", self.key)
        async with self._changed:
            self._changed.notify_all()
        for callback in list(self._subscribers):
            try:
                callback(held)
            except Exception:
                log.exception("leadership subscriber %r failed", callback)
