"""What the hub shows of what it learned: Admin stats messages and the learned-state digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from meshserve.messages import fill
from meshserve.orchestrator.learning.bandits import BanditState
from meshserve.orchestrator.learning.online import LearnerSlot
from meshserve.v1 import admin_pb2

__all__ = ["bandit_stats", "learned_digest", "learner_stats"]


def learned_digest(
    bandits: Mapping[tuple[str, str], BanditState], learners: Mapping[str, LearnerSlot]
) -> str:
    """sha256 of the learned state (posteriors, reward sums, weights, versions; not the local
    pull counters): equal on every orchestrator that loaded the same KV state."""
    arms = {
        f"{plan}/{step}": [
            sorted(
                [c, a, s.updates, s.reward_sum, s.alpha, s.beta] for (c, a), s in state.arms.items()
            ),
            sorted(
                [c, a, lin.a.ravel().tolist(), lin.b.tolist()]
                for (c, a), lin in state.linear.items()
            ),
        ]
        for (plan, step), state in bandits.items()
    }
    weights = {
        name: [slot.model.to_json(), slot.deployed_version, slot.next_version]
        for name, slot in learners.items()
    }
    text = json.dumps({"bandits": arms, "learners": weights}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def bandit_stats(bandits: Mapping[tuple[str, str], BanditState]) -> list[admin_pb2.BanditStats]:
    out = []
    for (plan, step), state in sorted(bandits.items()):
        arms = [
            fill(admin_pb2.ArmStats, s, arm=arm, context=context)
            for (context, arm), s in sorted(state.arms.items())
        ]
        out.append(admin_pb2.BanditStats(plan=plan, step=step, arms=arms))
    return out


def learner_stats(learners: Mapping[str, LearnerSlot]) -> list[admin_pb2.LearnerStats]:
    return [
        admin_pb2.LearnerStats(
            name=name,
            updates=slot.model.updates,
            deployed_version=slot.deployed_version,
            holdout_accuracy=slot.deployed_accuracy,
        )
        for name, slot in sorted(learners.items())
    ]
