"""Per-model version traffic policies and the stable hash used by sticky routing."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from meshserve.errors import InvalidInputError
from meshserve.names import check_name

__all__ = ["TrafficPolicy", "TrafficTable", "pick_weighted", "stable_unit"]


def stable_unit(*parts: str) -> float:
    """A uniform number in [0, 1) that depends only on `parts` (sha256), for sticky choices."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / float(1 << 64)


def pick_weighted(names: list[str], weights: list[float], u: float) -> str:
    """The name whose cumulative-weight interval contains u * total (u in [0, 1))."""
    total = sum(weights)
    if total <= 0:
        raise InvalidInputError(f"weights {weights} of {names} must sum to more than 0")
    point = u * total
    acc = 0.0
    for name, weight in zip(names, weights, strict=True):
        acc += weight
        if point < acc:
            return name
    return next(n for n, w in reversed(list(zip(names, weights, strict=True))) if w > 0)


@dataclass(frozen=True)
class TrafficPolicy:
    """Weights over a model's version tags; model steps without a pinned version follow it."""

    model: str
    version_weights: Mapping[str, float] = field(default_factory=dict)
    sticky: bool = False

    def validate(self) -> None:
        check_name("traffic policy model", self.model)
        if not self.version_weights:
            raise InvalidInputError(
                f"traffic policy for '{self.model}': version_weights must name at least one version"
            )
        for version, weight in self.version_weights.items():
            if not version or not math.isfinite(weight) or weight < 0:
                raise InvalidInputError(
                    f"traffic policy for '{self.model}': version '{version}' weight {weight} must "
                    "be a non-empty version with a finite weight >= 0"
                )
        if sum(self.version_weights.values()) <= 0:
            raise InvalidInputError(
                f"traffic policy for '{self.model}': weights must sum to more than 0"
            )


class TrafficTable:
    """The current policies (kept in sync with Consul KV by the plan store)."""

    def __init__(self, rng: Callable[[], float] = random.random) -> None:
        self._policies: dict[str, TrafficPolicy] = {}
        self._rng = rng

    def set(self, policy: TrafficPolicy) -> None:
        self._policies[policy.model] = policy

    def remove(self, model: str) -> None:
        self._policies.pop(model, None)

    def replace_all(self, policies: Mapping[str, TrafficPolicy]) -> None:
        self._policies = dict(policies)

    def policies(self) -> list[TrafficPolicy]:
        return [self._policies[k] for k in sorted(self._policies)]

    def choose_version(self, model: str, routing_key: str = "") -> str:
        """Version for a call to `model` ("" when it has no policy: any version)."""
        policy = self._policies.get(model)
        if policy is None or not policy.version_weights:
            return ""
        names = sorted(policy.version_weights)
        weights = [policy.version_weights[n] for n in names]
        if policy.sticky and routing_key:
            u = stable_unit("traffic", model, routing_key)
        else:
            u = self._rng()
        return pick_weighted(names, weights, u)
