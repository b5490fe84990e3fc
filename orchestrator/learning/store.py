"""Learned state in Consul KV: JSON documents written with check-and-set, read back on start.

Keys (prefix ``meshserve/learning/``): ``bandits/<plan>/<step>`` (posteriors per context and arm)
and ``learners/<name>`` (weights, counters, version history). Every write carries the
ModifyIndex this process last read or wrote (0 for "must not exist yet"); a lost race raises
CheckAndSetError, so two writers can never silently overwrite each other. The KV object is
`meshserve.registry.KV` in production; anything with the same async `get`/`put`/`transact`
works in unit tests of the logic above it. `save(..., marker=...)` writes the document and
creates a marker key in one transaction (feedback.py: exactly-once feedback).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

from meshserve.errors import CheckAndSetError
from meshserve.names import kv_key
from meshserve.registry.kv import TxnOp

__all__ = ["PREFIX", "KVLike", "StateStore", "bandit_key", "learner_key"]

log = logging.getLogger(__name__)
S = TypeVar("S")

PREFIX = "meshserve/learning/"


class KVLike(Protocol):
    """The part of meshserve.registry.KV this module uses."""

    async def get(self, key: str) -> Any: ...

    async def put(self, key: str, value: bytes, cas: int | None = None) -> bool: ...

    async def transact(self, ops: list[TxnOp]) -> Any: ...


def bandit_key(plan: str, step: str, prefix: str = PREFIX) -> str:
    return kv_key(prefix, "bandits", plan, step)


def learner_key(name: str, prefix: str = PREFIX) -> str:
    return kv_key(prefix, "learners", name)


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class StateStore:
    """JSON documents by key with CAS; remembers the last ModifyIndex of each key it touched."""

    def __init__(self, kv: KVLike) -> None:
        self._kv = kv
        self._index: dict[str, int] = {}

    async def load(self, key: str) -> dict[str, Any] | None:
        """The stored document (None when absent); its index becomes the next write's CAS."""
        entry = await _maybe(self._kv.get(key))
        if entry is None:
            self._index[key] = 0
            return None
        self._index[key] = int(entry.modify_index)
        data = json.loads(bytes(entry.value).decode("utf-8"))
        if not isinstance(data, dict):
            raise CheckAndSetError(f"learning state at {key!r} is not a JSON object")
        return data

    async def save(
        self, key: str, document: Mapping[str, Any], marker: tuple[str, bytes] | None = None
    ) -> bool:
        """Write `document` if nobody wrote `key` since we last read or wrote it; with `marker`
        (key, value) also create that key in the same transaction. False (nothing written) when
        the marker exists already; CheckAndSetError when `key` changed."""
        # A key never read is expected not to exist (cas=0): loading its index here would let a
        # write based on state we never saw replace someone else's document.
        self._index.setdefault(key, 0)
        if self._index[key] < 0:
            raise CheckAndSetError(
                f"learning state {key!r} was overwritten by another writer; reload and retry"
            )
        body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")
        if marker is not None:
            return await self._save_marked(key, body, marker)
        ok = await _maybe(self._kv.put(key, body, cas=self._index[key]))
        if not ok:
            raise CheckAndSetError(
                f"learning state {key!r} changed since index {self._index[key]} "
                "(another orchestrator wrote it); reload and retry"
            )
        # Consul's PUT does not return the new index: read it back. Should another writer have
        # slipped in between, the value differs and the next save must reload first.
        entry = await _maybe(self._kv.get(key))
        if entry is not None and bytes(entry.value) == body:
            self._index[key] = int(entry.modify_index)
        else:
            self._index[key] = -1
        return True

    async def _save_marked(self, key: str, body: bytes, marker: tuple[str, bytes]) -> bool:
        ops = [TxnOp("cas", key, body, self._index[key]), TxnOp("cas", marker[0], marker[1], 0)]
        results = await _maybe(self._kv.transact(ops))
        if results is None:
            if await _maybe(self._kv.get(marker[0])) is not None:
                return False
            raise CheckAndSetError(
                f"learning state {key!r} changed since index {self._index[key]} "
                "(another orchestrator wrote it); reload and retry"
            )
        for entry in results:
            if entry.key == key:
                self._index[key] = int(entry.modify_index)
        return True

    async def save_retrying(
        self,
        key: str,
        build: Callable[[], S],
        encode: Callable[[S], Mapping[str, Any]],
        reload: Callable[[dict[str, Any]], None],
        marker: tuple[str, bytes] | None,
        attempts: int,
        pause: Callable[[int], Awaitable[None]],
    ) -> S | None:
        """Save what `build` makes (with `marker`); on a lost check-and-set `reload` the stored
        document, `pause`, and build again, up to `attempts` times (then CheckAndSetError).
        Returns what was saved, None when the marker existed (applied before)."""
        for attempt in range(1, max(1, attempts) + 1):
            built = build()
            try:
                saved = await self.save(key, encode(built), marker)
            except CheckAndSetError:
                if attempt >= attempts:
                    raise
                data = await self.load(key)
                if data is not None:
                    reload(data)
                await pause(attempt)
                continue
            return built if saved else None
        raise AssertionError("unreachable")

    def forget(self, key: str) -> None:
        self._index.pop(key, None)
