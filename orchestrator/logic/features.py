"""Feature-store lookups: pre-computed vectors by entity key, a TTL cache and coalesced queries.

Backends (`FeatureBackend`) fetch many keys at once, synchronously (they run in a thread):
`SqliteFeatureBackend` (table ``features(entity TEXT PRIMARY KEY, vector BLOB)``, float32 bytes)
and `NpzFeatureBackend` (arrays ``keys`` and ``vectors`` in a .npz file).

`FeatureLookup` is what logic calls. Algorithm: a key found in the local cache and younger than
``ttl_s`` (by the injected clock) is served from it. Other keys join a pending set; the first one
to arrive starts a window of ``batch_window_ms``; when it closes (or ``max_batch`` keys are pending)
one backend query fetches every pending key and resolves all waiters. Invariants: a key is queried
at most once per window however many callers want it; callers get rows in their own key order;
a key the backend lacks fails only the callers that asked for it (NotFoundError naming it).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from meshserve.errors import InvalidInputError, MeshError, NotFoundError, UnavailableError
from meshserve.orchestrator.logic import LogicContext, logic

__all__ = [
    "FeatureBackend",
    "FeatureLookup",
    "FeatureLookupConfig",
    "NpzFeatureBackend",
    "SqliteFeatureBackend",
    "write_sqlite_features",
]

log = logging.getLogger(__name__)


class FeatureBackend(Protocol):
    """Where pre-computed vectors live. `fetch` may block; it runs in a thread."""

    dim: int

    def fetch(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors of the keys that exist (missing keys are simply absent)."""
        ...


class SqliteFeatureBackend:
    """Vectors in SQLite: ``features(entity TEXT PRIMARY KEY, vector BLOB)`` of float32 bytes."""

    def __init__(self, path: str, dim: int) -> None:
        self.path = path
        self.dim = dim
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            except sqlite3.OperationalError as exc:
                raise UnavailableError(f"cannot open feature store {self.path!r}: {exc}") from None
            self._local.conn = conn
        return conn

    def fetch(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = (
                self._conn()
                .execute(f"SELECT entity, vector FROM features WHERE entity IN ({marks})", chunk)
                .fetchall()
            )
            for entity, blob in rows:
                out[str(entity)] = np.frombuffer(blob, dtype=np.float32)
        return out


class NpzFeatureBackend:
    """Vectors in a .npz file with ``keys`` (strings) and ``vectors`` (rows), loaded once."""

    def __init__(self, path: str) -> None:
        with np.load(path, allow_pickle=False) as data:
            keys = [str(k) for k in data["keys"]]
            vectors = np.asarray(data["vectors"], dtype=np.float32)
        self.dim = int(vectors.shape[1])
        self._index = {k: vectors[i] for i, k in enumerate(keys)}

    def fetch(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        return {k: self._index[k] for k in keys if k in self._index}


def write_sqlite_features(path: str | Path, vectors: dict[str, np.ndarray]) -> None:
    """Create (or replace) a SQLite feature table with `vectors` (tooling and tests)."""
    conn = sqlite3.connect(str(path))
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS features (entity TEXT PRIMARY KEY, vector BLOB)")
        conn.executemany(
            "INSERT OR REPLACE INTO features VALUES (?, ?)",
            [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in vectors.items()],
        )
        conn.commit()
    finally:
        conn.close()


@dataclass(frozen=True)
class FeatureLookupConfig:
    """Cache lifetime, coalescing window and the most keys one backend query may carry."""

    ttl_s: float = 60.0
    batch_window_ms: float = 2.0
    max_batch: int = 256
    cache_max_entries: int = 100_000


class FeatureLookup:
    """Cached, coalescing access to a `FeatureBackend` (see the module docstring)."""

    def __init__(
        self,
        backend: FeatureBackend,
        config: FeatureLookupConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.config = config or FeatureLookupConfig()
        self._clock = clock
        self._cache: dict[str, tuple[float, np.ndarray]] = {}
        self._pending: dict[str, asyncio.Future[np.ndarray | None]] = {}
        self._flush_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.backend_queries = 0
        self.cache_hits = 0

    async def get(self, keys: Sequence[str]) -> np.ndarray:
        """float32 matrix, one row per key in order; NotFoundError names missing keys."""
        keys = [str(k) for k in keys]
        now = self._clock()
        found: dict[str, np.ndarray] = {}
        waits: dict[str, asyncio.Future[np.ndarray | None]] = {}
        for key in dict.fromkeys(keys):
            cached = self._cache.get(key)
            if cached is not None and now - cached[0] < self.config.ttl_s:
                found[key] = cached[1]
                self.cache_hits += 1
            else:
                waits[key] = self._enqueue(key)
        if waits:
            values = await asyncio.gather(*(asyncio.shield(f) for f in waits.values()))
            missing = [k for k, v in zip(waits, values, strict=True) if v is None]
            if missing:
                raise NotFoundError(f"feature store has no vector for {missing}")
            found.update(zip(waits, values, strict=True))  # type: ignore[arg-type]
        if not keys:
            return np.zeros((0, self.backend.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def _enqueue(self, key: str) -> asyncio.Future[np.ndarray | None]:
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = future
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush_after_window())
        if len(self._pending) >= self.config.max_batch:
            self._wake.set()
        return future

    async def _flush_after_window(self) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), self.config.batch_window_ms / 1000)
        except TimeoutError:
            pass
        self._wake.clear()
        batch, self._pending = self._pending, {}
        keys = list(batch)
        try:
            self.backend_queries += 1
            rows = await asyncio.to_thread(self.backend.fetch, keys)
        except Exception as exc:
            for future in batch.values():  # one error per caller: each adds its own context
                if not future.done():
                    future.set_exception(exc.copy() if isinstance(exc, MeshError) else exc)
            return
        now = self._clock()
        for key, future in batch.items():
            vector = rows.get(key)
            if vector is not None:
                self._remember(key, now, vector)
            if not future.done():
                future.set_result(vector)
        if self._pending:  # keys that arrived during the query start the next window
            self._flush_task = asyncio.create_task(self._flush_after_window())

    def _remember(self, key: str, now: float, vector: np.ndarray) -> None:
        if len(self._cache) >= self.config.cache_max_entries:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (now, vector)

    def invalidate(self, key: str | None = None) -> None:
        """Drop one cached key (or all)."""
        if key is None:
            self._cache.clear()
        else:
            self._cache.pop(key, None)


_stores: dict[tuple[str, str], FeatureLookup] = {}


def store_for(plan: str, source: str, dim: int, config: FeatureLookupConfig) -> FeatureLookup:
    """The shared lookup of `plan` for `source` (a .npz file or a SQLite path), made once."""
    lookup = _stores.get((plan, source))
    if lookup is None:
        backend: FeatureBackend
        if source.endswith(".npz"):
            backend = NpzFeatureBackend(source)
        else:
            backend = SqliteFeatureBackend(source, dim)
        lookup = FeatureLookup(backend, config)
        _stores[(plan, source)] = lookup
    return lookup


@logic("features.lookup")
async def features_lookup(inputs: dict[str, Any], ctx: LogicContext) -> dict[str, Any]:
    """Feature rows by entity key: params ``source`` (.npz or SQLite path), ``key`` (input
    name), ``dim``, ``output`` (default "features"), ``ttl_s``, ``batch_window_ms``."""
    key_name = str(ctx.param("key"))
    if key_name not in inputs:
        raise InvalidInputError(
            f"step {ctx.step!r}: key input {key_name!r} is not wired; inputs: {sorted(inputs)}"
        )
    raw = np.asarray(inputs[key_name]).ravel()
    keys = [k.decode() if isinstance(k, bytes) else str(k) for k in raw.tolist()]
    config = FeatureLookupConfig(
        ttl_s=float(ctx.param("ttl_s", 60.0)),
        batch_window_ms=float(ctx.param("batch_window_ms", 2.0)),
    )
    lookup = store_for(ctx.plan, ctx.path_param("source"), int(ctx.param("dim", 0)), config)
    return {str(ctx.param("output", "features")): await lookup.get(keys)}
