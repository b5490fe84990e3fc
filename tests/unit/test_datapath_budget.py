"""Retry budget (token bucket) with an injected clock."""

from __future__ import annotations

from meshserve.orchestrator.datapath.budget import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_starts_with_one_second_of_floor_and_refills_with_time() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_s=2.0, max_tokens=10, clock=clock)
    assert budget.try_retry() and budget.try_retry()
    assert not budget.try_retry()
    clock.now += 0.5
    assert budget.try_retry()
    assert not budget.try_retry()


def test_retries_stay_within_ratio_plus_floor_under_a_failure_storm() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_s=5.0, max_tokens=50, clock=clock)
    attempts = retries = 0
    for _ in range(10_000):  # 10 s of 1000 calls/s, every attempt wants a retry
        clock.now += 0.001
        budget.record_attempt()
        attempts += 1
        if budget.try_retry():
            retries += 1
    assert retries <= 0.2 * attempts + 5.0 * 10 + 5.0
    assert retries >= 0.2 * attempts  # the budget is also actually granted


def test_tokens_are_capped() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=1.0, min_per_s=1.0, max_tokens=3, clock=clock)
    for _ in range(100):
        budget.record_attempt()
    clock.now += 1000
    assert budget.tokens == 3
    granted = sum(budget.try_retry() for _ in range(10))
    assert granted == 3
