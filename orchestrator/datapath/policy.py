"""Picker policies: rank the eligible replicas of a model and choose one for a call.

The table ``POLICIES`` maps a config name (``DataPathConfig.policy``, per-model
``ModelPathConfig.policy``) to a policy class. Contract of a registered class:

- ``cls(rng, **options)`` builds one policy for one model's router. `rng` is a seeded
  ``random.Random`` (the only randomness a policy may use); `options` are the config's
  ``policy_options`` and are checked by the constructor's signature (an unknown option is a config
  error naming the accepted ones) and by the constructor itself (ValueError for a bad value).
  Constructing is cheap and has no side effects: config validation builds one and drops it.
- ``pick(candidates, call)`` returns one of `candidates` (never empty). It sees the candidates
  only through the ``Candidate`` protocol, never touches a channel and never filters: the router
  passes only replicas that may take this attempt (passing, not ejected, not draining, not
  already tried by this call). `call` (``CallInfo``) says what the router knows of the call;
  a policy reads it, never changes or keeps it. Policies ignore what they do not need.
- ``pick`` runs on the event loop for every attempt: no I/O, no awaits, no allocation that
  grows with the request.

Adding a policy is one class plus ``register_policy(name, cls)``; no other edit.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol, TypeVar

from meshserve.orchestrator.tables import Table

__all__ = [
    "POLICIES",
    "CallInfo",
    "Candidate",
    "PickerPolicy",
    "PowerOfTwoChoices",
    "RoundRobin",
    "make_policy",
    "register_policy",
]


class Candidate(Protocol):
    @property
    def instance_id(self) -> str: ...

    @property
    def in_flight(self) -> int: ...

    def latency_score_ms(self, now: float) -> float: ...


C = TypeVar("C", bound=Candidate)


_NONE_TRIED: frozenset[str] = frozenset()


class CallInfo:
    """What the router knows of one call when it picks a replica for an attempt.

    One per call, built by the router (model, version, routing key fixed; it replaces the
    call's former `tried` set, so routing allocates nothing more than before); before each pick
    the router sets `attempt` (1 for the first attempt), `now` (its clock) and `tried` (the
    instance ids whose attempts failed, a frozenset). Read-only to policies.
    """

    __slots__ = ("attempt", "model", "now", "routing_key", "tried", "version")

    def __init__(self, model: str, version: str = "", routing_key: str = "") -> None:
        self.model: Final = model
        self.version: Final = version
        self.routing_key: Final = routing_key  # "" when the caller gave none (or a batch mixes)
        self.attempt = 0
        self.now = 0.0
        self.tried: frozenset[str] = _NONE_TRIED


class PickerPolicy(Protocol):
    def pick(self, candidates: Sequence[C], call: CallInfo) -> C:
        """One of `candidates` (never empty)."""
        ...


PolicyClass = Callable[..., PickerPolicy]

POLICIES: Final[Table[PolicyClass]] = Table("picker policy")


def register_policy(name: str, cls: PolicyClass) -> None:
    """Make `cls` the policy of config name `name` (see the module docstring's contract)."""
    POLICIES.register(name, cls)


def make_policy(
    name: str, options: Mapping[str, Any] | None = None, rng: random.Random | None = None
) -> PickerPolicy:
    """The policy of config name `name` built with `options`; ValueError names what is wrong."""
    cls = POLICIES.get(name)
    options = options or {}
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = sorted(p for p in params if p != "rng")
        for key in options:
            if key not in accepted:
                raise ValueError(
                    f"policy {name!r}: unknown option {key!r} (expected one of {accepted})"
                )
    return cls(rng or random.Random(), **options)


class PowerOfTwoChoices:
    """Power of two choices on in-flight requests, ties broken by latency EWMA.

    Algorithm: sample two distinct candidates uniformly at random (with the injected rng); pick
    the one with fewer requests in flight; on equal in-flight counts pick the lower latency score
    (the replica's decayed latency EWMA at `call.now`); on equal scores, the first sampled.

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

    def pick(self, candidates: Sequence[C], call: CallInfo) -> C:
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
        now = call.now
        return b if b.latency_score_ms(now) < a.latency_score_ms(now) else a


class RoundRobin:
    """Round robin over the candidates in the order given.

    Invariant: over k x n consecutive picks from an unchanged list of n candidates each is
    picked exactly k times. The rng is not used.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[C], call: CallInfo) -> C:
        choice = candidates[self._next % len(candidates)]
        self._next = (self._next + 1) % (1 << 30)
        return choice


POLICIES.register("p2c", PowerOfTwoChoices, builtin=True)
POLICIES.register("round_robin", RoundRobin, builtin=True)
