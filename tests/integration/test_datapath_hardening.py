"""The data path under bad replicas (issue 13), with real Consul and real model processes: a hung
replica (SIGSTOP), one answering INTERNAL, one pushing back, and watchers that follow the
applied plans only."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from meshserve.clients.sdk import MeshServeClient
from meshserve.errors import InvalidInputError
from meshserve.orchestrator.caller import FaultSpec
from meshserve.orchestrator.datapath import DataPathConfig
from tests.integration.datapath_helpers import (
    Load,
    mesh_caller,
    rows,
    serve_args,
    start_replicas,
    unique_name,
    wait_passing,
)
from tests.integration.orchestrator_helpers import TOKEN
from tests.procs import ChildProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _report(label: str, load: Load) -> tuple[float, float]:
    p50, p99, worst = load.quantiles_ms()
    print(
        f"\n{label}: {load.ok} ok, {len(load.failures)} failed, "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms"
    )
    return p50, p99


@pytest.mark.parametrize("hedging", [True, False], ids=["hedged", "timeouts-only"])
async def test_sigstopped_replica_costs_a_request_about_its_p99_not_its_hang(
    hedging: bool, consul_addr: str, spawn: Callable[..., ChildProcess], models_dir: Path
) -> None:
    name = unique_name("dp-sigstop")
    procs = start_replicas(spawn, models_dir, consul_addr, 2, name)
    config = DataPathConfig()
    caller = mesh_caller(consul_addr, replace(config, hedge=replace(config.hedge, enabled=hedging)))
    try:
        await wait_passing(caller, name, 2)
        load = Load(caller, name, concurrency=8).start()
        await asyncio.sleep(1.0)  # steady load: the latency history warms up
        load.latencies_s.clear()
        procs[0].signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(10.0)
        finally:
            procs[0].signal(signal.SIGCONT)
        await load.stop()
        _, p99 = _report(f"SIGSTOP 10 s, 1 of 2 replicas, hedging {hedging}", load)
        counters = caller.counters()
        print(
            f"retries {_retries_by_reason(name)}, hedges {counters.hedges_total}, "
            f"ejections {counters.ejections_total}"
        )
        assert load.failures == []
        assert load.ok > 100, load.ok
        assert p99 < 2000.0
    finally:
        await caller.close()


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
async def test_replica_answering_internal_fails_no_call(
    batching: bool, consul_addr: str, spawn: Callable[..., ChildProcess], models_dir: Path
) -> None:
    name = unique_name("dp-internal")
    start_replicas(spawn, models_dir, consul_addr, 2, name)
    caller = mesh_caller(consul_addr, DataPathConfig().with_batching(batching))
    try:
        await wait_passing(caller, name, 2)
        bad = caller.snapshot(name)[0].instance_id
        caller.inject_fault(
            FaultSpec(model=name, instance_id=bad, abort_rate=1.0, abort_code=13, duration_s=60)
        )
        load = Load(caller, name, concurrency=8).start()
        await asyncio.sleep(4.0)
        await load.stop()
        _report(f"INTERNAL from 1 of 2 replicas, batching {'on' if batching else 'off'}", load)
        assert load.failures == []
        assert load.ok > 100, load.ok
        snapshot = {s.instance_id: s for s in caller.snapshot(name)}
        assert snapshot[bad].failures_total > 0  # it was tried, failed, and was retried away
        assert caller.counters().retries_total > 0
    finally:
        await caller.close()


async def test_replica_pushing_back_gets_no_retry(
    consul_addr: str, spawn: Callable[..., ChildProcess], models_dir: Path
) -> None:
    name = unique_name("dp-pushback")
    start_replicas(spawn, models_dir, consul_addr, 3, name)
    caller = mesh_caller(consul_addr, DataPathConfig().with_batching(False))
    try:
        await wait_passing(caller, name, 3)
        pusher, failing, _ = (s.instance_id for s in caller.snapshot(name))
        # One replica rejects every call with RESOURCE_EXHAUSTED; another fails every call
        # (UNAVAILABLE), so its calls are retried: none of those retries may go to the pusher.
        caller.inject_fault(
            FaultSpec(model=name, instance_id=pusher, abort_rate=1.0, abort_code=8, duration_s=60)
        )
        for _ in range(200):  # until the pusher has pushed back once
            await caller.infer(name, {"input": rows(1, 0)}, timeout_s=2)
            if {s.instance_id: s for s in caller.snapshot(name)}[pusher].failures_total:
                break
        load = Load(caller, name, concurrency=8).start()
        before = {s.instance_id: s.retries_total for s in caller.snapshot(name)}
        caller.inject_fault(
            FaultSpec(model=name, instance_id=failing, abort_rate=1.0, duration_s=60)
        )
        await asyncio.sleep(3.0)
        await load.stop()
        snapshot = {s.instance_id: s for s in caller.snapshot(name)}
        retries = {rid: s.retries_total - before[rid] for rid, s in snapshot.items()}
        reasons = _retries_by_reason(name)
        print(f"\npushback: retries/hedges per replica {retries}, retries by reason {reasons}")
        assert load.failures == []
        assert snapshot[pusher].failures_total > 10, snapshot  # it kept pushing back
        assert retries[pusher] == 0, retries  # and got no retry or hedge
        assert sum(retries.values()) > 0, retries
    finally:
        await caller.close()


def _retries_by_reason(model: str) -> dict[str, float]:
    return {
        sample.labels["reason"]: sample.value
        for metric in REGISTRY.collect()
        if metric.name == "meshserve_datapath_retries"
        for sample in metric.samples
        if sample.labels.get("model") == model and sample.name.endswith("_total")
    }


def _consul_connections(pid: int, consul_addr: str) -> int:
    """TCP connections of process `pid` to the Consul agent's HTTP port (from /proc)."""
    port = int(consul_addr.rsplit(":", 1)[1])
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                remote_port = int(cols[2].rsplit(":", 1)[1], 16)
                if remote_port == port and cols[3] == "01" and cols[9] in inodes:  # ESTABLISHED
                    count += 1
    return count


def _plan(plan: str, model: str) -> str:
    return (
        f"name: {plan}\ninputs:\n  - {{name: input, dtype: float32, shape: [-1, 64]}}\n"
        f"steps:\n  - name: m\n    model: {model}\n    inputs: {{input: input.input}}\n"
        "outputs:\n  probabilities: m.probabilities\n"
    )


async def _until_discoverable(client: MeshServeClient, model: str) -> None:
    """Dry-run a plan of `model` until its replica passes in Consul."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20.0
    while True:
        try:
            await client.apply_plan(_plan("warm", model), dry_run=True)
            return
        except InvalidInputError:
            if loop.time() > deadline:
                raise
        await asyncio.sleep(0.2)


async def _tracked(client: MeshServeClient) -> set[str]:
    return {m.name for m in (await client.stats()).models}


async def test_watchers_only_for_models_of_applied_plans(
    consul_addr: str, spawn: Callable[..., ChildProcess], models_dir: Path
) -> None:
    model = unique_name("dp-watch")
    spawn(*serve_args(models_dir, consul_addr, model))
    orch = spawn(
        "orchestrator", "serve", "--consul", consul_addr, env={"MESHSERVE_ADMIN_TOKEN": TOKEN}
    )
    async with MeshServeClient(orch.address, token=TOKEN) as client:
        await _until_discoverable(client, model)
        base = _consul_connections(orch.pid, consul_addr)
        assert await _tracked(client) == set()
        for i in range(150):  # rejected plans (unknown models), dry runs or not
            with pytest.raises(InvalidInputError, match="unknown model"):
                await client.apply_plan(
                    _plan(f"ghost-{i}", f"ghost-{i}-{model}"), dry_run=bool(i % 2)
                )
        for i in range(20):  # valid dry runs
            await client.apply_plan(_plan(f"dry-{i}", model), dry_run=True)
        after = _consul_connections(orch.pid, consul_addr)
        print(f"\nConsul connections: {base} before, {after} after 170 ApplyPlan calls")
        assert await _tracked(client) == set()
        assert after <= base + 1
        listed = {m.name for m in await client.list_models()}
        assert not any(n.startswith("ghost-") for n in listed)

        await client.apply_plan(_plan("live", model))
        result = await client.execute("live", {"input": rows(2, 1)})
        assert np.asarray(result.outputs["probabilities"]).shape == (2, 10)
        assert await _tracked(client) == {model}
        await client.delete_plan("live")
        assert await _tracked(client) == set()  # released at once; its watcher stops
        for _ in range(50):  # the watcher's HTTP session closes in the background
            if _consul_connections(orch.pid, consul_addr) <= base:
                break
            await client.stats()
        assert _consul_connections(orch.pid, consul_addr) <= base + 1
