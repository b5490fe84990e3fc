"""``features.lookup`` on Redis: the shared local server for reads, coalescing, the TTL cache and
its metrics; a Redis process of the test's own (killed and restarted) for UNAVAILABLE and recovery.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from meshserve.errors import DataLossError, NotFoundError, UnavailableError
from meshserve.orchestrator.logic import LogicContext, run_logic
from meshserve.orchestrator.logic.features import close_stores
from meshserve.orchestrator.logic.redis_features import write_redis_features
from tests.stores import REDIS_URL, require_service, span_exporter, unique_name
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

DIM = 8
VECTORS = {str(1000 + i): np.arange(DIM, dtype=np.float32) * (i + 1) for i in range(100)}


@pytest.fixture
async def prefix(monkeypatch):
    parts = urlsplit(REDIS_URL)
    require_service("Redis", parts.hostname or "127.0.0.1", parts.port or 6379)
    name = unique_name("feat") + ":"
    await write_redis_features(REDIS_URL, name, VECTORS)
    monkeypatch.setenv("MESHSERVE_TEST_REDIS", REDIS_URL)
    try:
        yield name
    finally:
        await close_stores()
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(match=name + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


def ctx_for(prefix: str, plan: str = "redis-test", **params) -> LogicContext:
    base = {
        "redis_url_env": "MESHSERVE_TEST_REDIS",
        "prefix": prefix,
        "key": "user_id",
        "dim": DIM,
        "output": "features",
        "batch_window_ms": 5,
        "ttl_s": 60,
    }
    base.update(params)
    return LogicContext(params=base, plan=plan, step="behaviour", deadline=time.monotonic() + 10)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_concurrent_reads_correct_coalesced_and_cached(prefix):
    plan = unique_name("plan")
    ctx = ctx_for(prefix, plan=plan)
    rng = np.random.default_rng(3)
    calls = [rng.choice(list(VECTORS), size=3) for _ in range(32)]
    results = await asyncio.gather(
        *(run_logic("features.lookup", {"user_id": keys}, ctx) for keys in calls)
    )
    for keys, out in zip(calls, results, strict=True):
        np.testing.assert_array_equal(out["features"], np.stack([VECTORS[k] for k in keys]))
    queries = metric("meshserve_logic_store_queries_total", store="redis", plan=plan, outcome="ok")
    assert 1 <= queries < 32
    misses = metric("meshserve_logic_cache_lookups_total", store="redis", plan=plan, result="miss")
    again = await run_logic("features.lookup", {"user_id": calls[0]}, ctx)
    np.testing.assert_array_equal(again["features"], results[0]["features"])
    hits = metric("meshserve_logic_cache_lookups_total", store="redis", plan=plan, result="hit")
    assert hits == len(set(calls[0].tolist()))
    assert (
        metric("meshserve_logic_cache_lookups_total", store="redis", plan=plan, result="miss")
        == misses
    )
    assert (
        metric("meshserve_logic_store_queries_total", store="redis", plan=plan, outcome="ok")
        == queries
    )


async def test_missing_entity_is_an_error_or_a_default_row(prefix):
    with pytest.raises(NotFoundError, match="nobody"):
        await run_logic(
            "features.lookup", {"user_id": np.array(["1001", "nobody"])}, ctx_for(prefix)
        )
    out = await run_logic(
        "features.lookup",
        {"user_id": np.array(["1001", "nobody"])},
        ctx_for(prefix, on_missing="default", default=-1.0),
    )
    np.testing.assert_array_equal(out["features"][0], VECTORS["1001"])
    assert out["features"][1].tolist() == [-1.0] * DIM
    assert out["found"].tolist() == [True, False]


async def test_wrong_sized_value_is_data_loss_naming_the_key(prefix):
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.hset(prefix + "short", "vector", b"\x00" * 5)
    await client.aclose()
    with pytest.raises(DataLossError, match="short"):
        await run_logic("features.lookup", {"user_id": np.array(["short"])}, ctx_for(prefix))


async def test_lookup_span_has_cache_attributes(prefix):
    exporter = span_exporter()
    ctx = ctx_for(prefix, plan=unique_name("plan"))
    await run_logic("features.lookup", {"user_id": np.array(["1001", "1002"])}, ctx)
    await run_logic("features.lookup", {"user_id": np.array(["1001"])}, ctx)
    spans = [s for s in exporter.get_finished_spans() if s.name == "features.lookup redis"]
    assert len(spans) == 2
    first, second = (dict(s.attributes or {}) for s in spans)
    assert first["db.system"] == "redis" and first["meshserve.cache.misses"] == 2
    assert first["meshserve.cache.hit"] is False
    assert second["meshserve.cache.hits"] == 1 and second["meshserve.cache.hit"] is True


class OwnRedis:
    """A redis-server of this test only, on a unix socket (restartable at the same address)."""

    def __init__(self, folder: Path) -> None:
        self.socket = folder / "redis.sock"
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.socket),
             "--save", "", "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None
        self.socket.unlink(missing_ok=True)

    async def ready(self) -> bool:
        client = aioredis.Redis.from_url(self.url)
        try:
            return bool(await client.ping())
        except Exception:
            return False
        finally:
            await client.aclose()


@pytest.fixture
def own_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


async def test_redis_down_is_unavailable_then_recovers(own_redis, monkeypatch):
    await wait_until(own_redis.ready, 20.0, "own redis-server answers")
    await write_redis_features(own_redis.url, "f:", VECTORS)
    monkeypatch.setenv("MESHSERVE_TEST_OWN_REDIS", own_redis.url)
    ctx = ctx_for("f:", plan=unique_name("plan"), redis_url_env="MESHSERVE_TEST_OWN_REDIS", ttl_s=0)
    try:
        out = await run_logic("features.lookup", {"user_id": np.array(["1001"])}, ctx)
        np.testing.assert_array_equal(out["features"][0], VECTORS["1001"])

        own_redis.stop()
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="MESHSERVE_TEST_OWN_REDIS") as err:
            await run_logic("features.lookup", {"user_id": np.array(["1002"])}, ctx)
        assert time.monotonic() - started < 5.0
        assert err.value.code.name == "UNAVAILABLE"

        own_redis.start()
        await wait_until(own_redis.ready, 20.0, "restarted redis-server answers")
        await write_redis_features(own_redis.url, "f:", VECTORS)  # a fresh, empty server
        out = await run_logic("features.lookup", {"user_id": np.array(["1003"])}, ctx)
        np.testing.assert_array_equal(out["features"][0], VECTORS["1003"])
    finally:
        await close_stores()
