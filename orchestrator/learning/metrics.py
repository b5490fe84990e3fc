"""Prometheus metrics of online learning (process-wide, default registry; labels never name a
user: per-user bandits count under their arm)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = [
    "BANDIT_REWARDS",
    "BANDIT_REWARD_SUM",
    "FEEDBACK_OUTCOMES",
    "LEARNER_HOLDOUT_ACCURACY",
    "LEARNER_VERSION",
]

BANDIT_REWARDS = Counter(
    "meshserve_bandit_rewards_total", "Rewards this orchestrator applied, per bandit arm",
    ["plan", "step", "arm"],
)  # fmt: skip
BANDIT_REWARD_SUM = Counter(
    "meshserve_bandit_reward_sum_total", "Sum of the rewards this orchestrator applied, per arm",
    ["plan", "step", "arm"],
)  # fmt: skip
FEEDBACK_OUTCOMES = Counter(
    "meshserve_feedback_total", "Feedback per step: applied now, or already applied (duplicate)",
    ["outcome"],
)  # fmt: skip
LEARNER_VERSION = Gauge(
    "meshserve_learner_deployed_version", "Number of the deployed version (v<N>) of a learner",
    ["learner"],
)  # fmt: skip
LEARNER_HOLDOUT_ACCURACY = Gauge(
    "meshserve_learner_holdout_accuracy", "Holdout accuracy of a learner's deployed version",
    ["learner"],
)  # fmt: skip
