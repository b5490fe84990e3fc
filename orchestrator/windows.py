"""A latency window: count, errors and the latest samples, for percentiles in Admin views."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = ["WINDOW", "LatencyWindow"]

WINDOW = 2048


@dataclass
class LatencyWindow:
    """Count, errors and the latest `WINDOW` latencies (for percentiles)."""

    count: int = 0
    errors: int = 0
    samples_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))

    def add(self, latency_ms: float, ok: bool = True) -> None:
        self.count += 1
        if not ok:
            self.errors += 1
        self.samples_ms.append(latency_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(list(self.samples_ms), q)) if self.samples_ms else 0.0

    def mean(self) -> float:
        return float(np.mean(list(self.samples_ms))) if self.samples_ms else 0.0
