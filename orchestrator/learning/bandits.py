"""Multi-armed bandits over a plan's branches, per context (segment): the pure math.

State per (context, arm): `pulls` (times chosen), `updates` (rewards received), `reward_sum`,
and a Beta(alpha, beta) posterior with a uniform Beta(1, 1) prior; a reward r in [0, 1] adds r to
alpha and 1 - r to beta (the fractional Bernoulli update).

Policies (both take an injected numpy Generator, so a seeded bandit is reproducible):
- Thompson sampling: draw theta ~ Beta(alpha, beta) per arm, pick the largest draw.
- Epsilon-greedy: with probability epsilon pick a uniformly random arm, otherwise the arm with the
  highest mean reward (reward_sum / updates); arms never rated count as +inf so each is tried
  once. Ties go to the first arm in plan order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError

__all__ = [
    "POLICIES",
    "ArmState",
    "BanditState",
    "choose",
    "normalise_policy",
]

POLICIES = ("thompson", "epsilon_greedy")


@dataclass(frozen=True)
class ArmState:
    """Learned numbers of one arm in one context."""

    pulls: int = 0
    updates: int = 0
    reward_sum: float = 0.0
    alpha: float = 1.0
    beta: float = 1.0

    @property
    def mean(self) -> float:
        return self.reward_sum / self.updates if self.updates else float("inf")

    def rewarded(self, reward: float) -> ArmState:
        """This arm after one reward in [0, 1]."""
        return replace(
            self,
            updates=self.updates + 1,
            reward_sum=self.reward_sum + reward,
            alpha=self.alpha + reward,
            beta=self.beta + (1.0 - reward),
        )


@dataclass
class BanditState:
    """Every arm of one bandit step, keyed by (context, arm)."""

    arms: dict[tuple[str, str], ArmState] = field(default_factory=dict)

    def get(self, context: str, arm: str) -> ArmState:
        return self.arms.get((context, arm), ArmState())

    def to_json(self) -> dict[str, Any]:
        return {
            "arms": [
                {"context": c, "arm": a, **s.__dict__} for (c, a), s in sorted(self.arms.items())
            ]
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BanditState:
        arms = {}
        for item in data.get("arms", ()):
            arms[(str(item["context"]), str(item["arm"]))] = ArmState(
                pulls=int(item["pulls"]),
                updates=int(item["updates"]),
                reward_sum=float(item["reward_sum"]),
                alpha=float(item["alpha"]),
                beta=float(item["beta"]),
            )
        return cls(arms)

    def copy(self) -> BanditState:
        return BanditState(dict(self.arms))


def normalise_policy(policy: int | str) -> str:
    """'thompson' or 'epsilon_greedy' from a BanditPolicy enum value or a name."""
    if isinstance(policy, int):
        # BANDIT_POLICY_UNSPECIFIED (0) means Thompson sampling.
        names = {0: "thompson", 1: "thompson", 2: "epsilon_greedy"}
        if policy in names:
            return names[policy]
    else:
        name = policy.lower().removeprefix("bandit_policy_").replace("-", "_")
        if name in ("", "unspecified"):
            return "thompson"
        if name in POLICIES:
            return name
    raise InvalidInputError(f"unknown bandit policy {policy!r}; expected one of {list(POLICIES)}")


def choose(
    state: BanditState,
    context: str,
    arms: Sequence[str],
    policy: str,
    epsilon: float,
    rng: np.random.Generator,
) -> str:
    """The arm to pull now (see the module docstring)."""
    if not arms:
        raise InvalidInputError("a bandit needs at least one arm")
    if not 0.0 <= epsilon <= 1.0:
        raise InvalidInputError(f"bandit epsilon must be in [0, 1], got {epsilon}")
    states = [state.get(context, arm) for arm in arms]
    if policy == "thompson":
        draws = [rng.beta(s.alpha, s.beta) for s in states]
        return arms[int(np.argmax(draws))]
    if policy == "epsilon_greedy":
        if rng.random() < epsilon:
            return arms[int(rng.integers(len(arms)))]
        return arms[int(np.argmax([s.mean for s in states]))]
    raise InvalidInputError(f"unknown bandit policy {policy!r}; expected one of {list(POLICIES)}")
