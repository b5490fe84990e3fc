"""Latency history of one model: the last N successful attempts and their p95/p99.

The router derives its per-attempt timeout (k x p99) and its hedging delay (p95) from it. A
sample costs a list store; the quantiles are recomputed (a sort of at most N floats) when the
window first holds `min_samples` samples and then every `refresh_every` samples, so they trail
a change in latency by at most that many calls. Only successful attempts are recorded: a hung
replica's timeouts never raise the estimate that bounds them.
"""

from __future__ import annotations

__all__ = ["LatencyWindow"]


class LatencyWindow:
    """Ring buffer of latencies (ms) with nearest-rank p95/p99 (0.0 until `warm`)."""

    __slots__ = ("_count", "_min", "_next", "_refresh", "_samples", "p95_ms", "p99_ms", "warm")

    def __init__(self, size: int = 256, min_samples: int = 20, refresh_every: int = 32) -> None:
        if not 1 <= min_samples <= size:
            raise ValueError(f"min_samples={min_samples} (expected 1..size={size})")
        self._samples = [0.0] * size
        self._next = 0
        self._count = 0
        self._min = min_samples
        self._refresh = max(1, refresh_every)
        self.warm = False
        self.p95_ms = 0.0
        self.p99_ms = 0.0

    def record(self, sample_ms: float) -> bool:
        """Add a sample; True when the quantiles were recomputed by it."""
        samples = self._samples
        samples[self._next] = sample_ms
        self._next = (self._next + 1) % len(samples)
        self._count += 1
        count = self._count
        if count < self._min or (count != self._min and count % self._refresh):
            return False
        data = sorted(samples[: min(count, len(samples))])
        last = len(data) - 1
        self.p95_ms = data[round(0.95 * last)]
        self.p99_ms = data[round(0.99 * last)]
        self.warm = True
        return True

    def __len__(self) -> int:
        return min(self._count, len(self._samples))
