"""Relational lookups against a real SQLite file: bound parameters, pooling, precise errors."""

from __future__ import annotations

import asyncio
import sqlite3

import numpy as np
import pytest

from meshserve.errors import InvalidInputError, NotFoundError
from meshserve.orchestrator.logic import LogicContext, run_logic
from meshserve.orchestrator.logic.sql import SqlPool, SqlPoolConfig, lookup_rows, sqlite_factory


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "users.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id TEXT PRIMARY KEY, age INTEGER, country TEXT, score REAL)")
    conn.executemany(
        "INSERT INTO users VALUES (?, ?, ?, ?)",
        [("u1", 31, "NL", 0.5), ("u2", 45, "DE", 0.25), ("x'; DROP TABLE users; --", 1, "XX", 0)],
    )
    conn.commit()
    conn.close()
    return str(path)


async def test_parameterised_query_and_pool_reuse(db):
    made = []

    def factory():
        conn = sqlite_factory(db)()
        made.append(conn)
        return conn

    pool = SqlPool(factory, SqlPoolConfig(size=2))
    results = await asyncio.gather(
        *(pool.query("SELECT * FROM users WHERE id = ?", ("u1",)) for _ in range(8))
    )
    assert all(r == [{"id": "u1", "age": 31, "country": "NL", "score": 0.5}] for r in results)
    assert len(made) <= 2
    # a hostile key is a value, never SQL
    rows = await pool.query("SELECT age FROM users WHERE id = ?", ("x'; DROP TABLE users; --",))
    assert rows == [{"age": 1}]
    assert len(await pool.query("SELECT * FROM users")) == 3
    pool.close()


async def test_bad_sql_is_invalid_input(db):
    pool = SqlPool(sqlite_factory(db))
    with pytest.raises(InvalidInputError, match="no such column: nope"):
        await pool.query("SELECT nope FROM users")
    with pytest.raises(InvalidInputError, match="must be a sequence or mapping"):
        await pool.query("SELECT * FROM users WHERE id = ?", "u1")  # type: ignore[arg-type]


async def test_read_only_by_default(db):
    pool = SqlPool(sqlite_factory(db))
    with pytest.raises(InvalidInputError, match="readonly"):
        await pool.query("DELETE FROM users")


async def test_lookup_rows_missing_key(db):
    pool = SqlPool(sqlite_factory(db))
    rows = await lookup_rows(pool, "SELECT * FROM users WHERE id = ?", ["u2", "u1", "u2"])
    assert [r["id"] for r in rows] == ["u2", "u1", "u2"]
    with pytest.raises(NotFoundError, match="no row for key 'u9'"):
        await lookup_rows(pool, "SELECT * FROM users WHERE id = ?", ["u1", "u9"])


async def test_sql_lookup_logic_step(db):
    ctx = LogicContext(
        params={
            "database": db,
            "query": "SELECT age, country FROM users WHERE id = ?",
            "key": "user_id",
            "columns": ["age", "country"],
        },
        plan="test-sql",
        step="user",
    )
    out = await run_logic("sql.lookup", {"user_id": np.array(["u2", "u1"], dtype=object)}, ctx)
    np.testing.assert_array_equal(out["age"], [45, 31])
    assert out["age"].dtype == np.int64
    assert list(out["country"]) == ["DE", "NL"]
    with pytest.raises(InvalidInputError, match="key input 'user_id' is not wired"):
        await run_logic("sql.lookup", {"uid": np.array(["u2"])}, ctx)
