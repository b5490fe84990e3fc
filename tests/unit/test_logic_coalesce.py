"""KeyCoalescer: one fetch per window for concurrent callers, max_batch, deadlines, errors."""

from __future__ import annotations

import asyncio

import pytest

from meshserve.errors import UnavailableError
from meshserve.orchestrator.logic.coalesce import KeyCoalescer


class Table:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[list[int], float | None]] = []
        self.fail = fail

    async def fetch(self, keys: list[int], deadline: float | None) -> dict[int, str]:
        self.calls.append((list(keys), deadline))
        if self.fail:
            raise UnavailableError("table down")
        return {k: f"row{k}" for k in keys if k % 10 != 0}


async def test_concurrent_callers_share_one_fetch_and_get_their_own_keys():
    table = Table()
    coalescer = KeyCoalescer(table.fetch, window_s=0.02, max_batch=100)
    results = await asyncio.gather(
        *(coalescer.get([i, i + 1, 10], deadline=None) for i in range(5))
    )
    assert len(table.calls) == 1 and sorted(table.calls[0][0]) == [0, 1, 2, 3, 4, 5, 10]
    assert results[2] == {2: "row2", 3: "row3", 10: None}
    assert coalescer.requests == 5 and coalescer.fetches == 1


async def test_max_batch_splits_and_the_batch_deadline_is_the_latest():
    table = Table()
    coalescer = KeyCoalescer(table.fetch, window_s=5.0, max_batch=3)
    out = await asyncio.wait_for(
        asyncio.gather(
            coalescer.get([1, 2], deadline=100.0), coalescer.get([3, 4], deadline=200.0)
        ),
        2.0,
    )
    assert out[1] == {3: "row3", 4: "row4"}
    assert [len(keys) for keys, _ in table.calls] == [3, 1]
    assert table.calls[0][1] == 200.0


async def test_a_failed_fetch_fails_each_waiter_with_its_own_copy():
    coalescer = KeyCoalescer(Table(fail=True).fetch, window_s=0.01, max_batch=10)
    errors = await asyncio.gather(coalescer.get([1]), coalescer.get([2]), return_exceptions=True)
    assert all(isinstance(e, UnavailableError) for e in errors)
    assert errors[0] is not errors[1]


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="max_batch"):
        KeyCoalescer(Table().fetch, window_s=0.0, max_batch=0)
