"""The fraud example on production stores, with one command (``make fraud-production``):

PostgreSQL (users), Redis (behaviour features), an HTTP risk service
(examples/fraud/risk_service.py, started here) and labels streamed on NATS JetStream to an
online learner, around the same models and business rule as the embedded fraud plan of
``make demo``. It brings up a local mesh (Consul dev agent, the four models, an orchestrator),
loads the example data into the stores, sends transactions, streams a label for each, waits
until the learner has taken every label, prints a summary and stops everything it started.

Where the services are (defaults: this machine's local services)::

    MESHSERVE_FRAUD_PG_DSN       postgresql://postgres@127.0.0.1:5432/test
    MESHSERVE_FRAUD_REDIS_URL    redis://127.0.0.1:6379/0
    MESHSERVE_FEEDBACK_NATS_URL  nats://127.0.0.1:4222

Run: ``python -m examples.fraud.production [--requests N] [--state-dir DIR]``. A service that
does not answer is named and the command exits with status 2 before starting anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

TABLE, PREFIX, LEARNER = "fraud_users", "fraud:user:", "fraud-behaviour"
SUBJECT, STREAM = "fraud.labels", "MESHSERVE_FRAUD"
DEFAULTS = {
    "MESHSERVE_FRAUD_PG_DSN": "postgresql://postgres@127.0.0.1:5432/test",
    "MESHSERVE_FRAUD_REDIS_URL": "redis://127.0.0.1:6379/0",
    "MESHSERVE_FEEDBACK_NATS_URL": "nats://127.0.0.1:4222",
}


def _absent(env: dict[str, str]) -> list[str]:
    missing = []
    for name, port in (("MESHSERVE_FRAUD_PG_DSN", 5432), ("MESHSERVE_FRAUD_REDIS_URL", 6379),
                       ("MESHSERVE_FEEDBACK_NATS_URL", 4222)):  # fmt: skip
        parts = urlsplit(env[name])
        address = (parts.hostname or "127.0.0.1", parts.port or port)
        try:
            socket.create_connection(address, timeout=1.0).close()
        except OSError as exc:
            missing.append(f"${name} ({address[0]}:{address[1]}): {exc}")
    return missing


def _start_risk_service(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.fraud.risk_service"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=log.open("wb"),
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("RISK_READY "):
        proc.kill()
        raise RuntimeError(f"the risk service did not start (see {log})")
    return proc, line.split()[1]


async def _stream_labels(url: str, labels: list[tuple[str, int]]) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for request_id, label in labels:
            body = json.dumps({"request_id": request_id, "label": label}).encode()
            await js.publish(SUBJECT, body, headers={"Nats-Msg-Id": request_id})
    finally:
        await nc.close()


async def _learner_updates(state: object, wanted: int, timeout_s: float) -> int:
    from meshserve.clients.sdk import MeshServeClient

    client = MeshServeClient(
        state.orchestrator_address,
        token=state.admin_token,
        timeout_s=10,  # type: ignore[attr-defined]
    )
    deadline = time.monotonic() + timeout_s
    updates = 0
    async with client:
        while time.monotonic() < deadline:
            stats = await client.stats()
            updates = next((x.updates for x in stats.learners if x.name == LEARNER), 0)
            if updates >= wanted:
                break
            await asyncio.sleep(0.25)
    return updates


def main() -> int:
    from examples.fraud.build_data import build
    from examples.fraud.stores import load_postgres, load_redis, production_plan
    from meshserve.clients.demo import CONCURRENCY, PlanResult
    from meshserve.clients.demo_fraud import FRAUD_MODELS, send_fraud
    from meshserve.clients.local import LocalMeshConfig, down, print_summary, up

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--state-dir", default=".meshserve-fraud")
    args = parser.parse_args()
    env = {name: os.environ.get(name, default) for name, default in DEFAULTS.items()}
    missing = _absent(env)
    if missing:
        print("fraud-production needs these services:\n  " + "\n  ".join(missing))
        return 2
    state_dir = Path(args.state_dir).resolve()
    data = state_dir / "fraud-data"
    state_dir.mkdir(parents=True, exist_ok=True)
    build(data)
    users = asyncio.run(load_postgres(env["MESHSERVE_FRAUD_PG_DSN"], TABLE, data))
    vectors = asyncio.run(load_redis(env["MESHSERVE_FRAUD_REDIS_URL"], PREFIX, data))
    print(f"loaded {users} users into PostgreSQL table {TABLE}, {vectors} vectors into Redis")
    risk, risk_url = _start_risk_service(state_dir / "risk-service.log")
    plan = production_plan(TABLE, PREFIX, learner=LEARNER)
    empty_plans = state_dir / "no-plans"
    empty_plans.mkdir(exist_ok=True)
    config = LocalMeshConfig(
        state_dir=state_dir,
        plans_dir=empty_plans,
        model_names=FRAUD_MODELS,
        orchestrator_args=("--logic", "examples.fraud.logic", "--feedback-stream-subject",
                           SUBJECT, "--feedback-stream-name", STREAM),
        orchestrator_env=(*env.items(), ("MESHSERVE_FRAUD_RISK_URL", risk_url),
                          ("PYTHONPATH", str(REPO))),
        extra_plans=(("fraud-production.yaml", yaml.safe_dump(plan)),),
    )  # fmt: skip
    clusters = np.load(data / "behaviour_clusters.npy")
    labels: list[tuple[str, int]] = []
    result = PlanResult(plan["name"])
    try:
        state = up(config)
        print_summary(state)
        asyncio.run(
            send_fraud(
                state.orchestrator_address, data, args.requests, CONCURRENCY, result,
                plan=plan["name"],
                on_reply=lambda user, reply: labels.append((reply.id, int(clusters[user - 1000]))),
            )
        )  # fmt: skip
        asyncio.run(_stream_labels(env["MESHSERVE_FEEDBACK_NATS_URL"], labels))
        updates = asyncio.run(_learner_updates(state, len(labels), 60))
    finally:
        survivors = down(state_dir)
        risk.kill()
        risk.wait(10)
    decisions = [d for _, d, _ in result.samples]
    print(
        f"\n{plan['name']}: sent {result.sent}, answered {len(result.latencies_ms)}, "
        f"p50 {result.percentile_ms(50):.1f} ms, p99 {result.percentile_ms(99):.1f} ms, "
        f"failures {result.failures or 'none'}; sample decisions {decisions}"
    )
    print(f"streamed {len(labels)} labels on {SUBJECT}; learner {LEARNER} took {updates}")
    print("mesh stopped" if not survivors else f"still running: {survivors}")
    ok = not result.failures and updates >= len(labels) and not survivors
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
