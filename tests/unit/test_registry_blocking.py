"""Blocking-query rules with an injected clock: no Consul needed (logic above the HTTP API)."""

from __future__ import annotations

import random

import pytest

from meshserve.errors import InvalidInputError
from meshserve.registry.blocking import (
    Backoff,
    BlockingOptions,
    BlockingQuery,
    RateLimiter,
    next_index,
)
from meshserve.registry.config import ConsulConfig
from meshserve.registry.errors import RegistryUnavailableError


class FakeTime:
    """A monotonic clock that only moves when something sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedFetch:
    """Answers queries from a script of (index, result) or exceptions; records what was sent."""

    def __init__(self, time: FakeTime, script: list[tuple[int, str] | Exception], took_s: float):
        self.time = time
        self.script = list(script)
        self.took_s = took_s
        self.sent: list[int] = []
        self.started_at: list[float] = []

    async def __call__(self, index: int, wait_s: float) -> tuple[int, str]:
        self.sent.append(index)
        self.started_at.append(self.time.now)
        self.time.now += self.took_s
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def test_next_index_rules() -> None:
    assert next_index(0, 7) == 7  # first read
    assert next_index(7, 9) == 9  # feed back the new index
    assert next_index(9, 9) == 9  # timeout without change: same index
    assert next_index(9, 3) == 0  # went backwards: reset, fresh read next
    assert next_index(0, 0) == 1  # never wait on 0
    assert next_index(1, 0) == 0  # backwards to 0 resets (a fresh read), then ...
    assert next_index(0, 0) == 1  # ... 0 becomes 1, so the loop blocks


async def test_query_feeds_back_index_and_resets_when_backwards() -> None:
    t = FakeTime()
    fetch = ScriptedFetch(
        t,
        [(5, "a"), (8, "b"), (8, "b"), (3, "c"), (4, "c"), (0, "d"), (0, "d"), (6, "e")],
        took_s=1.0,
    )
    query = BlockingQuery(fetch, BlockingOptions(min_interval_s=0.5), clock=t.clock, sleep=t.sleep)
    seen = []
    async for result in query:
        seen.append(result)
        if result == "e":
            break
    # sent: first read 0, then 5, 8, 8; 3 < 8 resets to 0; 4; 0 < 4 resets; 0 -> 1; then 1.
    assert fetch.sent == [0, 5, 8, 8, 0, 4, 0, 1]
    assert seen == ["a", "b", "c", "d", "e"]  # unchanged results are not yielded
    assert 0 not in fetch.sent[fetch.sent.index(4) + 2 :]  # after 0 came back, it waits on 1


async def test_query_is_rate_limited_when_the_agent_answers_at_once() -> None:
    t = FakeTime()
    # An agent that returns immediately with the same index (no change) must not be spun on.
    fetch = ScriptedFetch(t, [(5, "a")] + [(5, "a")] * 5 + [(6, "b")], took_s=0.0)
    query = BlockingQuery(fetch, BlockingOptions(min_interval_s=0.25), clock=t.clock, sleep=t.sleep)
    async for result in query:
        if result == "b":
            break
    gaps = [b - a for a, b in zip(fetch.started_at, fetch.started_at[1:], strict=False)]
    assert len(gaps) == 6
    assert all(gap >= 0.25 - 1e-9 for gap in gaps), gaps


async def test_query_backs_off_with_jitter_and_retries_as_fresh_read() -> None:
    t = FakeTime()
    down = RegistryUnavailableError("agent down")
    fetch = ScriptedFetch(t, [(5, "a"), down, down, down, down, down, (2, "a"), (3, "b")], 0.0)
    options = BlockingOptions(min_interval_s=0.0, backoff_initial_s=0.1, backoff_max_s=0.5)
    query = BlockingQuery(fetch, options, clock=t.clock, sleep=t.sleep, rng=random.Random(7))
    seen = []
    async for result in query:
        seen.append(result)
        if result == "b":
            break
    assert seen == ["a", "b"]  # the last good result is not re-yielded after the outage
    assert query.failures == 5
    # Each retry after an error is a fresh read (index 0): a restarted agent has smaller indexes.
    assert fetch.sent == [0, 5, 0, 0, 0, 0, 0, 2]
    backoffs = [s for s in t.sleeps if s > 0]
    ceilings = [0.1, 0.2, 0.4, 0.5, 0.5]  # exponential, capped
    assert len(backoffs) == 5
    for delay, ceiling in zip(backoffs, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_backoff_resets_and_is_jittered() -> None:
    a = Backoff(1.0, 8.0, rng=random.Random(1))
    b = Backoff(1.0, 8.0, rng=random.Random(2))
    da = [a.next_delay_s() for _ in range(6)]
    db = [b.next_delay_s() for _ in range(6)]
    assert da != db  # jitter: two clients do not retry in lockstep
    assert all(d <= 8.0 for d in da)
    a.reset()
    assert a.next_delay_s() <= 1.0


async def test_rate_limiter_uses_the_injected_clock() -> None:
    t = FakeTime()
    limiter = RateLimiter(2.0, t.clock)
    assert limiter.delay_s() == 0.0
    await limiter.acquire(t.sleep)
    t.now += 0.5
    assert limiter.delay_s() == pytest.approx(1.5)
    await limiter.acquire(t.sleep)
    assert t.sleeps == [pytest.approx(1.5)]


def test_consul_config_from_env_and_validation() -> None:
    cfg = ConsulConfig.from_env(
        {
            "CONSUL_HTTP_ADDR": "https://consul.internal:8501",
            "CONSUL_HTTP_TOKEN": "secret",
            "CONSUL_CACERT": "/ca.pem",
            "CONSUL_CLIENT_CERT": "/c.pem",
            "CONSUL_CLIENT_KEY": "/k.pem",
            "CONSUL_HTTP_SSL_VERIFY": "false",
        }
    )
    assert (cfg.scheme, cfg.address, cfg.token) == ("https", "consul.internal:8501", "secret")
    assert (cfg.ca_file, cfg.cert_file, cfg.key_file, cfg.verify) == (
        "/ca.pem",
        "/c.pem",
        "/k.pem",
        False,
    )
    assert ConsulConfig.from_env({}) == ConsulConfig()
    assert ConsulConfig.from_env({"CONSUL_HTTP_SSL": "true"}).scheme == "https"
    with pytest.raises(InvalidInputError, match="expected host:port"):
        ConsulConfig(address="no-port")
    with pytest.raises(InvalidInputError, match="CONSUL_HTTP_SSL_VERIFY"):
        ConsulConfig.from_env({"CONSUL_HTTP_SSL_VERIFY": "maybe"})
