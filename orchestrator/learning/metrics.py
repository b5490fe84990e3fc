"""Prometheus metrics of online learning (process-wide, default registry; names and labels
are specs in meshserve/telemetry/catalog.py; labels never name a user)."""

from __future__ import annotations

from meshserve.telemetry import catalog
from meshserve.telemetry.metrics import build

__all__ = [
    "BANDIT_REWARDS",
    "BANDIT_REWARD_SUM",
    "FEEDBACK_OUTCOMES",
    "LEARNER_HOLDOUT_ACCURACY",
    "LEARNER_VERSION",
]

BANDIT_REWARDS = build(catalog.BANDIT_REWARDS)
BANDIT_REWARD_SUM = build(catalog.BANDIT_REWARD_SUM)
FEEDBACK_OUTCOMES = build(catalog.FEEDBACK_OUTCOMES)
LEARNER_VERSION = build(catalog.LEARNER_VERSION)
LEARNER_HOLDOUT_ACCURACY = build(catalog.LEARNER_HOLDOUT_ACCURACY)
