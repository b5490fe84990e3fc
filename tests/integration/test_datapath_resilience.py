"""Load balancing under failure: real replicas killed, stopped, added, slowed and failing."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from meshserve.errors import UnavailableError
from meshserve.orchestrator.caller import FaultSpec
from meshserve.orchestrator.datapath import DataPathConfig
from tests.integration.datapath_helpers import (
    Load,
    mesh_caller,
    requests_by_replica,
    rows,
    serve_args,
    start_replicas,
    unique_name,
    wait_passing,
)
from tests.procs import ChildProcess
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
async def test_replica_killed_or_stopped_under_load_loses_no_request(
    sig: int, consul_addr: str, spawn: Callable[..., ChildProcess], models_dir: Path
) -> None:
    name = unique_name(f"dp-{signal.Signals(sig).name.lower()}")
    procs = start_replicas(spawn, models_dir, consul_addr, 3, name)
    caller = mesh_caller(consul_addr)
    try:
        await wait_passing(caller, name, 3)
        load = Load(caller, name, concurrency=12).start()
        await wait_until(lambda: load.ok >= 50, 10, "the load to flow", 0.02)
        before = load.ok
        procs[0].signal(sig)
        await asyncio.sleep(2.5)
        await load.stop()
        counters = caller.counters()
        assert load.failures == []
        assert load.ok - before > 100, load.ok
        if sig == signal.SIGKILL:
            assert counters.retries_total > 0, counters
        if sig == signal.SIGTERM:
            assert await asyncio.to_thread(procs[0].wait, 15) == 0
    finally:
        await caller.close()


async def test_new_replica_gets_traffic_within_one_watch_cycle(
    consul_addr: str, spawn: Callable[..., ChildProcess], models_dir: Path
) -> None:
    name = unique_name("dp-new")
    start_replicas(spawn, models_dir, consul_addr, 2, name)
    caller = mesh_caller(consul_addr)
    try:
        await wait_passing(caller, name, 2)
        load = Load(caller, name, concurrency=8).start()
        old = set(requests_by_replica(caller, name))
        await asyncio.to_thread(spawn, *serve_args(models_dir, consul_addr, name))
        loop = asyncio.get_running_loop()
        ready_at = loop.time()

        # One watch cycle: the blocking query returns on the change (registration + first
        # passing gRPC health check, interval 1 s).
        def new_replica_served() -> bool:
            new = {k: v for k, v in requests_by_replica(caller, name).items() if k not in old}
            return bool(new) and max(new.values()) > 0

        await wait_until(new_replica_served, 3.0, f"traffic on the new replica of {name}", 0.02)
        took = loop.time() - ready_at
        await load.stop()
        assert took < 3.0
        assert load.failures == []
    finally:
        await caller.close()


async def test_slow_replica_gets_under_ten_percent_of_traffic(
    consul_addr: str, spawn: Callable[..., ChildProcess], models_dir: Path
) -> None:
    name = unique_name("dp-slow")
    start_replicas(spawn, models_dir, consul_addr, 3, name)
    caller = mesh_caller(consul_addr)
    try:
        await wait_passing(caller, name, 3)
        slow = caller.snapshot(name)[0].instance_id
        caller.inject_fault(FaultSpec(model=name, instance_id=slow, delay_ms=100, duration_s=30))
        load = Load(caller, name, concurrency=12).start()
        await asyncio.sleep(1.0)  # "within a few seconds": measured from here on
        before = requests_by_replica(caller, name)
        await asyncio.sleep(2.0)
        after = requests_by_replica(caller, name)
        await load.stop()
        delta = {k: after[k] - before.get(k, 0) for k in after}
        share = delta[slow] / sum(delta.values())
        assert share < 0.10, delta
        assert load.failures == []
        assert caller.clear_faults(name) == 1
    finally:
        await caller.close()


async def test_failing_replica_keeps_attempts_within_retry_budget(
    consul_addr: str, spawn: Callable[..., ChildProcess], models_dir: Path
) -> None:
    name = unique_name("dp-abort")
    start_replicas(spawn, models_dir, consul_addr, 3, name)
    config = DataPathConfig().with_batching(False)
    caller = mesh_caller(consul_addr, config)
    try:
        await wait_passing(caller, name, 3)
        bad = caller.snapshot(name)[1].instance_id
        caller.inject_fault(
            FaultSpec(model=name, instance_id=bad, abort_rate=1.0, abort_code=14, duration_s=30)
        )
        c0 = caller.counters()
        loop = asyncio.get_running_loop()
        start = loop.time()
        load = Load(caller, name, concurrency=8).start()
        await asyncio.sleep(3.0)
        await load.stop()
        seconds = loop.time() - start
        c1 = caller.counters()
        calls = c1.calls_total - c0.calls_total
        attempts = c1.attempts_total - c0.attempts_total
        retry = config.retry
        allowed = calls * (1 + retry.budget_ratio) + retry.budget_min_per_s * (seconds + 1)
        assert load.failures == []
        assert attempts <= allowed, (calls, attempts, allowed)
        assert c1.ejections_total > c0.ejections_total
        state = {s.instance_id: s.state for s in caller.snapshot(name)}
        assert state[bad] in ("ejected", "faulted"), state
    finally:
        await caller.close()


async def test_every_replica_gone_fails_fast_with_unavailable(
    consul_addr: str, spawn: Callable[..., ChildProcess], models_dir: Path
) -> None:
    name = unique_name("dp-gone")
    procs = start_replicas(spawn, models_dir, consul_addr, 2, name)
    caller = mesh_caller(consul_addr, replace(DataPathConfig(), default_timeout_s=10.0))
    try:
        await wait_passing(caller, name, 2)
        for proc in procs:
            proc.kill()
        loop = asyncio.get_running_loop()

        # Before Consul notices (dead endpoints, connection refused) and after (none passing).
        async def fails_fast_until_none_left() -> bool:
            start = loop.time()
            with pytest.raises(UnavailableError):
                await caller.infer(name, {"input": rows(2, 3)}, timeout_s=10)
            assert loop.time() - start < 0.5
            return caller.counters().no_endpoint_failures_total > 0

        await wait_until(
            fails_fast_until_none_left, 20, "Consul to drop the killed replicas", retry_on=()
        )
    finally:
        await caller.close()
