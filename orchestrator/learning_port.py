"""The engine's view of online learning: a small ``Learning`` protocol and a null implementation.

``meshserve.orchestrator.learning.LearningHub`` implements it (bandits, online learners, state in
Consul KV). Bandit steps call ``choose_arm``; the Feedback RPC calls ``feedback``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from meshserve.errors import InvalidInputError

__all__ = ["Learning", "NullLearning"]


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
    ) -> str:
        """The arm (one of `arms`) that serves this request; remembered for feedback."""
        ...

    async def feedback(
        self, request_id: str, *, reward: float | None = None, label: int | None = None
    ) -> list[str]:
        """Apply feedback to whatever served `request_id`; returns the steps it applied to."""
        ...


class NullLearning:
    """Used when no learning hub is configured: every call is refused with a clear message."""

    async def choose_arm(self, *, plan: str, step: str, **_: Any) -> str:
        raise InvalidInputError(
            f"step '{step}' of plan '{plan}' is a bandit but no learning is configured "
            "on this orchestrator"
        )

    async def feedback(
        self, request_id: str, *, reward: float | None = None, label: int | None = None
    ) -> list[str]:
        raise InvalidInputError("no learning configured: feedback cannot be applied")
