"""What feedback-anywhere costs per request, against baselines measured in the same run.

``python -m bench.bench_feedback [--duration-s 3] [--concurrency 1 8]``

Starts its own Consul dev agent; two LearningHubs (two "orchestrators") share it through the
real KV client. Points:
- ``choose`` vs ``choose+token``: a bandit choice alone, then with its signed feedback token
  (the Execute-side cost: HMAC-SHA256 over the decisions);
- ``kv put`` (baseline: one plain Consul KV write) vs ``feedback``: a reward applied by the
  *other* hub from the token (verify + one Consul transaction: state CAS + applied marker) and
  ``duplicate`` (the same feedback again: the transaction is refused, one read says so);
- token sizes for a bandit decision and for a 64-feature learner observation.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import uuid
from collections.abc import Awaitable, Callable

import numpy as np

from bench.common import LoadResult, closed_loop, print_table, write_results
from meshserve.clients.consul_agent import ConsulAgent, ConsulAgentConfig
from meshserve.orchestrator.learning import HubConfig, LearningHub
from meshserve.orchestrator.learning_port import Feedback
from meshserve.registry import KV, ConsulConfig

ARGS = {"plan": "bench", "step": "pick", "arms": ["a", "b", "c"], "policy": "thompson"}


async def run(duration_s: float, concurrency: list[int]) -> list[dict[str, object]]:
    agent = ConsulAgent(ConsulAgentConfig())
    agent.start()
    try:
        async with KV(ConsulConfig(agent.address)) as kv:
            return await _points(kv, duration_s, concurrency)
    finally:
        agent.stop()


async def _points(kv: KV, duration_s: float, concurrency: list[int]) -> list[dict[str, object]]:
    config = HubConfig(kv_prefix=f"bench/{uuid.uuid4().hex[:6]}/learning/")
    serving, applying = LearningHub(kv, config=config), LearningHub(kv, config=config)
    await serving.start()
    await applying.start()
    ids = itertools.count()
    tokens: list[tuple[str, bytes]] = []

    async def choose(_: int) -> int:
        await serving.choose_arm(**ARGS, epsilon=0.0, context="", request_id="", seed=1)
        return 1

    async def choose_token(_: int) -> int:
        rid = f"r{next(ids)}"
        await serving.choose_arm(**ARGS, epsilon=0.0, context="", request_id=rid, seed=1)
        tokens.append((rid, serving.token_for(rid)))
        return 1

    async def kv_put(_: int) -> int:
        await kv.put(f"{config.kv_prefix}baseline/{next(ids) % 64}", b"x" * 200)
        return 1

    def feedback(pool: list[tuple[str, bytes]]) -> Callable[[int], Awaitable[int]]:
        async def call(_: int) -> int:
            rid, token = pool.pop()
            await applying.apply_feedback(Feedback(rid, reward=1.0, token=token))
            return 1

        return call

    rows: list[dict[str, object]] = []
    for c in concurrency:
        for label, call in (("choose", choose), ("choose+token", choose_token)):
            rows.append(_row(await closed_loop(label, call, concurrency=c, duration_s=duration_s)))
        rows.append(_row(await closed_loop("kv put", kv_put, concurrency=c, duration_s=duration_s)))
        pool = list(tokens)
        applied = list(pool)
        result = await closed_loop("feedback", feedback(pool), concurrency=c, duration_s=duration_s)
        rows.append(_row(result))
        used = applied[len(pool) :]
        dup_pool = list(used)
        rows.append(
            _row(
                await closed_loop(
                    "duplicate", feedback(dup_pool), concurrency=c, duration_s=duration_s
                )
            )
        )
        tokens.clear()
    rid = "size"
    await serving.choose_arm(**ARGS, epsilon=0.0, context="gold", request_id=rid, seed=1)
    bandit_token = serving.token_for(rid)
    params = {"n_features": 64, "n_classes": 10, "export_every": 0}
    await serving.observe("size-learner", "obs", np.arange(64, dtype=np.float32), params)
    learner_token = serving.token_for("obs")
    rows.append({"label": "token bytes (bandit / 64-feature learner)",
                 "p50_ms": len(bandit_token), "p99_ms": len(learner_token)})  # fmt: skip
    await serving.stop()
    await applying.stop()
    return rows


def _row(r: LoadResult) -> dict[str, object]:
    return {
        "label": r.label,
        "concurrency": r.concurrency,
        "requests": r.requests,
        "errors": r.errors,
        "rps": r.throughput_rps,
        "p50_ms": r.p50_ms,
        "p99_ms": r.p99_ms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.duration_s, args.concurrency))
    print_table(rows, ["label", "concurrency", "requests", "errors", "rps", "p50_ms", "p99_ms"])
    print(f"results: {write_results('feedback', {'rows': rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
