"""What each request decided or observed, remembered until its feedback arrives (bounded, TTL).

Records are kept per request id in insertion order; the oldest go first when `max_requests` is
exceeded, and records older than `ttl_s` (by the injected clock) are dropped on access. Each
request also keeps the wall-clock time of its first record (`issued_s`, the time its feedback
token carries). `peek` reads a request's records; `take` removes the records of one kind.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["DecisionMemory", "Record"]


@dataclass(frozen=True)
class Record:
    """One thing a request did: a bandit choice ("bandit") or a learner observation ("learner")."""

    kind: str
    key: str  # "plan/step" for bandits, the learner name for learners
    value: Any  # (context, arm) for bandits, the feature vector for learners


class DecisionMemory:
    """request id -> records, bounded by count and age."""

    def __init__(
        self,
        max_requests: int = 100_000,
        ttl_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_requests = max_requests
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, float, list[Record]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, request_id: str, record: Record, issued_s: float = 0.0) -> None:
        now = self._clock()
        self._expire(now)
        entry = self._items.get(request_id)
        if entry is None:
            self._items[request_id] = (now, issued_s, [record])
            while len(self._items) > self.max_requests:
                self._items.popitem(last=False)
        else:
            entry[2].append(record)

    def peek(self, request_id: str) -> tuple[float, list[Record]] | None:
        """(issued_s, records) of `request_id`, left in place; None when unknown or expired."""
        self._expire(self._clock())
        entry = self._items.get(request_id)
        return None if entry is None else (entry[1], list(entry[2]))

    def take(self, request_id: str, kind: str) -> list[Record]:
        """Remove and return the records of `kind` for `request_id` (empty when none)."""
        self._expire(self._clock())
        entry = self._items.get(request_id)
        if entry is None:
            return []
        taken = [r for r in entry[2] if r.kind == kind]
        rest = [r for r in entry[2] if r.kind != kind]
        if rest:
            self._items[request_id] = (entry[0], entry[1], rest)
        else:
            del self._items[request_id]
        return taken

    def _expire(self, now: float) -> None:
        while self._items:
            first = next(iter(self._items.values()))
            if now - first[0] <= self.ttl_s:
                return
            self._items.popitem(last=False)
