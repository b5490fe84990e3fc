"""One Consul session kept alive through Consul's own restarts and outages.

`SessionKeeper.step()` makes one attempt and returns how long to wait before the next; `run()`
repeats it. Rules:

* **Renewal** every ``ttl/2`` after a good one.
* **Transient failure** (Consul unreachable, a timeout, 5xx such as ``No cluster leader`` or
  ``rpc error``): retried with jittered exponential backoff capped at ``ttl/10`` (so many
  retries fit in one TTL), for as long as it takes; the caller decides what a renewal older
  than the TTL means (`renewed_at`).
* **404 on renew** is not believed at once: a restarted Consul server answers 404 for sessions
  its state store has not replayed yet (between electing itself and its first commit). It is
  confirmed with a *consistent* read of the session, which Consul only serves once its state is
  complete; "cannot tell" (an error) counts as a transient failure.
* **Confirmed gone** (a consistent read says so): the session is forgotten and a new one is
  created in the same step (on failure: backoff, then again).
* Time, sleep and randomness are injected; Consul is behind `SessionOps`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from meshserve.errors import MeshError, NotFoundError
from meshserve.registry.blocking import Backoff, Clock, Sleep

__all__ = ["SessionEvent", "SessionKeeper", "SessionOps"]

log = logging.getLogger(__name__)

IDLE_S = 0.2  # step interval while no session is wanted yet


class SessionOps(Protocol):
    """The Consul calls a SessionKeeper needs; each raises MeshError when Consul fails."""

    async def create(self) -> str:
        """A new session id."""

    async def renew(self, session_id: str) -> None:
        """Renew; NotFoundError when Consul says the session does not exist."""

    async def exists(self, session_id: str) -> bool:
        """Whether the session exists, by a consistent read."""


class SessionEvent(enum.Enum):
    CREATED = "created"
    RENEWED = "renewed"
    FAILED = "failed"  # a renewal or creation failed transiently; retrying
    GONE = "gone"  # Consul confirmed the session no longer exists


class SessionKeeper:
    """Creates (on `ensure`, or after a confirmed loss) and renews one session of `ttl_s`."""

    def __init__(
        self,
        ops: SessionOps,
        ttl_s: float,
        *,
        name: str,
        on_event: Callable[[SessionEvent, str], None] = lambda event, sid: None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._ops = ops
        self.ttl_s = ttl_s
        self.name = name
        self._on_event = on_event
        self._clock = clock
        self._sleep = sleep
        self._backoff = Backoff(min(0.1, ttl_s / 100), ttl_s / 10, rng=rng)
        self._create_lock = asyncio.Lock()
        self.session_id = ""
        self.renewed_at = 0.0  # clock() of the last creation or good renewal
        self._wanted = False  # a session was asked for: keep one from now on

    async def ensure(self) -> str:
        """The current session, created first when there is none (MeshError on failure)."""
        self._wanted = True
        async with self._create_lock:
            if not self.session_id:
                sid = await self._ops.create()
                self.session_id, self.renewed_at = sid, self._clock()
                self._backoff.reset()
                log.info("session %s created for %s", sid, self.name)
                self._on_event(SessionEvent.CREATED, sid)
        return self.session_id

    def forget(self) -> str:
        """Drop the current session locally (after `stop` destroyed it); returns its id."""
        sid, self.session_id, self._wanted = self.session_id, "", False
        return sid

    async def gone(self, session_id: str) -> bool:
        """True (and the session forgotten) when a consistent read says it does not exist;
        False when it exists or Consul cannot tell now."""
        try:
            exists = await self._ops.exists(session_id)
        except MeshError as exc:
            log.info("cannot confirm session %s for %s yet: %s", session_id, self.name, exc)
            return False
        if exists:
            return False
        if self.session_id == session_id:
            self.session_id = ""
            log.warning("session %s for %s no longer exists", session_id, self.name)
            self._on_event(SessionEvent.GONE, session_id)
        return True

    async def step(self) -> float:
        """One creation or renewal attempt; the delay before the next step."""
        sid = self.session_id
        if not sid:
            return await self._create() if self._wanted else IDLE_S
        due_in_s = self.renewed_at + self.ttl_s / 2 - self._clock()
        if due_in_s > 0 and not self._backoff.failures:
            return due_in_s  # created (or renewed) recently: renew on schedule
        try:
            await self._ops.renew(sid)
        except NotFoundError as exc:
            if await self.gone(sid):
                return await self._create()
            return self._failed(sid, exc)
        except MeshError as exc:
            return self._failed(sid, exc)
        if self.session_id != sid:  # replaced while the renewal was in flight
            return 0.0
        if self._backoff.failures:
            log.info("session %s for %s renewed again after %d failures",
                     sid, self.name, self._backoff.failures)  # fmt: skip
        self._backoff.reset()
        self.renewed_at = self._clock()
        self._on_event(SessionEvent.RENEWED, sid)
        return self.ttl_s / 2

    async def run(self) -> None:
        """Step forever (until cancelled)."""
        while True:
            await self._sleep(await self.step())

    async def _create(self) -> float:
        try:
            await self.ensure()
        except MeshError as exc:
            return self._failed("", exc)
        return self.ttl_s / 2

    def _failed(self, sid: str, exc: MeshError) -> float:
        delay = self._backoff.next_delay_s()
        what = f"renewing session {sid}" if sid else "creating a session"
        log.warning("%s for %s failed (%d in a row), retrying in %.2fs: %s",
                    what, self.name, self._backoff.failures, delay, exc)  # fmt: skip
        self._on_event(SessionEvent.FAILED, sid)
        return delay
