"""Relational lookups from logic steps (``sql.lookup``): SQLite embedded, PostgreSQL in production.

SQLite works out of the box (`sqlite_factory`, a small DB-API pool; any DB-API 2.0 driver plugs in
through a factory); its queries run in a thread so the event loop never blocks. PostgreSQL goes
through `meshserve.orchestrator.logic.postgres` (asyncpg, coalesced ``= ANY($1)`` queries).
Values always travel as bound parameters, never formatted into the SQL text, so the
``db.query.text`` of the lookup spans holds no values.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError, NotFoundError, OverloadedError, UnavailableError
from meshserve.orchestrator.logic import LogicContext, logic
from meshserve.orchestrator.logic.per_loop import PerLoop
from meshserve.orchestrator.logic.postgres import PostgresConfig, PostgresLookup, PostgresPool
from meshserve.orchestrator.logic.secrets import SecretRef, secret_ref
from meshserve.orchestrator.logic.spans import client_span, db_attributes, db_span_name

__all__ = [
    "SqlPool",
    "SqlPoolConfig",
    "close_pools",
    "columns_of",
    "lookup_rows",
    "outputs_of_rows",
    "pool_for",
    "postgres_lookup_for",
    "postgres_lookups",
    "rows_by_key",
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


async def rows_by_key(pool: SqlPool, query: str, keys: Sequence[Any]) -> dict[Any, Any]:
    """The first row of each distinct key from `query` (one ``?``), None for keys without one;
    distinct keys are queried concurrently."""
    distinct = list(dict.fromkeys(keys))
    results = await asyncio.gather(*(pool.query(query, (key,)) for key in distinct))
    return {key: rows[0] if rows else None for key, rows in zip(distinct, results, strict=True)}


async def lookup_rows(
    pool: SqlPool, query: str, keys: Sequence[Any], where: str = ""
) -> list[dict[str, Any]]:
    """One row per key (in key order) from `query` with a single ``?`` placeholder.

    A key with no row is NotFoundError naming it; distinct keys are queried concurrently.
    """
    by_key = await rows_by_key(pool, query, keys)
    missing = [key for key, row in by_key.items() if row is None]
    if missing:
        raise NotFoundError(f"{where}no row for key {missing[0]!r}")
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


def outputs_of_rows(
    keys: Sequence[Any], by_key: Mapping[Any, Mapping[str, Any] | None], ctx: LogicContext
) -> dict[str, np.ndarray]:
    """The step's column outputs, one entry per key, by its ``on_missing`` param: ``error``
    (default; NotFoundError naming the first missing key) or ``default`` (the row is
    ``defaults[column]`` and output ``found`` (bool, name in ``found_output``) says which rows
    the table had)."""
    columns = [str(c) for c in ctx.param("columns")]
    mode = ctx.choice("on_missing", ("error", "default"), "error")
    missing = [key for key in dict.fromkeys(keys) if by_key.get(key) is None]
    if mode == "error":
        if missing:
            raise NotFoundError(
                f"step {ctx.step!r}: no row for key {missing[0]!r} "
                f"({len(missing)} of {len(set(keys))} keys missing)"
            )
        return columns_of([by_key[key] for key in keys], columns)  # type: ignore[misc]
    defaults = dict(ctx.param("defaults", {}))
    lacking = [c for c in columns if c not in defaults]
    if lacking:
        raise InvalidInputError(
            f"step {ctx.step!r}: on_missing: default needs 'defaults' for columns {lacking}"
        )
    rows = [by_key.get(key) or defaults for key in keys]
    out = columns_of(rows, columns)
    out[str(ctx.param("found_output", "found"))] = np.asarray(
        [by_key.get(key) is not None for key in keys], dtype=bool
    )
    return out


_pg_pools: PerLoop[PostgresPool] = PerLoop()
_pg_lookups: PerLoop[PostgresLookup] = PerLoop()


def _postgres_config(ctx: LogicContext) -> PostgresConfig:
    base = PostgresConfig()
    return PostgresConfig(
        pool_max_size=int(ctx.param("pool_max_size", base.pool_max_size)),
        statement_timeout_ms=int(ctx.param("statement_timeout_ms", base.statement_timeout_ms)),
        window_ms=float(ctx.param("batch_window_ms", base.window_ms)),
        max_batch=int(ctx.param("max_batch", base.max_batch)),
        application_name=str(ctx.param("application_name", base.application_name)),
    )


def postgres_lookup_for(ctx: LogicContext, dsn: SecretRef) -> PostgresLookup:
    """The shared lookup of this step's query on this event loop (pool per DSN and config)."""
    config = _postgres_config(ctx)
    pool = _pg_pools.get((dsn, config), lambda: PostgresPool(dsn.read(), dsn.source, config))
    query, key_column = str(ctx.param("query")), str(ctx.param("key_column"))
    return _pg_lookups.get(
        (pool, ctx.plan, query, key_column),
        lambda: PostgresLookup(pool, query, key_column, plan=ctx.plan),
    )


def postgres_lookups() -> list[PostgresLookup]:
    """Every PostgreSQL lookup made so far (their coalescers count requests and queries)."""
    return _pg_lookups.values()


async def close_pools() -> None:
    """Close the PostgreSQL pools opened on this event loop (shutdown, tests)."""
    _pg_lookups.take_loop()
    for pool in _pg_pools.take_loop():
        await pool.close()


@logic("sql.lookup")
async def sql_lookup(inputs: dict[str, Any], ctx: LogicContext) -> dict[str, Any]:
    """Rows by key. Params ``key`` (input name), ``query``, ``columns`` (outputs, one entry per
    key), ``on_missing`` / ``defaults`` (see `outputs_of_rows`), and the database:

    - SQLite (embedded default): ``database`` (path); ``query`` with one ``?``.
    - PostgreSQL: ``dsn_env`` (environment variable) or ``dsn_file`` (secret file) holding the
      DSN; ``query`` with ``$1`` = the array of keys (``WHERE id = ANY($1)``); ``key_column``
      (the selected column holding the key); optional ``batch_window_ms``, ``max_batch``,
      ``pool_max_size``, ``statement_timeout_ms``, ``application_name``.
    """
    key_name = ctx.param("key")
    if key_name not in inputs:
        raise InvalidInputError(
            f"step {ctx.step!r}: key input {key_name!r} is not wired; inputs: {sorted(inputs)}"
        )
    keys = _keys_of(inputs[key_name], key_name)
    query = str(ctx.param("query"))
    dsn = secret_ref(ctx.params, "dsn", f"step {ctx.step!r}")
    fetch: Callable[[], Awaitable[Mapping[Any, Any]]]
    if dsn is not None:
        lookup = postgres_lookup_for(ctx, dsn)
        pool = lookup.pool
        extra = {"db.namespace": pool.database, "server.address": pool.server_address,
                 "server.port": pool.server_port}  # fmt: skip
        attrs = db_attributes("postgresql", query, **extra)
        fetch = functools.partial(lookup.get, keys, ctx.deadline)
    else:
        path = ctx.path_param("database")
        attrs = db_attributes("sqlite", query, **{"db.namespace": path})
        fetch = functools.partial(rows_by_key, pool_for(ctx.plan, path), query, keys)
    with client_span(db_span_name(attrs), attrs) as span:
        by_key = await fetch()
        _record_rows(span, keys, by_key)
    return outputs_of_rows(keys, by_key, ctx)


def _record_rows(span: Any, keys: Sequence[Any], by_key: Mapping[Any, Any]) -> None:
    if span is not None:
        found = sum(1 for row in by_key.values() if row is not None)
        span.set_attribute("db.response.returned_rows", found)
        span.set_attribute("meshserve.lookup.keys", len(keys))
        span.set_attribute("meshserve.lookup.missing", len(by_key) - found)
