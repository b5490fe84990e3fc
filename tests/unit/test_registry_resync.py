"""EndpointWatcher after Consul started over (unreachable, or its index went backwards): an empty
first answer waits out the re-sync grace.

The watcher's query answers from a script (logic above the HTTP API; the real agent restart is
tests/integration/test_scenarios_local.py and test_registry_outage.py).
"""

from __future__ import annotations

import asyncio

from meshserve.registry import ConsulConfig, Endpoint, EndpointWatcher
from meshserve.registry.blocking import BlockingOptions
from meshserve.registry.errors import RegistryUnavailableError

GRACE_S = 30.0
EP = Endpoint("m-1", "m", "127.0.0.1", 5001, "1")
EP2 = Endpoint("m-2", "m", "127.0.0.1", 5002, "1")


class Script:
    """Answers (index, endpoints) or raises, then blocks like a long poll with no change."""

    def __init__(self, steps: list[tuple[int, tuple[Endpoint, ...]] | Exception]) -> None:
        self.steps = list(steps)
        self.done = asyncio.Event()

    async def __call__(self, index: int, wait_s: float) -> tuple[int, tuple[Endpoint, ...]]:
        if not self.steps:
            self.done.set()
            await asyncio.Event().wait()
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


class GraceGate:
    """Injected sleep: backoff and rate-limit sleeps pass at once, the grace waits for `open`."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.waiting = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        if seconds == GRACE_S:
            self.waiting.set()
            await self.open.wait()
        await asyncio.sleep(0)


async def _watch(steps: list) -> tuple[EndpointWatcher, Script, GraceGate, list]:
    gate = GraceGate()
    watcher = EndpointWatcher(
        ConsulConfig(address="127.0.0.1:1"),
        "m",
        options=BlockingOptions(min_interval_s=0.0),
        resync_grace_s=GRACE_S,
        sleep=gate.sleep,
    )
    script = Script(steps)
    watcher._query._fetch = script  # the scripted agent instead of HTTP
    views: list[tuple[Endpoint, ...]] = []
    watcher.subscribe(views.append)
    await watcher.start()
    await asyncio.wait_for(script.done.wait(), 5)
    return watcher, script, gate, views


async def test_empty_answer_after_restart_is_published_only_after_the_grace() -> None:
    restarted = RegistryUnavailableError("agent down")
    watcher, _, gate, views = await _watch([(50, (EP,)), restarted, (3, ())])
    try:
        await asyncio.wait_for(gate.waiting.wait(), 5)
        assert watcher.endpoints() == (EP,)  # still routing to the last known replica
        assert views == [(EP,)] and watcher.holding
        gate.open.set()
        await watcher.wait_for(lambda eps: eps == (), 5)
        assert views == [(EP,), ()] and not watcher.holding
    finally:
        await watcher.stop()


async def test_index_going_backwards_counts_as_a_restart() -> None:
    watcher, _, gate, views = await _watch([(50, (EP,)), (60, (EP,)), (4, ())])
    try:
        await asyncio.wait_for(gate.waiting.wait(), 5)
        assert watcher.holding and watcher.endpoints() == (EP,) and views == [(EP,)]
    finally:
        await watcher.stop()
    assert not watcher.holding


async def test_registrations_back_within_the_grace_never_empty_the_view() -> None:
    restarted = RegistryUnavailableError("agent down")
    watcher, _, gate, views = await _watch([(50, (EP, EP2)), restarted, (3, ()), (5, (EP,))])
    try:
        assert watcher.endpoints() == (EP,) and not watcher.holding
        assert views == [(EP, EP2), (EP,)]
        gate.open.set()  # the cancelled grace publishes nothing
        for _ in range(20):  # a live grace task would publish within a few loop turns
            await asyncio.sleep(0)
        assert views == [(EP, EP2), (EP,)]
    finally:
        await watcher.stop()


async def test_empty_answer_without_a_restart_is_published_at_once() -> None:
    for steps in ([(50, (EP,)), (51, ())],):  # the last instance left
        watcher, _, gate, views = await _watch(steps)
        try:
            assert watcher.endpoints() == () and views == [(EP,), ()]
            assert not gate.waiting.is_set()
        finally:
            await watcher.stop()
