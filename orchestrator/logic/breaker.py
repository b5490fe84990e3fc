"""A circuit breaker per external host, on an injected monotonic clock.

States and transitions (the invariants tests check):

- **closed**: calls pass; `failure_threshold` consecutive failures open it (a success resets
  the count).
- **open**: calls are refused at once (`allow` is False) until `reset_timeout_s` has passed
  since it opened, so a failing or slow service is not hammered and callers fail fast.
- **half-open**: after the timeout, exactly one trial call is let through at a time; its
  success closes the breaker, its failure opens it again for another `reset_timeout_s`.

A "failure" is what says the host is unwell (connection refused, timeout, 5xx/429); the caller
decides, the breaker only counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BreakerConfig", "Breakers", "CircuitBreaker"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """Consecutive failures that open a breaker and how long it stays open."""

    failure_threshold: int = 5
    reset_timeout_s: float = 10.0


class CircuitBreaker:
    """One host's breaker (module docstring); thread-safe."""

    def __init__(
        self, config: BreakerConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self.opened_total = 0

    @property
    def state(self) -> str:
        """closed, open or half_open (open turns half_open once the timeout has passed)."""
        with self._lock:
            return self._current()

    def _current(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.config.reset_timeout_s:
            self._state = HALF_OPEN
            self._trial_in_flight = False
        return self._state

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 when not open)."""
        with self._lock:
            if self._current() != OPEN:
                return 0.0
            return max(0.0, self._opened_at + self.config.reset_timeout_s - self._clock())

    def allow(self) -> bool:
        """Whether a call may go out now (a half-open breaker admits one trial at a time)."""
        with self._lock:
            state = self._current()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._state, self._failures, self._trial_in_flight = CLOSED, 0, False

    def record_failure(self) -> None:
        with self._lock:
            state = self._current()
            self._failures += 1
            if state == HALF_OPEN or self._failures >= self.config.failure_threshold:
                if state != OPEN:
                    self.opened_total += 1
                self._state, self._opened_at, self._trial_in_flight = OPEN, self._clock(), False


class Breakers:
    """The breaker of each host (``scheme://host:port``), made on first use with `config`."""

    def __init__(
        self, config: BreakerConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._by_host: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def for_host(self, host: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._by_host.get(host)
            if breaker is None:
                breaker = self._by_host[host] = CircuitBreaker(self.config, clock=self._clock)
            return breaker
