"""Concurrent callers' keys coalesced into one backend fetch per short window.

Algorithm: a caller's keys join a pending set (a key already pending is shared, not added twice);
the first key to arrive starts a window of `window_s`; when it closes, or `max_batch` keys are
pending, one `fetch(keys, deadline)` gets up to `max_batch` pending keys and resolves their
waiters. Keys that arrive while a fetch runs (they have waited for it already) go in the next
fetch, right after it. Invariants: a key is fetched at most once per
window however many callers want it; a caller gets only the keys it asked for; a key the backend
lacks is ``None`` for its callers (each decides: error or default); a failed fetch fails every
waiter of that batch with its own copy of the error (so each can add its own context).

The batch's `deadline` (``time.monotonic()`` seconds) is the latest of its waiters' deadlines
(None when one of them has none): the fetch must not be cut short for a caller that can still
wait, and each caller's own wait is bounded by its own deadline (``run_logic``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from meshserve.errors import MeshError, UnavailableError

__all__ = ["Fetch", "KeyCoalescer"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Fetch = Callable[[list[K], float | None], Awaitable[Mapping[K, V]]]


class KeyCoalescer(Generic[K, V]):
    """Coalesces the keys of concurrent `get` calls into `fetch` calls (module docstring)."""

    def __init__(self, fetch: Fetch[K, V], *, window_s: float, max_batch: int) -> None:
        if window_s < 0 or max_batch < 1:
            raise ValueError(
                f"window_s must be >= 0 and max_batch >= 1, got {window_s}, {max_batch}"
            )
        self._fetch = fetch
        self.window_s = window_s
        self.max_batch = max_batch
        self._pending: dict[K, asyncio.Future[V | None]] = {}
        self._deadline: float | None = None
        self._unbounded = False
        self._flush_task: asyncio.Task[None] | None = None
        self._full: asyncio.Future[None] | None = None  # set when max_batch keys are pending
        self.requests = 0  # get calls that needed the backend
        self.fetches = 0  # backend calls made
        self.keys_fetched = 0

    async def get(self, keys: Sequence[K], deadline: float | None = None) -> dict[K, V | None]:
        """Value of each distinct key of `keys` (None when the backend has none)."""
        distinct = list(dict.fromkeys(keys))
        if not distinct:
            return {}
        self.requests += 1
        futures = [self._enqueue(key, deadline) for key in distinct]
        values = await asyncio.gather(*(asyncio.shield(f) for f in futures))
        return dict(zip(distinct, values, strict=True))

    def _enqueue(self, key: K, deadline: float | None) -> asyncio.Future[V | None]:
        if deadline is None:
            self._unbounded = True
        elif self._deadline is None or deadline > self._deadline:
            self._deadline = deadline
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)  # its callers may have left (their deadline)
            self._pending[key] = future
        if self._flush_task is None or self._flush_task.done():
            self._full = asyncio.get_running_loop().create_future()
            self._flush_task = asyncio.create_task(self._flush_after_window(self._full))
        full = self._full
        if len(self._pending) >= self.max_batch and full is not None and not full.done():
            full.set_result(None)
        return future

    async def _flush_after_window(self, full: asyncio.Future[None]) -> None:
        try:
            try:
                await asyncio.wait_for(asyncio.shield(full), self.window_s)
            except TimeoutError:
                pass
            while self._pending:
                await self._flush_once()
        except BaseException as exc:  # never leave a caller waiting
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(UnavailableError(f"lookup failed: {exc!r}"))
            self._pending.clear()
            raise

    async def _flush_once(self) -> None:
        keys = list(self._pending)[: self.max_batch]
        batch = {key: self._pending.pop(key) for key in keys}
        deadline = None if self._unbounded else self._deadline
        if not self._pending:
            self._deadline, self._unbounded = None, False
        self.fetches += 1
        self.keys_fetched += len(keys)
        try:
            rows = await self._fetch(keys, deadline)
        except Exception as exc:
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc.copy() if isinstance(exc, MeshError) else exc)
            return
        except BaseException:  # cancelled (shutdown): nobody may wait forever
            for future in batch.values():
                if not future.done():
                    future.set_exception(UnavailableError("lookup cancelled: shutting down"))
            raise
        for key, future in batch.items():
            if not future.done():
                future.set_result(rows.get(key))


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # marks it retrieved: no "exception was never retrieved" noise
