"""Multi-armed bandits over a plan's branches, per context (segment): the pure math.

State per (context, arm): `pulls` (times chosen), `updates` (rewards received), `reward_sum`,
and a Beta(alpha, beta) posterior with a uniform Beta(1, 1) prior; a reward r in [0, 1] adds r to
alpha and 1 - r to beta (the fractional Bernoulli update).

Policies live in the table `BANDIT_POLICIES` (orchestrator/tables.py rules); each takes an
injected numpy Generator, so a seeded bandit is reproducible:
- Thompson sampling: draw theta ~ Beta(alpha, beta) per arm, pick the largest draw.
- Epsilon-greedy: with probability epsilon pick a uniformly random arm, otherwise the arm with the
  highest mean reward (reward_sum / updates); arms never rated count as +inf so each is tried
  once. Ties go to the first arm in plan order.
- LinUCB (contextual, disjoint model): per (context, arm) a ridge regression A = I + sum x x^T,
  b = sum r x over the request's feature vector x (a bias 1 is appended); choose the arm with the
  largest theta.x + alpha * sqrt(x^T A^-1 x), theta = A^-1 b. Invariant: A stays symmetric
  positive definite (identity plus outer products), so the solve never fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.tables import Table

__all__ = [
    "BANDIT_POLICIES",
    "MAX_FEATURES",
    "ArmState",
    "BanditPolicy",
    "BanditState",
    "Choice",
    "LinearArm",
    "choose",
    "normalise_policy",
]

MAX_FEATURES = 64  # contextual feature vectors longer than this are refused (limits are data)


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


@dataclass(frozen=True)
class LinearArm:
    """LinUCB's ridge regression of one arm: `a` (d x d) and `b` (d), features with bias."""

    a: np.ndarray
    b: np.ndarray

    @classmethod
    def fresh(cls, d: int) -> LinearArm:
        return cls(np.eye(d), np.zeros(d))

    def rewarded(self, x: np.ndarray, reward: float) -> LinearArm:
        return LinearArm(self.a + np.outer(x, x), self.b + reward * x)

    def score(self, x: np.ndarray, alpha: float) -> float:
        a_inv_x = np.linalg.solve(self.a, x)
        theta = np.linalg.solve(self.a, self.b)
        return float(theta @ x + alpha * np.sqrt(max(float(x @ a_inv_x), 0.0)))


def with_bias(features: Sequence[float]) -> np.ndarray:
    """The LinUCB vector of `features`: finite floats plus a trailing bias 1."""
    x = np.asarray(list(features), dtype=np.float64)
    if x.ndim != 1 or x.size > MAX_FEATURES or not np.all(np.isfinite(x)):
        raise InvalidInputError(
            f"bandit features: expected at most {MAX_FEATURES} finite numbers, got "
            f"{str(list(features))[:120]}"
        )
    return np.append(x, 1.0)


@dataclass
class BanditState:
    """Every arm of one bandit step, keyed by (context, arm); `linear` for contextual arms."""

    arms: dict[tuple[str, str], ArmState] = field(default_factory=dict)
    linear: dict[tuple[str, str], LinearArm] = field(default_factory=dict)
    generation: int = 0  # bumped by a reset: local pull counts of older generations are dropped

    def get(self, context: str, arm: str) -> ArmState:
        return self.arms.get((context, arm), ArmState())

    def linear_arm(self, context: str, arm: str, d: int) -> LinearArm:
        current = self.linear.get((context, arm))
        if current is None:
            return LinearArm.fresh(d)
        if current.b.size != d:
            raise InvalidInputError(
                f"bandit arm {arm!r} learned over {current.b.size - 1} features, this request "
                f"has {d - 1}: the plan's features changed (reset the bandit)"
            )
        return current

    def rewarded(
        self, context: str, arm: str, reward: float, features: Sequence[float] | None
    ) -> BanditState:
        """A copy with one reward applied (and the linear model updated when `features`)."""
        draft = self.copy()
        draft.arms[(context, arm)] = draft.get(context, arm).rewarded(reward)
        if features is not None:
            x = with_bias(features)
            draft.linear[(context, arm)] = draft.linear_arm(context, arm, x.size).rewarded(
                x, reward
            )
        return draft

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "arms": [
                {"context": c, "arm": a, **s.__dict__} for (c, a), s in sorted(self.arms.items())
            ]
        }
        if self.generation:
            doc["generation"] = self.generation
        if self.linear:
            doc["linear"] = [
                {"context": c, "arm": a, "a": lin.a.ravel().tolist(), "b": lin.b.tolist()}
                for (c, a), lin in sorted(self.linear.items())
            ]
        return doc

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
        linear = {}
        for item in data.get("linear", ()):
            b = np.asarray(item["b"], dtype=np.float64)
            a = np.asarray(item["a"], dtype=np.float64).reshape(b.size, b.size)
            linear[(str(item["context"]), str(item["arm"]))] = LinearArm(a, b)
        return cls(arms, linear, int(data.get("generation", 0)))

    def copy(self) -> BanditState:
        return BanditState(dict(self.arms), dict(self.linear), self.generation)


@dataclass(frozen=True)
class Choice:
    """What a policy may use beyond the state: epsilon, LinUCB's alpha, the feature vector."""

    epsilon: float = 0.0
    exploration: float = 1.0
    features: Sequence[float] | None = None


@dataclass(frozen=True)
class BanditPolicy:
    """An entry of `BANDIT_POLICIES`: `pick(state, context, arms, choice, rng) -> arm index`;
    `contextual` policies need `choice.features` (and learn from them on reward)."""

    name: str
    pick: Callable[[BanditState, str, Sequence[str], Choice, np.random.Generator], int]
    contextual: bool = False


def _thompson(
    state: BanditState, context: str, arms: Sequence[str], c: Choice, rng: np.random.Generator
) -> int:
    draws = [rng.beta(s.alpha, s.beta) for s in (state.get(context, a) for a in arms)]
    return int(np.argmax(draws))


def _epsilon_greedy(
    state: BanditState, context: str, arms: Sequence[str], c: Choice, rng: np.random.Generator
) -> int:
    if rng.random() < c.epsilon:
        return int(rng.integers(len(arms)))
    return int(np.argmax([state.get(context, a).mean for a in arms]))


def _linucb(
    state: BanditState, context: str, arms: Sequence[str], c: Choice, rng: np.random.Generator
) -> int:
    x = with_bias(c.features or ())
    alpha = c.exploration if c.exploration > 0 else 1.0
    return int(np.argmax([state.linear_arm(context, a, x.size).score(x, alpha) for a in arms]))


BANDIT_POLICIES: Table[BanditPolicy] = Table("bandit policy")
"""Policy name -> BanditPolicy (the BanditPolicy enum members are built in)."""
for _builtin in (
    BanditPolicy("thompson", _thompson),
    BanditPolicy("epsilon_greedy", _epsilon_greedy),
    BanditPolicy("linucb", _linucb, contextual=True),
):
    BANDIT_POLICIES.register(_builtin.name, _builtin, builtin=True)


def normalise_policy(policy: int | str) -> str:
    """A registered policy name from a BanditPolicy enum value or a name."""
    if isinstance(policy, int):
        # BANDIT_POLICY_UNSPECIFIED (0) means Thompson sampling.
        names = {0: "thompson", 1: "thompson", 2: "epsilon_greedy", 3: "linucb"}
        if policy in names:
            return names[policy]
    else:
        name = policy.lower().removeprefix("bandit_policy_").replace("-", "_")
        if name in ("", "unspecified"):
            return "thompson"
        if name in BANDIT_POLICIES:
            return name
    raise InvalidInputError(
        f"unknown bandit policy {policy!r}; expected {BANDIT_POLICIES.expected()}"
    )


def choose(
    state: BanditState,
    context: str,
    arms: Sequence[str],
    policy: str,
    epsilon: float,
    rng: np.random.Generator,
    *,
    features: Sequence[float] | None = None,
    exploration: float = 1.0,
) -> str:
    """The arm to pull now (see the module docstring)."""
    if not arms:
        raise InvalidInputError("a bandit needs at least one arm")
    if not 0.0 <= epsilon <= 1.0:
        raise InvalidInputError(f"bandit epsilon must be in [0, 1], got {epsilon}")
    entry = BANDIT_POLICIES.get(policy)
    if entry.contextual and features is None:
        raise InvalidInputError(
            f"bandit policy {policy!r} is contextual: set feature_attributes or features_input"
        )
    choice = Choice(epsilon, exploration, features)
    return arms[entry.pick(state, context, list(arms), choice, rng)]
