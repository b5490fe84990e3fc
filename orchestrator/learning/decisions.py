"""What each request decided or observed, remembered until its feedback arrives (bounded, TTL).

Records are kept per request id in insertion order; the oldest go first when `max_requests` is
exceeded, and records older than `ttl_s` (by the injected clock) are dropped on access. `take`
removes the records of one kind, so feedback is applied at most once per request and step.
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
        self._items: OrderedDict[str, tuple[float, list[Record]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, request_id: str, record: Record) -> None:
        now = self._clock()
        self._expire(now)
        entry = self._items.get(request_id)
        if entry is None:
            self._items[request_id] = (now, [record])
            while len(self._items) > self.max_requests:
                self._items.popitem(last=False)
        else:
            entry[1].append(record)

    def take(self, request_id: str, kind: str) -> list[Record]:
        """Remove and return the records of `kind` for `request_id` (empty when none)."""
        self._expire(self._clock())
        entry = self._items.get(request_id)
        if entry is None:
            return []
        taken = [r for r in entry[1] if r.kind == kind]
        rest = [r for r in entry[1] if r.kind != kind]
        if rest:
            self._items[request_id] = (entry[0], rest)
        else:
            del self._items[request_id]
        return taken

    def put_back(self, request_id: str, records: list[Record]) -> None:
        """Undo a `take` (the feedback could not be made durable)."""
        for record in records:
            self.add(request_id, record)

    def _expire(self, now: float) -> None:
        while self._items:
            first = next(iter(self._items.values()))
            if now - first[0] <= self.ttl_s:
                return
            self._items.popitem(last=False)
