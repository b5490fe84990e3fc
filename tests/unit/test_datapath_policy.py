"""Picker policies with an injected rng: invariants of power of two choices and round robin."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.datapath.policy import (
    CallInfo,
    PowerOfTwoChoices,
    RoundRobin,
    make_policy,
)

CALL = CallInfo("m")  # now = 0.0


@dataclass
class Cand:
    name: str
    in_flight: int = 0
    latency_ms: float = 0.0

    @property
    def instance_id(self) -> str:
        return self.name

    def latency_score_ms(self, now: float) -> float:
        return self.latency_ms


def test_single_candidate_is_returned() -> None:
    only = Cand("a")
    assert PowerOfTwoChoices(random.Random(1)).pick([only], CALL) is only


def test_unique_most_loaded_replica_is_never_picked() -> None:
    policy = PowerOfTwoChoices(random.Random(2))
    cands = [Cand("a", 1), Cand("b", 5), Cand("c", 2), Cand("d", 0)]
    picks = Counter(policy.pick(cands, CALL).name for _ in range(2000))
    assert picks["b"] == 0
    # The least loaded wins every pair it is sampled in: 3 of the 6 pairs.
    assert picks["d"] == pytest.approx(1000, rel=0.1)


def test_equal_in_flight_is_broken_by_latency() -> None:
    policy = PowerOfTwoChoices(random.Random(3))
    cands = [Cand("fast", 0, 1.0), Cand("slow", 0, 100.0)]
    assert {policy.pick(cands, CALL).name for _ in range(100)} == {"fast"}
    three = [Cand("fast", 0, 1.0), Cand("slow", 0, 100.0), Cand("mid", 0, 5.0)]
    picks = Counter(policy.pick(three, CALL).name for _ in range(3000))
    assert picks["slow"] == 0
    assert picks["fast"] == pytest.approx(2000, rel=0.1)  # in 2 of the 3 pairs


def test_same_seed_gives_same_picks() -> None:
    cands = [Cand(str(i), i % 3, float(i)) for i in range(7)]
    a = [PowerOfTwoChoices(random.Random(9)).pick(cands, CALL).name for _ in range(50)]
    b = [PowerOfTwoChoices(random.Random(9)).pick(cands, CALL).name for _ in range(50)]
    assert a == b


def test_equal_candidates_share_load_evenly() -> None:
    policy = PowerOfTwoChoices(random.Random(4))
    cands = [Cand(str(i)) for i in range(4)]
    picks = Counter(policy.pick(cands, CALL).name for _ in range(8000))
    assert all(v == pytest.approx(2000, rel=0.1) for v in picks.values())


def test_round_robin_picks_each_exactly_k_times() -> None:
    policy = RoundRobin()
    cands = [Cand("a"), Cand("b"), Cand("c")]
    picks = Counter(policy.pick(cands, CALL).name for _ in range(30))
    assert picks == {"a": 10, "b": 10, "c": 10}


def test_make_policy_rejects_unknown_names() -> None:
    assert isinstance(make_policy("round_robin"), RoundRobin)
    with pytest.raises(InvalidInputError, match="expected 'p2c' or 'round_robin'"):
        make_policy("random")
