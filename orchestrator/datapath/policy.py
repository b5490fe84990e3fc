"""Picker policies: rank the eligible replicas of a model and choose one.

A policy only sees candidates through the small ``Candidate`` protocol; it never touches a channel
and never filters (the router passes only replicas that may take a request: passing, not
ejected, not draining, not already tried by this call).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = ["Candidate", "PickerPolicy", "PowerOfTwoChoices", "RoundRobin", "make_policy"]


class Candidate(Protocol):
    @property
    def in_flight(self) -> int: ...

    def latency_score_ms(self, now: float) -> float: ...


C = TypeVar("C", bound=Candidate)


class PickerPolicy(Protocol):
    def pick(self, candidates: Sequence[C], now: float) -> C:
        """One of `candidates` (never empty)."""
        ...


class PowerOfTwoChoices:
    """Power of two choices on in-flight requests, ties broken by latency EWMA.

    Algorithm: sample two distinct candidates uniformly at random (with the injected rng); pick
    the one with fewer requests in flight; on equal in-flight counts pick the lower latency score
    (the replica's decayed latency EWMA); on equal scores, the first sampled.

    Invariants:
    - With one candidate it is returned; with two or more, two *distinct* ones are compared.
    - The candidate with the most in-flight requests (unique maximum) is never picked when there
      are two or more candidates, so no replica is piled on while another has less work.
    - By Little's law, equalising in-flight counts gives each replica throughput proportional to
      1/latency, so a slow replica gets a small share even under load; at low load (all in-flight
      counts equal) the latency tie-break sends traffic to the fastest of each sampled pair.
    - Deterministic for a given rng seed and candidate state (unit-testable).
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, candidates: Sequence[C], now: float) -> C:
        n = len(candidates)
        if n == 1:
            return candidates[0]
        i = self._rng.randrange(n)
        j = self._rng.randrange(n - 1)
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        if a.in_flight != b.in_flight:
            return a if a.in_flight < b.in_flight else b
        return b if b.latency_score_ms(now) < a.latency_score_ms(now) else a


class RoundRobin:
    """Round robin over the candidates in the order given.

    Invariant: over k x n consecutive picks from an unchanged list of n candidates each is
    picked exactly k times.
    """

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[C], now: float) -> C:
        choice = candidates[self._next % len(candidates)]
        self._next = (self._next + 1) % (1 << 30)
        return choice


def make_policy(name: str, rng: random.Random | None = None) -> PickerPolicy:
    """Policy by config name ("p2c" or "round_robin")."""
    if name == "p2c":
        return PowerOfTwoChoices(rng)
    if name == "round_robin":
        return RoundRobin()
    raise ValueError(f"unknown picker policy {name!r} (expected 'p2c' or 'round_robin')")
