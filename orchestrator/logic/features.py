"""Feature-store lookups: pre-computed vectors by entity key, a TTL cache and coalesced queries.

Backends fetch many keys at once. Embedded ones (`FeatureBackend`) are synchronous and run in a
thread: `SqliteFeatureBackend` (table ``features(entity TEXT PRIMARY KEY, vector BLOB)``, float32
bytes) and `NpzFeatureBackend` (arrays ``keys`` and ``vectors`` in a .npz file). The production
one, `RedisFeatureBackend` (`AsyncFeatureBackend`, pipelined reads; key layout in
`meshserve.orchestrator.logic.redis_features`), runs on the event loop.

`FeatureLookup` is what logic calls. Algorithm: a key found in the local cache and younger than
``ttl_s`` (by the injected clock) is served from it (a cache hit); the others (misses) go through
a `KeyCoalescer`: one backend query per ``batch_window_ms`` window (or ``max_batch`` keys) for
every caller. Invariants: a key is queried at most once per window however many callers want it;
callers get rows in their own key order; a key the backend lacks fails only the callers that
asked for it (NotFoundError naming it), or becomes a default row when the step says so.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from meshserve.errors import InvalidInputError, NotFoundError, UnavailableError
from meshserve.orchestrator.logic import LogicContext, logic
from meshserve.orchestrator.logic.coalesce import KeyCoalescer
from meshserve.orchestrator.logic.metrics import CACHE_LOOKUPS, STORE_KEYS, STORE_QUERIES
from meshserve.orchestrator.logic.per_loop import PerLoop
from meshserve.orchestrator.logic.redis_features import RedisFeatureBackend
from meshserve.orchestrator.logic.secrets import SecretRef, secret_ref
from meshserve.orchestrator.logic.spans import client_span, db_attributes

__all__ = [
    "AsyncFeatureBackend",
    "FeatureBackend",
    "FeatureLookup",
    "FeatureLookupConfig",
    "NpzFeatureBackend",
    "SqliteFeatureBackend",
    "close_stores",
    "redis_store_for",
    "store_for",
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


@runtime_checkable
class AsyncFeatureBackend(Protocol):
    """A feature store with an asyncio client (Redis): `fetch_async` runs on the event loop."""

    dim: int
    store: str

    async def fetch_async(
        self, keys: Sequence[str], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        """Vectors of the keys that exist; `deadline` in ``time.monotonic()`` seconds."""
        ...


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
    """Cached, coalescing access to a `FeatureBackend` (see the module docstring).

    `store` and `plan` label the cache and backend metrics (`meshserve.orchestrator.logic.metrics`).
    """

    def __init__(
        self,
        backend: FeatureBackend | AsyncFeatureBackend,
        config: FeatureLookupConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        store: str = "",
        plan: str = "",
    ) -> None:
        self.backend = backend
        self.config = config or FeatureLookupConfig()
        self.store = store or str(getattr(backend, "store", type(backend).__name__))
        self.plan = plan
        self._clock = clock
        self._cache: dict[str, tuple[float, np.ndarray]] = {}
        self.coalescer: KeyCoalescer[str, np.ndarray] = KeyCoalescer(
            self._fetch,
            window_s=self.config.batch_window_ms / 1000,
            max_batch=self.config.max_batch,
        )
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def backend_queries(self) -> int:
        """Backend fetches made so far (one per coalesced batch)."""
        return self.coalescer.fetches

    async def get(self, keys: Sequence[str], deadline: float | None = None) -> np.ndarray:
        """float32 matrix, one row per key in order; NotFoundError names missing keys."""
        keys = [str(k) for k in keys]
        found = await self.get_rows(keys, deadline)
        missing = [k for k, v in found.items() if v is None]
        if missing:
            raise NotFoundError(f"feature store has no vector for {missing}")
        return self.stack(keys, found)

    def stack(self, keys: Sequence[str], rows: Mapping[str, np.ndarray | None]) -> np.ndarray:
        """Rows of `keys` as a float32 matrix (every key must have a row)."""
        if not keys:
            return np.zeros((0, self.backend.dim), dtype=np.float32)
        return np.stack([rows[k] for k in keys]).astype(np.float32, copy=False)  # type: ignore[misc]

    async def get_rows(
        self, keys: Sequence[str], deadline: float | None = None
    ) -> dict[str, np.ndarray | None]:
        """Vector of each distinct key (None when the store has none): cache first, then one
        coalesced backend fetch for the rest."""
        now = self._clock()
        found: dict[str, np.ndarray | None] = {}
        wanted: list[str] = []
        for key in dict.fromkeys(str(k) for k in keys):
            cached = self._cache.get(key)
            if cached is not None and now - cached[0] < self.config.ttl_s:
                found[key] = cached[1]
            else:
                wanted.append(key)
        hits, misses = len(found), len(wanted)
        self.cache_hits += hits
        self.cache_misses += misses
        if hits:
            CACHE_LOOKUPS.labels(self.store, self.plan, "hit").inc(hits)
        if misses:
            CACHE_LOOKUPS.labels(self.store, self.plan, "miss").inc(misses)
            found.update(await self.coalescer.get(wanted, deadline))
        return found

    async def _fetch(self, keys: list[str], deadline: float | None) -> dict[str, np.ndarray]:
        backend = self.backend
        try:
            if isinstance(backend, AsyncFeatureBackend):
                rows = await backend.fetch_async(keys, deadline)
            else:
                rows = await asyncio.to_thread(backend.fetch, keys)
        except Exception:
            STORE_QUERIES.labels(self.store, self.plan, "error").inc()
            raise
        STORE_QUERIES.labels(self.store, self.plan, "ok").inc()
        STORE_KEYS.labels(self.store, self.plan).inc(len(keys))
        now = self._clock()
        for key, vector in rows.items():
            self._remember(key, now, vector)
        return rows

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


_stores: PerLoop[FeatureLookup] = PerLoop()


def store_for(plan: str, source: str, dim: int, config: FeatureLookupConfig) -> FeatureLookup:
    """The shared lookup of `plan` for `source` (a .npz file or a SQLite path), made once per
    event loop (its coalescer's futures belong to the loop)."""

    def make() -> FeatureLookup:
        backend: FeatureBackend
        if source.endswith(".npz"):
            backend, store = NpzFeatureBackend(source), "npz"
        else:
            backend, store = SqliteFeatureBackend(source, dim), "sqlite"
        return FeatureLookup(backend, config, store=store, plan=plan)

    return _stores.get((plan, source), make)


def redis_store_for(
    plan: str, url: SecretRef, prefix: str, field: str, dim: int, config: FeatureLookupConfig
) -> FeatureLookup:
    """The shared Redis-backed lookup of `plan` on this event loop (its connections are bound
    to the loop), made once per URL source, prefix and field."""

    def make() -> FeatureLookup:
        backend = RedisFeatureBackend(
            url.read(), prefix=prefix, dim=dim, field=field, source=url.source
        )
        return FeatureLookup(backend, config, store="redis", plan=plan)

    return _stores.get((plan, url, prefix, field), make)


async def close_stores() -> None:
    """Forget the lookups of this event loop, closing Redis connections (shutdown, tests)."""
    for lookup in _stores.take_loop():
        if isinstance(lookup.backend, RedisFeatureBackend):
            await lookup.backend.close()


@logic("features.lookup")
async def features_lookup(inputs: dict[str, Any], ctx: LogicContext) -> dict[str, Any]:
    """Feature rows by entity key. Params ``key`` (input name), ``dim``, ``output`` (default
    "features"), ``ttl_s``, ``batch_window_ms``, and the store:

    - embedded: ``source`` (a .npz file or a SQLite path);
    - Redis: ``redis_url_env`` / ``redis_url_file`` (where the URL is; see
      `meshserve.orchestrator.logic.redis_features` for the key layout), ``prefix``, ``field``.

    Missing entities: ``on_missing: error`` (default, NotFoundError naming them) or ``default``
    (the row is ``default`` (a number, 0.0 unless given) in every column, and output ``found``
    (bool; name in ``found_output``) says which rows the store had).
    """
    key_name = str(ctx.param("key"))
    if key_name not in inputs:
        raise InvalidInputError(
            f"step {ctx.step!r}: key input {key_name!r} is not wired; inputs: {sorted(inputs)}"
        )
    raw = np.asarray(inputs[key_name]).ravel()
    keys = [k.decode() if isinstance(k, bytes) else str(k) for k in raw.tolist()]
    mode = ctx.choice("on_missing", ("error", "default"), "error")
    config = FeatureLookupConfig(
        ttl_s=float(ctx.param("ttl_s", 60.0)),
        batch_window_ms=float(ctx.param("batch_window_ms", 2.0)),
    )
    dim = int(ctx.param("dim", 0))
    url = secret_ref(ctx.params, "redis_url", f"step {ctx.step!r}")
    if url is not None:
        prefix, field = str(ctx.param("prefix", "")), str(ctx.param("field", "vector"))
        lookup = redis_store_for(ctx.plan, url, prefix, field, dim, config)
        attrs = db_attributes("redis", "HGET", **{"db.namespace": prefix})
    else:
        lookup = store_for(ctx.plan, ctx.path_param("source"), dim, config)
        attrs = db_attributes(lookup.store, "SELECT", **{"db.namespace": ctx.path_param("source")})
    attrs["meshserve.feature_store"] = lookup.store
    with client_span(f"features.lookup {lookup.store}", attrs) as span:
        hits_before, misses_before = lookup.cache_hits, lookup.cache_misses
        rows = await lookup.get_rows(keys, ctx.deadline)
        missing = [k for k, v in rows.items() if v is None]
        if span is not None:
            span.set_attribute("meshserve.cache.hits", lookup.cache_hits - hits_before)
            span.set_attribute("meshserve.cache.misses", lookup.cache_misses - misses_before)
            span.set_attribute("meshserve.cache.hit", not (lookup.cache_misses - misses_before))
            span.set_attribute("meshserve.lookup.keys", len(keys))
            span.set_attribute("meshserve.lookup.missing", len(missing))
    output = str(ctx.param("output", "features"))
    if mode == "error" or not missing:
        if missing:
            raise NotFoundError(
                f"step {ctx.step!r}: feature store has no vector for {missing[:10]}"
            )
        out: dict[str, Any] = {output: lookup.stack(keys, rows)}
    else:
        fill = np.full(lookup.backend.dim, float(ctx.param("default", 0.0)), dtype=np.float32)
        out = {output: lookup.stack(keys, {k: fill if v is None else v for k, v in rows.items()})}
    if mode == "default":
        out[str(ctx.param("found_output", "found"))] = np.asarray(
            [rows[k] is not None for k in keys], dtype=bool
        )
    return out
