"""Outlier ejection state of one replica: consecutive failures -> ejected, back-off, probe.

States: ``healthy`` -> (N consecutive failures) -> ``ejected`` until a back-off deadline ->
``probing`` (exactly one request let through) -> success: ``healthy`` / failure: ``ejected``
again with the back-off doubled (capped). The clock is injected; no timers run.
"""

from __future__ import annotations

from collections.abc import Callable

from meshserve.orchestrator.datapath.config import EjectionConfig

__all__ = ["OutlierState"]


class OutlierState:
    """Ejection bookkeeping for one replica (pure logic, injected clock)."""

    def __init__(self, config: EjectionConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self.consecutive_failures = 0
        self.ejections_in_row = 0
        self.ejected_until = 0.0
        self._ejected = False
        self._probe_in_flight = False

    @property
    def state(self) -> str:
        """ "healthy", "ejected" (back-off running) or "probing" (back-off over)."""
        if not self._ejected:
            return "healthy"
        return "ejected" if self._clock() < self.ejected_until else "probing"

    def may_take(self) -> bool:
        """May this replica take a request now? (A probing replica takes one at a time.)"""
        state = self.state
        if state == "healthy":
            return True
        return state == "probing" and not self._probe_in_flight

    def on_start(self) -> None:
        """A request is being sent to this replica."""
        if self._ejected and self.state == "probing":
            self._probe_in_flight = True

    def on_abandon(self) -> None:
        """The request was cancelled (a lost hedge, a caller gone): it proved nothing, so a probe
        it carried may be sent again."""
        self._probe_in_flight = False

    def on_success(self) -> None:
        self.consecutive_failures = 0
        if self._ejected:
            self._ejected = False
            self.ejections_in_row = 0
        self._probe_in_flight = False

    def on_failure(self, may_eject: bool = True) -> bool:
        """Record a failure; returns True when this failure ejected the replica.

        `may_eject` is False when the model already has its maximum share of ejected replicas.
        """
        self.consecutive_failures += 1
        probe_failed = self._ejected and self._probe_in_flight
        self._probe_in_flight = False
        if probe_failed or (
            not self._ejected
            and may_eject
            and self.consecutive_failures >= self._config.consecutive_failures
        ):
            self.ejections_in_row += 1
            backoff = self._config.base_ejection_s * (2 ** (self.ejections_in_row - 1))
            self.ejected_until = self._clock() + min(backoff, self._config.max_ejection_s)
            self._ejected = True
            return True
        return False

    @property
    def is_ejected(self) -> bool:
        """Out of rotation (ejected or waiting for its probe)."""
        return self._ejected
