"""Step executors, one module per kind of plan node (a closed set)."""

from __future__ import annotations

from meshserve.orchestrator.steps import bandit, ensemble, logic, model, select, shadow, split
from meshserve.orchestrator.steps.base import StepExecutor

__all__ = ["EXECUTORS"]

EXECUTORS: dict[str, StepExecutor] = {
    "model": model.execute,
    "logic": logic.execute,
    "ensemble": ensemble.execute,
    "select": select.execute,
    "split": split.execute,
    "shadow": shadow.execute,
    "bandit": bandit.execute,
}
