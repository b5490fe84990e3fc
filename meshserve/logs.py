"""Rate-limited logging for repeated bad input: one line per (logger, kind) per interval.

A hostile client sending the same malformed request thousands of times must not grow the logs
by a traceback each: `rate_limited` writes the first occurrence of a kind, then at most one line
per `interval_s` saying how many were suppressed since. One shared `LogLimiter` (`LIMITER`)
serves the whole process; tests build their own with an injected clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["LIMITER", "LogLimiter", "rate_limited"]

DEFAULT_INTERVAL_S = 10.0
# Distinct kinds remembered at once; past it the table is cleared (kinds are code constants,
# so this only bounds memory if a caller ever passes something unbounded).
_MAX_KINDS = 1024


class LogLimiter:
    """Decides whether a (logger, kind) line may be written now; counts the suppressed ones."""

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[tuple[str, str], tuple[float, int]] = {}  # key -> (last, suppressed)

    def admit(self, logger: str, kind: str) -> int | None:
        """None: suppress this line; else the number suppressed since the last written one."""
        key = (logger, kind)
        now = self._clock()
        with self._lock:
            found = self._state.get(key)
            if found is not None and now - found[0] < self.interval_s:
                self._state[key] = (found[0], found[1] + 1)
                return None
            if len(self._state) >= _MAX_KINDS:
                self._state.clear()
            self._state[key] = (now, 0)
            return found[1] if found is not None else 0


LIMITER = LogLimiter()


def rate_limited(
    logger: logging.Logger,
    kind: str,
    msg: str,
    *args: object,
    level: int = logging.WARNING,
    exc_info: BaseException | None = None,
    limiter: LogLimiter | None = None,
) -> bool:
    """Log `msg % args` unless a `kind` line of `logger` was written within the interval;
    the written line says how many were suppressed. True when it was written."""
    if not logger.isEnabledFor(level):
        return False
    suppressed = (limiter or LIMITER).admit(logger.name, kind)
    if suppressed is None:
        return False
    if suppressed:
        text = msg % args if args else msg
        logger.log(level, "%s (%d similar suppressed)", text, suppressed, exc_info=exc_info)
    else:
        logger.log(level, msg, *args, exc_info=exc_info)
    return True
