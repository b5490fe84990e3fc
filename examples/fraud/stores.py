"""The fraud example on production stores: the same plan as plan.yaml with the user table in
PostgreSQL, the behaviour features in Redis, an external risk service (http.json) and, for the
streaming labels, an online learner observing each transaction's behaviour vector.

`production_plan` derives that plan from plan.yaml (so both stay one plan): only the ``user`` and
``behaviour`` params change, and ``risk`` (and optionally ``learn``) steps are added. Where each
service is comes from the orchestrator's environment, never from the plan text:

    MESHSERVE_FRAUD_PG_DSN     PostgreSQL DSN (a secret: env or, with dsn_file, a secret file)
    MESHSERVE_FRAUD_REDIS_URL  Redis URL (may hold a password)
    MESHSERVE_FRAUD_RISK_URL   base URL of the risk service (examples/fraud/risk_service.py)

`load_postgres` / `load_redis` copy the data of build_data.py into those stores.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
PLAN = HERE / "plan.yaml"

__all__ = ["load_postgres", "load_redis", "production_plan"]


def production_plan(
    table: str = "fraud_users",
    prefix: str = "fraud:user:",
    *,
    name: str = "fraud-production",
    learner: str = "",
    risk_service: bool = True,
) -> dict[str, Any]:
    """The fraud plan on PostgreSQL `table`, Redis `prefix` and (with `risk_service`) the risk
    service (module doc); with `learner`, a ``learn`` step records behaviour vectors for labels
    from the stream."""
    plan = copy.deepcopy(yaml.safe_load(PLAN.read_text()))
    plan["name"] = name
    plan["description"] = "fraud scoring on PostgreSQL, Redis, an HTTP risk service"
    steps = {step["name"]: step for step in plan["steps"]}
    steps["user"]["logic"]["params"] = {
        "dsn_env": "MESHSERVE_FRAUD_PG_DSN",
        "query": f"SELECT id, risk_tier, account_age_days FROM {table} WHERE id = ANY($1)",
        "key_column": "id",
        "key": "user_id",
        "columns": ["risk_tier", "account_age_days"],
        "batch_window_ms": 1,
    }
    behaviour = steps["behaviour"]["logic"]["params"]
    behaviour.pop("source")
    behaviour.update({"redis_url_env": "MESHSERVE_FRAUD_REDIS_URL", "prefix": prefix})
    risk = {
        "name": "risk",
        "inputs": {"amount": "check.amount", "channel": "check.channel"},
        "logic": {
            "function": "http.json",
            "params": {
                "url": "$MESHSERVE_FRAUD_RISK_URL/v1/risk",
                "timeout_s": 1.0,
                "attempt_timeout_s": 0.5,
                "max_attempts": 2,
                "retry_non_idempotent": True,  # scoring is a pure function: safe to resend
                "breaker_failures": 5,
                "breaker_reset_s": 10,
                "max_response_bytes": 65536,
                "response": {"risk": {"kind": "float", "shape": [-1], "min": 0, "max": 1}},
            },
        },
    }
    index = [s["name"] for s in plan["steps"]].index("decide")
    if risk_service:
        plan["steps"].insert(index, risk)
        steps["decide"]["inputs"]["external_risk"] = "risk.risk"
    if learner:
        plan["steps"].insert(
            index,
            {
                "name": "learn",
                "inputs": {"input": "behaviour.input"},
                "logic": {
                    "function": "learner.observe",
                    "params": {"learner": learner, "features": "input", "model": f"{learner}-model",
                               "n_features": 64, "n_classes": 10, "export_every": 1_000_000},
                },
            },
        )  # fmt: skip
    return plan


async def load_postgres(dsn: str, table: str, data: Path) -> int:
    """Copy users.sqlite of `data` into PostgreSQL `table` (replaced); returns the row count."""
    import sqlite3

    import asyncpg

    rows = (
        sqlite3.connect(data / "users.sqlite")
        .execute("SELECT id, age, country, risk_tier, account_age_days FROM users")
        .fetchall()
    )
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, age int, country text, "
            "risk_tier int, account_age_days int)"
        )
        await conn.copy_records_to_table(table, records=rows)
    finally:
        await conn.close()
    return len(rows)


async def load_redis(url: str, prefix: str, data: Path) -> int:
    """Copy features.npz of `data` into Redis under `prefix` (layout: redis_features)."""
    from meshserve.orchestrator.logic.redis_features import write_redis_features

    with np.load(data / "features.npz") as npz:
        vectors = {str(k): v for k, v in zip(npz["keys"], npz["vectors"], strict=True)}
    await write_redis_features(url, prefix, vectors)
    return len(vectors)
