"""Outlier ejection state machine with an injected clock."""

from __future__ import annotations

from meshserve.orchestrator.datapath.config import EjectionConfig
from meshserve.orchestrator.datapath.ejection import OutlierState


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock) -> OutlierState:
    cfg = EjectionConfig(consecutive_failures=3, base_ejection_s=1.0, max_ejection_s=4.0)
    return OutlierState(cfg, clock)


def test_consecutive_failures_eject_and_success_resets_the_count() -> None:
    clock = Clock()
    state = make(clock)
    assert not state.on_failure() and not state.on_failure()
    state.on_success()
    assert not state.on_failure() and not state.on_failure()
    assert state.on_failure()
    assert state.state == "ejected" and not state.may_take()


def test_backoff_doubles_with_failed_probes_and_is_capped() -> None:
    clock = Clock()
    state = make(clock)
    for _ in range(3):
        state.on_failure()
    expected = [1.0, 2.0, 4.0, 4.0]
    for backoff in expected:
        assert state.ejected_until - clock.now == backoff
        clock.now += backoff - 0.01
        assert not state.may_take()
        clock.now += 0.01
        assert state.state == "probing" and state.may_take()
        state.on_start()
        assert not state.may_take()  # one probe at a time
        assert state.on_failure()  # a failed probe ejects again at once


def test_successful_probe_restores_the_replica() -> None:
    clock = Clock()
    state = make(clock)
    for _ in range(3):
        state.on_failure()
    clock.now += 1.0
    state.on_start()
    state.on_success()
    assert state.state == "healthy" and state.may_take() and state.ejections_in_row == 0
    for _ in range(3):
        state.on_failure()
    assert state.ejected_until - clock.now == 1.0  # back-off starts over


def test_may_eject_false_keeps_the_replica_in_rotation() -> None:
    clock = Clock()
    state = make(clock)
    for _ in range(5):
        assert not state.on_failure(may_eject=False)
    assert state.state == "healthy"
