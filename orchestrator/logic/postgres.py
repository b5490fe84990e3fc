"""Relational lookups on PostgreSQL: asyncpg, a bounded pool, prepared statements, coalesced keys.

`PostgresLookup` answers "the row of each key" for one query whose only parameter ``$1`` is the
array of keys (``SELECT id, tier FROM users WHERE id = ANY($1)``) and whose rows carry the key in
`key_column`. Concurrent requests' keys are coalesced (`KeyCoalescer`) into one query per
window. asyncpg prepares each query text once per connection and reuses it (its statement
cache), and binds the keys as a typed array, so values never reach the SQL text.

Failures: the request deadline bounds the query (asyncpg's ``timeout`` sends a cancel request
to the server when it passes; ``statement_timeout`` in the connection settings is a server-side
backstop) -> DeadlineExceededError; no free connection in time -> OverloadedError; a lost
connection (server restart, terminated backend, refused connect) is retried once on a fresh
connection, then UnavailableError; a bad query or key type -> InvalidInputError quoting the
query text. The DSN is a secret: it comes from the caller (an environment variable or a secret
file named by the plan), and no message or log line shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from meshserve.errors import (
    DeadlineExceededError,
    InvalidInputError,
    OverloadedError,
    UnavailableError,
)
from meshserve.orchestrator.logic.coalesce import KeyCoalescer
from meshserve.orchestrator.logic.metrics import STORE_KEYS, STORE_QUERIES

__all__ = ["PostgresConfig", "PostgresLookup", "PostgresPool"]

log = logging.getLogger(__name__)

_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionError,
    OSError,
)


def _connection_lost(exc: BaseException) -> bool:
    """Whether `exc` means this connection is unusable: lost, terminated by the server, or left
    mid-protocol (asyncpg's InternalClientError when a terminated backend's last message races
    a new query)."""
    if isinstance(exc, TimeoutError):  # an OSError, but the deadline: asyncpg cancelled it
        return False
    if isinstance(exc, (*_CONNECTION_LOST, asyncpg.exceptions.InternalClientError)):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


@dataclass(frozen=True)
class PostgresConfig:
    """Pool bounds, timeouts and coalescing of PostgreSQL lookups."""

    pool_min_size: int = 1
    pool_max_size: int = 8
    acquire_timeout_s: float = 2.0
    connect_timeout_s: float = 5.0
    statement_timeout_ms: int = 30_000  # server-side backstop; the request deadline comes first
    window_ms: float = 1.0
    max_batch: int = 1024
    application_name: str = "meshserve"


class PostgresPool:
    """A lazily created asyncpg pool for one DSN; `source` names where the DSN came from."""

    def __init__(self, dsn: str, source: str, config: PostgresConfig | None = None) -> None:
        self._dsn = dsn
        self.source = source
        self.config = config or PostgresConfig()
        parts = urlsplit(dsn) if "://" in dsn else None
        self.server_address = parts.hostname if parts else None
        self.server_port = parts.port if parts else None
        self.database = parts.path.lstrip("/") or None if parts else None
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self.reconnects = 0

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                cfg = self.config
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=cfg.pool_min_size,
                    max_size=cfg.pool_max_size,
                    timeout=cfg.connect_timeout_s,
                    server_settings={
                        "statement_timeout": str(cfg.statement_timeout_ms),
                        "application_name": cfg.application_name,
                    },
                )
            return self._pool

    async def fetch(self, query: str, arg: Any, deadline: float | None) -> list[asyncpg.Record]:
        """Rows of `query` with ``$1`` = `arg` (see the module docstring for failures)."""
        for attempt in (1, 2):
            try:
                return await self._fetch_once(query, arg, deadline)
            except Exception as exc:
                if not _connection_lost(exc):
                    raise
                reason = f"{type(exc).__name__}: {str(exc)[:200]}"
                if attempt == 2:
                    raise UnavailableError(
                        f"PostgreSQL ({self.source}) unreachable after a retry: {reason}"
                    ) from None
                log.info("PostgreSQL (%s) connection lost (%s); retrying once", self.source, reason)
                self.reconnects += 1
                await self._reset_if_broken()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch_once(
        self, query: str, arg: Any, deadline: float | None
    ) -> list[asyncpg.Record]:
        pool = await self._get_pool()
        left = _left(deadline, f"PostgreSQL query ({self.source})")
        acquire_s = (
            self.config.acquire_timeout_s
            if left is None
            else min(left, self.config.acquire_timeout_s)
        )
        try:
            conn = await pool.acquire(timeout=acquire_s)
        except TimeoutError:
            if left is not None and acquire_s >= left:
                raise DeadlineExceededError(
                    f"no PostgreSQL connection ({self.source}) free before the request deadline"
                ) from None
            raise OverloadedError(
                f"no free PostgreSQL connection ({self.source}) within {acquire_s:.3g}s "
                f"(pool max {self.config.pool_max_size})",
                retry_pushback_ms=100,
            ) from None
        try:
            timeout = _left(deadline, f"PostgreSQL query ({self.source})")
            rows: list[asyncpg.Record] = await conn.fetch(query, arg, timeout=timeout)
            return rows
        except Exception as exc:
            if _connection_lost(exc):
                with contextlib.suppress(asyncpg.InterfaceError):  # the pool may have dropped it
                    conn.terminate()  # never reused: the pool replaces it
            raise self._converted(exc, query) from None
        finally:
            await pool.release(conn)

    def _converted(self, exc: Exception, query: str) -> Exception:
        """The meshserve error for a failed query (connection loss is kept for the retry)."""
        if isinstance(exc, TimeoutError | asyncpg.QueryCanceledError):
            return DeadlineExceededError(
                f"PostgreSQL query ({self.source}) cancelled at the request deadline: "
                f"{query[:200]!r}"
            )
        if _connection_lost(exc) or not isinstance(
            exc, asyncpg.PostgresError | TypeError | ValueError
        ):
            return exc
        return InvalidInputError(
            f"PostgreSQL refused the query or its keys ({type(exc).__name__}: "
            f"{str(exc)[:200]}); query: {query[:200]!r}"
        )

    async def _reset_if_broken(self) -> None:
        pool = self._pool
        if pool is not None:
            await pool.expire_connections()  # every connection is replaced before its next use

    async def close(self) -> None:
        """Close the pool (connections in use are closed when released)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def _left(deadline: float | None, what: str) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceededError(f"{what}: the request deadline passed before it started")
    return left


class PostgresLookup:
    """Row of each key from `query` (``$1`` = key array), rows keyed by `key_column`."""

    def __init__(self, pool: PostgresPool, query: str, key_column: str, *, plan: str = "") -> None:
        if "$1" not in query or "$2" in query:
            raise InvalidInputError(
                f"a PostgreSQL lookup query takes exactly one parameter, $1 (the array of keys, "
                f"e.g. 'WHERE id = ANY($1)'); got {query[:200]!r}"
            )
        self.pool = pool
        self.query = query
        self.key_column = key_column
        self.plan = plan
        cfg = pool.config
        self.coalescer: KeyCoalescer[Hashable, Mapping[str, Any]] = KeyCoalescer(
            self._fetch, window_s=cfg.window_ms / 1000, max_batch=cfg.max_batch
        )

    async def get(
        self, keys: Sequence[Hashable], deadline: float | None = None
    ) -> dict[Hashable, Mapping[str, Any] | None]:
        """Row of each distinct key (None when the table has none)."""
        return await self.coalescer.get(keys, deadline)

    async def _fetch(
        self, keys: list[Hashable], deadline: float | None
    ) -> dict[Hashable, Mapping[str, Any]]:
        try:
            rows = await self.pool.fetch(self.query, keys, deadline)
        except Exception:
            STORE_QUERIES.labels("postgres", self.plan, "error").inc()
            raise
        STORE_QUERIES.labels("postgres", self.plan, "ok").inc()
        STORE_KEYS.labels("postgres", self.plan).inc(len(keys))
        out: dict[Hashable, Mapping[str, Any]] = {}
        for row in rows:
            if self.key_column not in row:
                raise InvalidInputError(
                    f"PostgreSQL lookup rows have no key column {self.key_column!r} "
                    f"(columns: {list(row.keys())}); select it so rows can be matched to keys"
                )
            out.setdefault(row[self.key_column], dict(row))
        return out
