"""Online learning in plans: bandits choosing branches and learners updated from feedback.

`LearningHub` is what the engine uses (bandit steps, the Feedback RPC, Admin stats); the
``learner.observe`` logic step records a request's features for a learner.
"""

from __future__ import annotations

from meshserve.orchestrator.learning import observe as _observe  # noqa: F401 (registers the step)
from meshserve.orchestrator.learning.hub import HubConfig, LearningHub, active_hub
from meshserve.orchestrator.learning.learner import SoftmaxRegression, export_onnx
from meshserve.orchestrator.learning.online import Deployer, LearnerConfig

__all__ = [
    "Deployer",
    "HubConfig",
    "LearnerConfig",
    "LearningHub",
    "SoftmaxRegression",
    "active_hub",
    "export_onnx",
]
