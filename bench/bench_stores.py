"""The fraud plan on its embedded stores (SQLite users + SQLite features) against production
stores (PostgreSQL users + Redis features, and the same plus the HTTP risk service), at
concurrency 1, 8 and 32, in one run on this machine.

The engine runs in this process over real onnxruntime sessions (InProcessCaller), so the
difference between rows is the stores (no model processes, no gRPC): every configuration runs
the same validation, models and business rule. The feature cache is off (``ttl_s: 0``) so each
request really reads the feature store; with the plan's 30 s TTL, steady traffic is served
from the orchestrator's cache whatever the store. Reported: requests/s, p50/p99, and for
PostgreSQL the coalescing (queries per request). Needs the local PostgreSQL, Redis (skipped
with a message when absent). ``python -m bench.bench_stores [--duration-s 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.common import closed_loop, machine_info, print_table, write_results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PG_DSN = os.environ.get("MESHSERVE_FRAUD_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MESHSERVE_FRAUD_REDIS_URL", "redis://127.0.0.1:6379/0")
CONCURRENCY = (1, 8, 32)


class OnePlan:
    def __init__(self, plan: Any) -> None:
        plan.version = 1
        self.plan = plan

    def get(self, name: str, version: int = 0) -> Any:
        return self.plan


def _up(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1.0).close()
        return True
    except OSError:
        return False


def _no_cache(plan: dict[str, Any]) -> dict[str, Any]:
    plan = copy.deepcopy(plan)
    for step in plan["steps"]:
        if step["name"] == "behaviour":
            step["logic"]["params"]["ttl_s"] = 0
    return plan


async def _points(label: str, plan_dict: dict[str, Any], models: Path, users: np.ndarray,
                  duration_s: float) -> list[Any]:  # fmt: skip
    from meshserve.orchestrator.engine import Engine, ExecuteCall
    from meshserve.orchestrator.inprocess import InProcessCaller
    from meshserve.orchestrator.logic.connections import close_logic_connections
    from meshserve.orchestrator.plans.parse import plan_from_dict

    engine = Engine(InProcessCaller.from_dir(models), OnePlan(plan_from_dict(plan_dict)))
    rng = np.random.default_rng(1)

    async def call(worker: int) -> int:
        inputs = {
            "user_id": rng.choice(users, size=1).astype(np.int64),
            "amount": rng.uniform(1, 3000, size=1).astype(np.float32),
            "channel": rng.integers(0, 3, size=1).astype(np.int64),
        }
        await engine.execute(ExecuteCall(plan=plan_dict["name"], inputs=inputs))
        return 1

    results = []
    try:
        for c in CONCURRENCY:
            from meshserve.orchestrator.logic import sql

            before = _pg_counts(sql)
            point = await closed_loop(
                label, call, concurrency=c, duration_s=duration_s, warmup_s=1.0
            )
            after = _pg_counts(sql)
            if after[1] > before[1]:
                point.extra["pg_queries_per_request"] = (after[0] - before[0]) / (
                    after[1] - before[1]
                )
            results.append(point)
    finally:
        await close_logic_connections()
    return results


def _pg_counts(sql: Any) -> tuple[int, int]:
    lookups = sql.postgres_lookups()
    return sum(x.coalescer.fetches for x in lookups), sum(x.coalescer.requests for x in lookups)


def main(argv: list[str] | None = None) -> int:
    import examples.fraud.logic  # noqa: F401 - registers fraud.decide
    from examples.fraud.build_data import FIRST_USER_ID, build
    from examples.fraud.stores import PLAN, load_postgres, load_redis, production_plan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; last reported")
    args = parser.parse_args(argv)
    if not (_up("127.0.0.1", 5432) and _up("127.0.0.1", 6379)):
        print("bench_stores: PostgreSQL (5432) and Redis (6379) must run; skipped")
        return 0
    models = REPO / "examples" / "models"
    subprocess.run([sys.executable, str(REPO / "examples" / "build_models.py"), "--out",
                    str(models)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    suffix = uuid.uuid4().hex[:8]
    table, prefix = f"bench_fraud_users_{suffix}", f"bench-fraud-{suffix}:"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        build(data)
        users = np.arange(FIRST_USER_ID, FIRST_USER_ID + 200)
        asyncio.run(load_postgres(PG_DSN, table, data))
        asyncio.run(load_redis(REDIS_URL, prefix, data))
        os.environ.update({"MESHSERVE_FRAUD_DATA": str(data), "MESHSERVE_FRAUD_PG_DSN": PG_DSN,
                           "MESHSERVE_FRAUD_REDIS_URL": REDIS_URL})  # fmt: skip
        risk = subprocess.Popen([sys.executable, "-m", "examples.fraud.risk_service"], cwd=REPO,
                                stdout=subprocess.PIPE)  # fmt: skip
        assert risk.stdout is not None
        os.environ["MESHSERVE_FRAUD_RISK_URL"] = risk.stdout.readline().decode().split()[1]
        configs = {
            "sqlite": _no_cache(yaml.safe_load(PLAN.read_text())),
            "postgres+redis": _no_cache(production_plan(table, prefix, risk_service=False)),
            "postgres+redis+http": _no_cache(production_plan(table, prefix, name="fraud-http")),
        }
        load_before = os.getloadavg()
        results = []
        try:
            for _ in range(args.rounds):  # interleaved, so drifting machine load hits all alike
                results = []
                for label, plan in configs.items():
                    results += asyncio.run(_points(label, plan, models, users, args.duration_s))
        finally:
            risk.kill()
            risk.wait(10)
            asyncio.run(_cleanup(table, prefix))
    base = {r.concurrency: r.throughput_rps for r in results if r.label == "sqlite"}
    rows = [
        {"stores": r.label, "c": r.concurrency, "req/s": r.throughput_rps,
         "vs sqlite": r.throughput_rps / base[r.concurrency], "p50 ms": r.p50_ms,
         "p99 ms": r.p99_ms, "errors": r.errors,
         "pg q/req": r.extra.get("pg_queries_per_request", float("nan")),
         "cores": r.client_cores}
        for r in results
    ]  # fmt: skip
    print(f"\nfraud plan, in-process engine, {args.duration_s}s per point, round {args.rounds} "
          f"of {args.rounds}; load average "
          f"before {load_before}, after {os.getloadavg()} on {os.cpu_count()} CPUs")  # fmt: skip
    print_table(rows, ["stores", "c", "req/s", "vs sqlite", "p50 ms", "p99 ms", "errors",
                       "pg q/req", "cores"])  # fmt: skip
    path = write_results("stores", {"points": results, "load_before": load_before,
                                    "machine_after": machine_info()})  # fmt: skip
    print(f"results: {path}")
    return 0 if all(r.errors == 0 for r in results) else 1


async def _cleanup(table: str, prefix: str) -> None:
    import asyncpg
    import redis.asyncio as aioredis

    conn = await asyncpg.connect(PG_DSN)
    await conn.execute(f"DROP TABLE IF EXISTS {table}")
    await conn.close()
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


if __name__ == "__main__":
    sys.exit(main())
