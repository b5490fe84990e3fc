"""The engine's view of online learning: a small ``Learning`` protocol, the feedback values it
takes and returns, and a null implementation.

``meshserve.orchestrator.learning.LearningHub`` implements it (bandits, online learners, state in
Consul KV). Bandit steps call ``choose_arm``; Execute asks ``token_for`` for the response's
feedback token; the Feedback RPC (and any other feedback source) calls ``apply_feedback``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from meshserve.errors import InvalidInputError

__all__ = ["Feedback", "FeedbackOutcome", "Learning", "NullLearning"]


@dataclass(frozen=True)
class Feedback:
    """One piece of feedback: a reward in [0, 1] (bandits) or a class label (learners) for the
    request `request_id`, with the request's feedback token when the client has it."""

    request_id: str
    reward: float | None = None
    label: int | None = None
    token: bytes = b""

    def __post_init__(self) -> None:
        if not self.request_id:
            raise InvalidInputError("feedback needs the 'request_id' of the request it rates")
        if (self.reward is None) == (self.label is None):
            raise InvalidInputError("feedback needs exactly one of 'reward' or 'label'")
        if self.reward is not None and not (
            math.isfinite(self.reward) and 0.0 <= self.reward <= 1.0
        ):
            raise InvalidInputError(f"feedback reward {self.reward} must be in [0, 1]")

    @property
    def kind(self) -> str:
        """The kind of record it applies to: "bandit" (reward) or "learner" (label)."""
        return "bandit" if self.reward is not None else "learner"


@dataclass(frozen=True)
class FeedbackOutcome:
    """`applied`: steps/learners that took the feedback now; `already_applied`: those that had
    it already (nothing applied twice). Both are durable when this is returned."""

    request_id: str
    applied: tuple[str, ...] = ()
    already_applied: tuple[str, ...] = ()

    @property
    def duplicate(self) -> bool:
        return not self.applied and bool(self.already_applied)


class Learning(Protocol):
    """Chooses bandit arms and consumes feedback; safe to call concurrently."""

    async def choose_arm(
        self,
        *,
        plan: str,
        step: str,
        arms: Sequence[str],
        policy: str,
        epsilon: float,
        context: str,
        request_id: str,
        seed: int,
        features: Sequence[float] | None = None,
        exploration: float = 0.0,
        user: str = "",
    ) -> str:
        """The arm (one of `arms`) that serves this request; remembered for feedback.
        `features`: the request's feature vector for contextual policies (linucb); `user`: the
        user or group whose own statistics a personalised bandit uses."""
        ...

    def token_for(self, request_id: str) -> bytes:
        """The feedback token of `request_id` for its response (b"" when nothing to rate)."""
        ...

    async def apply_feedback(self, feedback: Feedback) -> FeedbackOutcome:
        """Apply `feedback` exactly once to whatever served its request (durable on return)."""
        ...


class NullLearning:
    """Used when no learning hub is configured: every call is refused with a clear message."""

    async def choose_arm(self, *, plan: str, step: str, **_: Any) -> str:
        raise InvalidInputError(
            f"step '{step}' of plan '{plan}' is a bandit but no learning is configured "
            "on this orchestrator"
        )

    def token_for(self, request_id: str) -> bytes:
        return b""

    async def apply_feedback(self, feedback: Feedback) -> FeedbackOutcome:
        raise InvalidInputError("no learning configured: feedback cannot be applied")
