"""Objects bound to an event loop (connection pools, clients, coalescers), made once per loop.

asyncio pools and futures belong to the loop that made them, so the logic blocks keep theirs per
running loop: `PerLoop.get(key, make)` returns this loop's object for `key` (made on first use),
`PerLoop.take_loop()` removes and returns every object of the running loop (to close them at
shutdown).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

V = TypeVar("V")


class PerLoop(Generic[V]):
    """A (running loop, key) -> object cache."""

    def __init__(self) -> None:
        self._items: dict[tuple[int, Hashable], V] = {}

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """This loop's object for `key`, made with `make()` the first time."""
        full = (id(asyncio.get_running_loop()), key)
        item = self._items.get(full)
        if item is None:
            item = self._items[full] = make()
        return item

    def values(self) -> list[V]:
        """Every object of every loop (stats, benchmarks)."""
        return list(self._items.values())

    def take_loop(self) -> list[V]:
        """Remove and return the running loop's objects."""
        loop_id = id(asyncio.get_running_loop())
        keys = [k for k in self._items if k[0] == loop_id]
        return [self._items.pop(k) for k in keys]
