"""What the router needs to know about one failed attempt against one replica.

A failed attempt is the ``meshserve.errors`` class for its status, created once where the
failure is seen (``grpc_errors.from_rpc_error`` for a failed call, ``error_from_status`` for a
stream item, ``error_for_status`` for a broken stream or an injected fault, with ``reason``
naming why). The router adds ``model``/``replica`` to it and raises that same error when it
stops retrying. Whether it counts against the replica, and whether (and after how long) it is
retried (``RetryPolicy``), is decided here.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import grpc

from meshserve.errors import MeshError
from meshserve.orchestrator.datapath.budget import RetryBudget
from meshserve.orchestrator.datapath.config import RetryConfig

__all__ = ["REPLICA_FAULT_CODES", "RetryPolicy", "is_replica_fault"]

log = logging.getLogger(__name__)

# Failures retried like a retryable code (a broken stream, an attempt timeout).
RETRIED_REASONS = frozenset({"stream_broken", "attempt_timeout"})

# Codes that say something about the replica (count toward outlier ejection).
REPLICA_FAULT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)


def is_replica_fault(err: MeshError) -> bool:
    """Does this failure count against the replica (not the request)?"""
    return err.code in REPLICA_FAULT_CODES


class RetryPolicy:
    """Whether a failed attempt of a call is retried, and after how long (``RetryConfig``).

    Retried: `retry_codes`, a broken stream, an attempt timeout; `retry_once_codes` only once per
    call (the caller passes `once_spent`). Never past `max_attempts`, a negative pushback, the
    deadline (backoff and pushback included) or the budget (one token per retry).
    """

    def __init__(
        self,
        model: str,
        config: RetryConfig,
        budget: RetryBudget,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self._model = model
        self._config = config
        self._budget = budget
        self._clock = clock
        self._rng = rng
        self._codes = frozenset(grpc.StatusCode[name] for name in config.retry_codes)
        self.once_codes = frozenset(grpc.StatusCode[name] for name in config.retry_once_codes)

    def delay(
        self, err: MeshError, attempt: int, deadline: float, once_spent: bool
    ) -> float | None:
        """Seconds to wait before retrying `err`, or None when it must not be retried."""
        retry = self._config
        code = err.code
        if code in self.once_codes:
            if once_spent:
                return None
        elif err.reason not in RETRIED_REASONS and code not in self._codes:
            return None
        if attempt >= retry.max_attempts:
            return None
        cap = min(retry.backoff_max_s, retry.backoff_base_s * (2 ** (attempt - 1)))
        delay = self._rng.uniform(0.0, cap)
        if err.retry_pushback_ms is not None:
            if err.retry_pushback_ms < 0:
                return None
            delay = max(delay, err.retry_pushback_ms / 1000.0)
        if self._clock() + delay >= deadline:
            return None
        if not self._budget.try_retry():
            log.debug("model %s: retry budget exhausted, not retrying %s", self._model, err.reason)
            return None
        return delay
