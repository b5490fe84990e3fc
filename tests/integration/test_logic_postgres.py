"""``sql.lookup`` on the real local PostgreSQL: coalesced ``= ANY($1)`` queries under concurrency,
deadline cancellation of a slow query, connection loss retried once, missing keys, secrets, spans.
"""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import urlsplit

import asyncpg
import numpy as np
import pytest

from meshserve.errors import (
    DeadlineExceededError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from meshserve.orchestrator.logic import LogicContext, run_logic
from meshserve.orchestrator.logic.sql import close_pools, postgres_lookup_for
from tests.stores import PG_DSN, require_service, span_exporter, unique_name
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

USERS = {1000 + i: (i % 3, 10 * i) for i in range(200)}


@pytest.fixture
async def table(monkeypatch):
    parts = urlsplit(PG_DSN)
    require_service("PostgreSQL", parts.hostname or "127.0.0.1", parts.port or 5432)
    name = unique_name("users")
    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(
        f"CREATE TABLE {name} (id bigint PRIMARY KEY, risk_tier int, account_age_days int)"
    )
    await conn.executemany(
        f"INSERT INTO {name} VALUES ($1, $2, $3)", [(k, *v) for k, v in USERS.items()]
    )
    monkeypatch.setenv("MESHSERVE_TEST_PG", PG_DSN)
    try:
        yield name, conn
    finally:
        await close_pools()
        await conn.execute(f"DROP TABLE IF EXISTS {name}")
        await conn.close()


def ctx_for(table: str, deadline_s: float | None = 10.0, **params) -> LogicContext:
    base = {
        "dsn_env": "MESHSERVE_TEST_PG",
        "query": f"SELECT id, risk_tier, account_age_days FROM {table} WHERE id = ANY($1)",
        "key": "user_id",
        "key_column": "id",
        "columns": ["risk_tier", "account_age_days"],
        "batch_window_ms": 5,
        "application_name": table,
    }
    base.update(params)
    deadline = None if deadline_s is None else time.monotonic() + deadline_s
    return LogicContext(params=base, plan="pg-test", step="user", deadline=deadline)


async def test_concurrent_lookups_are_correct_and_coalesced(table):
    name, _ = table
    rng = np.random.default_rng(7)
    calls = [rng.choice(list(USERS), size=int(rng.integers(1, 6))) for _ in range(32)]
    ctx = ctx_for(name)
    results = await asyncio.gather(
        *(run_logic("sql.lookup", {"user_id": keys}, ctx) for keys in calls)
    )
    for keys, out in zip(calls, results, strict=True):
        assert out["risk_tier"].tolist() == [USERS[int(k)][0] for k in keys]
        assert out["account_age_days"].tolist() == [USERS[int(k)][1] for k in keys]
    coalescer = postgres_lookup_for(ctx, _dsn_ref()).coalescer
    assert coalescer.requests == 32
    assert coalescer.fetches / coalescer.requests < 1, (coalescer.fetches, coalescer.requests)


def _dsn_ref():
    from meshserve.orchestrator.logic.secrets import SecretRef

    return SecretRef(env_var="MESHSERVE_TEST_PG")


async def test_missing_key_is_an_error_or_a_default_row(table):
    name, _ = table
    with pytest.raises(NotFoundError, match="no row for key 5"):
        await run_logic("sql.lookup", {"user_id": np.array([1001, 5])}, ctx_for(name))
    out = await run_logic(
        "sql.lookup",
        {"user_id": np.array([1001, 5])},
        ctx_for(name, on_missing="default", defaults={"risk_tier": -1, "account_age_days": 0}),
    )
    assert out["risk_tier"].tolist() == [USERS[1001][0], -1]
    assert out["found"].tolist() == [True, False]


async def test_deadline_cancels_a_slow_query_on_the_server(table):
    name, conn = table
    ctx = ctx_for(
        name,
        deadline_s=0.5,
        query=f"SELECT id, risk_tier, account_age_days, pg_sleep(30) AS s FROM {name} "
        "WHERE id = ANY($1)",
    )
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        await run_logic("sql.lookup", {"user_id": np.array([1001])}, ctx)
    assert time.monotonic() - started < 5.0

    async def no_sleeping_query() -> bool:
        active = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
            "AND state = 'active' AND query LIKE '%pg_sleep%'",
            name,
        )
        return active == 0

    await wait_until(no_sleeping_query, 10.0, "the server cancelled the pg_sleep query")


async def test_connection_loss_is_retried_once(table):
    name, conn = table
    terminate = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1 AND pid <> pg_backend_pid()"
    )
    ctx = ctx_for(name)
    await run_logic("sql.lookup", {"user_id": np.array([1002])}, ctx)
    assert await conn.fetchval(terminate, name) >= 1  # idle: replaced on acquire, or retried
    out = await run_logic("sql.lookup", {"user_id": np.array([1003])}, ctx)
    assert out["risk_tier"].tolist() == [USERS[1003][0]]
    pool = postgres_lookup_for(ctx, _dsn_ref()).pool
    before = pool.reconnects

    slow = ctx_for(
        name,
        query=f"SELECT id, risk_tier, account_age_days, pg_sleep(0.5) AS s FROM {name} "
        "WHERE id = ANY($1)",
    )
    task = asyncio.create_task(run_logic("sql.lookup", {"user_id": np.array([1004])}, slow))

    async def query_running() -> bool:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                "AND state = 'active' AND query LIKE '%pg_sleep%'",
                name,
            )
        )

    await wait_until(query_running, 10.0, "the slow lookup runs on the server")
    assert await conn.fetchval(terminate, name) >= 1  # mid-query: the lookup retries once
    out = await asyncio.wait_for(task, 10.0)
    assert out["risk_tier"].tolist() == [USERS[1004][0]]
    assert pool.reconnects == before + 1  # exactly one retry for the query that lost its backend


async def test_unreachable_server_is_unavailable_without_showing_the_dsn(table, monkeypatch):
    name, _ = table
    monkeypatch.setenv("MESHSERVE_TEST_PG_DOWN", "postgresql://postgres:s3cret@127.0.0.1:1/test")
    ctx = ctx_for(name, dsn_env="MESHSERVE_TEST_PG_DOWN")
    with pytest.raises(UnavailableError) as err:
        await run_logic("sql.lookup", {"user_id": np.array([1001])}, ctx)
    assert "$MESHSERVE_TEST_PG_DOWN" in err.value.message
    assert "s3cret" not in err.value.message


async def test_dsn_from_a_secret_file_and_never_in_plan_text(table, tmp_path):
    name, _ = table
    secret = tmp_path / "pg.dsn"
    secret.write_text(PG_DSN + "\n")
    os.chmod(secret, 0o600)
    ctx = ctx_for(name, dsn_env="", dsn_file=str(secret))
    out = await run_logic("sql.lookup", {"user_id": np.array([1004])}, ctx)
    assert out["risk_tier"].tolist() == [USERS[1004][0]]
    with pytest.raises(InvalidInputError, match="dsn_env"):
        await run_logic("sql.lookup", {"user_id": np.array([1004])}, ctx_for(name, dsn=PG_DSN))


async def test_bad_query_is_invalid_input_naming_it(table):
    name, _ = table
    ctx = ctx_for(name, query=f"SELECT id, nope FROM {name} WHERE id = ANY($1)")
    with pytest.raises(InvalidInputError, match="nope"):
        await run_logic("sql.lookup", {"user_id": np.array([1001])}, ctx)


async def test_lookup_span_has_db_semantic_conventions(table):
    name, _ = table
    exporter = span_exporter()
    await run_logic("sql.lookup", {"user_id": np.array([1001, 1002])}, ctx_for(name))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    span = spans[f"SELECT {name}"]
    attrs = dict(span.attributes or {})
    assert attrs["db.system"] == attrs["db.system.name"] == "postgresql"
    assert attrs["db.operation.name"] == "SELECT"
    assert attrs["db.collection.name"] == name
    assert "$1" in attrs["db.query.text"] and "1001" not in attrs["db.query.text"]
    assert attrs["db.namespace"] == "test" and attrs["server.port"] == 5432
    assert attrs["db.response.returned_rows"] == 2
    assert (
        span.parent is not None and spans["logic sql.lookup"].context.span_id == span.parent.span_id
    )
