"""Shadow results: per-candidate counts and disagreement samples, merged into Consul KV with
check-and-set by every orchestrator and read back on start (in-memory KV: the logic above it;
tests/integration/test_shadow_versions.py runs the real Consul agent)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from meshserve.orchestrator.comparison import Comparison
from meshserve.orchestrator.shadows import MAX_SAMPLES, ShadowResults, ShadowStore
from meshserve.v1 import plan_pb2

KEY = ("digits", "compare", "mlp@2")
LABEL = Comparison(plan_pb2.SHADOW_COMPARISON_LABEL)


@dataclass
class Entry:
    key: str
    value: bytes
    modify_index: int


class MemoryKV:
    """Consul KV's get/put(cas)/list semantics; `lose` CAS races to lose on purpose."""

    def __init__(self) -> None:
        self.data: dict[str, Entry] = {}
        self.index = 0
        self.lose = 0

    async def get(self, key: str) -> Entry | None:
        return self.data.get(key)

    async def put(self, key: str, value: bytes, cas: int | None = None) -> bool:
        current = self.data.get(key)
        if self.lose:
            self.lose -= 1
            self.index += 1  # someone else wrote in between
            if current is not None:
                self.data[key] = Entry(key, current.value, self.index)
            return False
        if cas is not None and cas != (current.modify_index if current else 0):
            return False
        self.index += 1
        self.data[key] = Entry(key, value, self.index)
        return True

    async def list(self, prefix: str) -> list[Entry]:
        return [e for k, e in sorted(self.data.items()) if k.startswith(prefix)]


def _record(results: ShadowResults, primary: list[int], candidate: list[int], rid: str) -> None:
    p, c = np.array(primary), np.array(candidate)
    results.primary(KEY, 2.0)
    results.candidate_ran(KEY, 3.0, LABEL, LABEL.compare(p, c), rid, (p, c))


async def test_two_orchestrators_add_up_and_a_restart_carries_on() -> None:
    kv = MemoryKV()
    a, b = ShadowResults(lambda: 1000), ShadowResults(lambda: 2000)
    store_a, store_b = ShadowStore(kv, a, "ms/"), ShadowStore(kv, b, "ms/")
    _record(a, [1, 2, 3], [1, 2, 4], "req-a")  # 3 rows, 2 agree
    a.candidate_failed(KEY, 5.0)
    _record(b, [7, 7], [7, 8], "req-b")  # 2 rows, 1 agrees
    kv.lose = 2  # b's first two writes lose a CAS race: it re-reads and merges again
    assert await store_a.flush() == 1
    assert await store_b.flush() == 1
    assert await store_a.flush() == 0  # nothing new

    restarted = ShadowResults()
    assert await ShadowStore(kv, restarted, "ms/").load() == 1
    (view,) = restarted.views()
    assert (view.candidate, view.runs, view.candidate_errors) == ("mlp@2", 3, 1)
    assert (view.compared, view.agreed) == (5, 3)
    assert view.agreement_rate == 3 / 5 and view.comparison == "label"
    found = restarted.disagreements()
    assert [(d.request_id, d.row) for d in found] == [("req-b", 1), ("req-a", 2)]
    assert (found[1].primary_value, found[1].candidate_value, found[1].distance) == ("3", "4", 1.0)
    # a sees b's results after its next flush, and keeps counting from there.
    _record(a, [1], [1], "req-a2")
    await store_a.flush()
    (view,) = a.views()
    assert (view.runs, view.compared, view.agreed) == (4, 6, 4)


async def test_samples_are_bounded_and_filters_apply() -> None:
    kv = MemoryKV()
    results = ShadowResults()
    store = ShadowStore(kv, results, "ms/")
    for i in range(MAX_SAMPLES + 10):
        _record(results, [0], [1], f"r{i}")
    await store.flush()
    assert len(results.disagreements()) == MAX_SAMPLES
    assert len(results.disagreements(limit=5)) == 5
    assert results.disagreements(plan="other") == []
    assert len(results.disagreements(candidate="mlp@2", step="compare")) == MAX_SAMPLES
    reloaded = ShadowResults()
    await ShadowStore(kv, reloaded, "ms/").load()
    assert len(reloaded.disagreements()) == MAX_SAMPLES
