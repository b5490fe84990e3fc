"""Retry budget: a token bucket that keeps retries a small fraction of attempts (no storms)."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RetryBudget"]


class RetryBudget:
    """Token bucket shared by every call to one model.

    - Every first attempt deposits `ratio` tokens (0.2: at most ~20% extra attempts).
    - Time deposits `min_per_s` tokens per second (a small floor so that rare calls can retry).
    - The bucket holds at most `max_tokens`; it starts with `min_per_s` tokens (one second of
      floor).
    - A retry withdraws one whole token; without one the retry is refused.

    Invariant: retries granted over any window <= ratio x first attempts + min_per_s x seconds +
    the tokens held at the window start (<= max_tokens).
    """

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_s: float = 10.0,
        max_tokens: float = 100.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ratio = ratio
        self._min_per_s = min_per_s
        self._max = max(max_tokens, 1.0)
        self._clock = clock
        self._tokens = min(self._max, min_per_s)
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(self._max, self._tokens + elapsed * self._min_per_s)

    def record_attempt(self) -> None:
        """A first attempt was made."""
        self._refill()
        self._tokens = min(self._max, self._tokens + self._ratio)

    def try_retry(self) -> bool:
        """Take a token for one retry; False when the budget is spent."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def peek(self) -> float:
        """The tokens held now, without taking or refilling (safe from another thread)."""
        elapsed = max(0.0, self._clock() - self._last)
        return min(self._max, self._tokens + elapsed * self._min_per_s)

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens
