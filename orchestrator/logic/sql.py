"""Relational lookups from logic steps: a small DB-API connection pool, parameterised queries only.

SQLite works out of the box (`sqlite_factory`); any DB-API 2.0 driver plugs in through a factory
(a zero-argument callable returning a connection). Queries run in a thread so the event loop never
blocks. Values always travel as bound parameters, never formatted into the SQL text.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError, NotFoundError, OverloadedError, UnavailableError
from meshserve.orchestrator.logic import LogicContext, logic

__all__ = [
    "SqlPool",
    "SqlPoolConfig",
    "columns_of",
    "lookup_rows",
    "pool_for",
    "sqlite_factory",
]

log = logging.getLogger(__name__)

ConnectionFactory = Callable[[], Any]


@dataclass(frozen=True)
class SqlPoolConfig:
    """Pool size and how long a query may wait for a free connection."""

    size: int = 4
    acquire_timeout_s: float = 5.0


def sqlite_factory(path: str, *, read_only: bool = True) -> ConnectionFactory:
    """Connections to the SQLite file `path` (read-only by default), usable from any thread."""

    def connect() -> sqlite3.Connection:
        uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
        try:
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=5.0)
        except sqlite3.OperationalError as exc:
            raise UnavailableError(f"cannot open SQLite database {path!r}: {exc}") from None
        return conn

    return connect


class SqlPool:
    """At most `size` connections made by `factory`, reused; every query gets one exclusively."""

    def __init__(self, factory: ConnectionFactory, config: SqlPoolConfig | None = None) -> None:
        self._factory = factory
        self._config = config or SqlPoolConfig()
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(self._config.size)
        self._closed = False

    async def query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[dict[str, Any]]:
        """Rows of `sql` run with bound `params`, each a dict column -> value."""
        if not isinstance(params, Sequence | Mapping) or isinstance(params, str | bytes):
            raise InvalidInputError(
                f"SQL params must be a sequence or mapping of values, got {type(params).__name__}"
            )
        return await asyncio.to_thread(self._run, sql, params)

    def _run(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[dict[str, Any]]:
        if self._closed:
            raise UnavailableError("SQL pool is closed")
        if not self._slots.acquire(timeout=self._config.acquire_timeout_s):
            raise OverloadedError(
                f"no free database connection within {self._config.acquire_timeout_s}s "
                f"(pool size {self._config.size})",
                retry_pushback_ms=100,
            )
        conn = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._factory()
            cursor = conn.cursor()
            try:
                cursor.execute(sql, params)
                names = [d[0] for d in cursor.description or ()]
                rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            finally:
                cursor.close()
            self._idle.put(conn)
            conn = None
            return rows
        except (sqlite3.ProgrammingError, sqlite3.OperationalError) as exc:
            raise InvalidInputError(f"SQL query failed: {exc}; query: {sql!r}") from None
        finally:
            if conn is not None:  # broken connection: drop it
                try:
                    conn.close()
                except Exception:  # pragma: no cover - best effort
                    log.debug("closing a broken connection failed", exc_info=True)
            self._slots.release()

    def close(self) -> None:
        """Close idle connections; later queries fail with UnavailableError."""
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def columns_of(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Column arrays (one entry per row) of `names` from `rows`; numbers become float64/int64."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        if all(isinstance(v, bool | int) for v in values):
            out[name] = np.asarray(values, dtype=np.int64)
        elif all(isinstance(v, int | float) for v in values):
            out[name] = np.asarray(values, dtype=np.float64)
        else:
            out[name] = np.asarray(["" if v is None else str(v) for v in values], dtype=object)
    return out


_pools: dict[tuple[str, str], SqlPool] = {}
_pools_lock = threading.Lock()


def pool_for(plan: str, dsn: str, factory: ConnectionFactory | None = None) -> SqlPool:
    """The pool of `plan` for `dsn` (a SQLite path unless `factory` is given), made on first use."""
    with _pools_lock:
        pool = _pools.get((plan, dsn))
        if pool is None:
            pool = SqlPool(factory or sqlite_factory(dsn))
            _pools[(plan, dsn)] = pool
        return pool


async def lookup_rows(
    pool: SqlPool, query: str, keys: Sequence[Any], where: str = ""
) -> list[dict[str, Any]]:
    """One row per key (in key order) from `query` with a single ``?`` placeholder.

    A key with no row is NotFoundError naming it; distinct keys are queried concurrently.
    """
    distinct = list(dict.fromkeys(keys))
    results = await asyncio.gather(*(pool.query(query, (key,)) for key in distinct))
    by_key: dict[Any, dict[str, Any]] = {}
    for key, rows in zip(distinct, results, strict=True):
        if not rows:
            raise NotFoundError(f"{where}no row for key {key!r}")
        by_key[key] = rows[0]
    return [by_key[key] for key in keys]


def _keys_of(value: Any, name: str) -> list[Any]:
    array = np.asarray(value)
    if array.ndim > 1 and array.shape[1:] != (1,) * (array.ndim - 1):
        raise InvalidInputError(
            f"key input {name!r} has shape {list(array.shape)}; expected one key per row"
        )
    return [
        v.decode() if isinstance(v, bytes) else v.item() if isinstance(v, np.generic) else v
        for v in array.ravel()
    ]


@logic("sql.lookup")
async def sql_lookup(inputs: dict[str, Any], ctx: LogicContext) -> dict[str, Any]:
    """Rows by key: params ``database`` (SQLite path), ``query`` (one ``?``), ``key`` (input
    name), ``columns`` (outputs). Outputs one array per column, one entry per key."""
    key_name = ctx.param("key")
    if key_name not in inputs:
        raise InvalidInputError(
            f"step {ctx.step!r}: key input {key_name!r} is not wired; inputs: {sorted(inputs)}"
        )
    keys = _keys_of(inputs[key_name], key_name)
    pool = pool_for(ctx.plan, ctx.path_param("database"))
    rows = await lookup_rows(pool, str(ctx.param("query")), keys, where=f"step {ctx.step!r}: ")
    return columns_of(rows, list(ctx.param("columns")))
