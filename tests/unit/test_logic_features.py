"""Feature store: real SQLite/.npz backends, TTL cache with an injected clock, coalescing."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from meshserve.errors import NotFoundError
from meshserve.orchestrator.logic.features import (
    FeatureLookup,
    FeatureLookupConfig,
    NpzFeatureBackend,
    SqliteFeatureBackend,
    write_sqlite_features,
)

VECTORS = {f"u{i}": np.arange(4, dtype=np.float32) + i for i in range(20)}


class Counting:
    """Wraps a real backend and counts its queries (the backend itself is real SQLite)."""

    def __init__(self, inner):
        self.inner = inner
        self.dim = inner.dim
        self.calls: list[list[str]] = []

    def fetch(self, keys):
        self.calls.append(list(keys))
        return self.inner.fetch(keys)


@pytest.fixture
def sqlite_backend(tmp_path):
    path = tmp_path / "features.sqlite"
    write_sqlite_features(path, VECTORS)
    return Counting(SqliteFeatureBackend(str(path), 4))


async def test_rows_in_key_order_from_sqlite(sqlite_backend):
    lookup = FeatureLookup(sqlite_backend)
    out = await lookup.get(["u3", "u1", "u3"])
    np.testing.assert_array_equal(out, np.stack([VECTORS["u3"], VECTORS["u1"], VECTORS["u3"]]))
    assert out.dtype == np.float32


async def test_npz_backend(tmp_path):
    path = tmp_path / "f.npz"
    np.savez(path, keys=np.array(list(VECTORS)), vectors=np.stack(list(VECTORS.values())))
    lookup = FeatureLookup(NpzFeatureBackend(str(path)))
    np.testing.assert_array_equal((await lookup.get(["u7"]))[0], VECTORS["u7"])


async def test_concurrent_lookups_coalesce_into_one_query(sqlite_backend):
    lookup = FeatureLookup(sqlite_backend, FeatureLookupConfig(batch_window_ms=20))
    results = await asyncio.gather(*(lookup.get([f"u{i}", "u0"]) for i in range(10)))
    assert len(sqlite_backend.calls) == 1
    assert sorted(sqlite_backend.calls[0]) == sorted(f"u{i}" for i in range(10))
    for i, rows in enumerate(results):
        np.testing.assert_array_equal(rows[0], VECTORS[f"u{i}"])


async def test_ttl_cache_uses_the_injected_clock(sqlite_backend):
    now = [100.0]
    lookup = FeatureLookup(
        sqlite_backend, FeatureLookupConfig(ttl_s=10, batch_window_ms=0), clock=lambda: now[0]
    )
    await lookup.get(["u1"])
    await lookup.get(["u1"])
    assert len(sqlite_backend.calls) == 1 and lookup.cache_hits == 1
    now[0] += 11
    await lookup.get(["u1"])
    assert len(sqlite_backend.calls) == 2


async def test_missing_key_fails_only_its_callers(sqlite_backend):
    lookup = FeatureLookup(sqlite_backend, FeatureLookupConfig(batch_window_ms=10))
    ok, bad = await asyncio.gather(
        lookup.get(["u1"]), lookup.get(["nobody"]), return_exceptions=True
    )
    assert isinstance(ok, np.ndarray)
    assert isinstance(bad, NotFoundError) and "nobody" in bad.message


async def test_max_batch_flushes_early(sqlite_backend):
    lookup = FeatureLookup(sqlite_backend, FeatureLookupConfig(batch_window_ms=5000, max_batch=3))
    out = await asyncio.wait_for(lookup.get(["u1", "u2", "u3"]), 2.0)
    assert out.shape == (3, 4)
