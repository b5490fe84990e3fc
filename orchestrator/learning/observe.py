"""The ``learner.observe`` logic step: record a request's features for an online learner.

Params: ``learner`` (name), ``features`` (input name, default "features") and any LearnerConfig
field (``model``, ``n_features``, ``n_classes``, ``lr``, ``export_every``, ``holdout_path``,
``min_accuracy``...), used when the learner does not exist yet. The step passes its inputs through
unchanged, so it can sit in front of the model it trains.
"""

from __future__ import annotations

from typing import Any

from meshserve.errors import InvalidInputError
from meshserve.names import check_name
from meshserve.orchestrator.learning.hub import active_hub
from meshserve.orchestrator.logic import LogicContext, logic

__all__ = ["observe"]


@logic("learner.observe")
async def observe(inputs: dict[str, Any], ctx: LogicContext) -> dict[str, Any]:
    """Remember ``inputs[params.features]`` under the request id for learner ``params.learner``."""
    name = check_name(f"step {ctx.step!r} learner", str(ctx.param("learner")))
    feature_input = str(ctx.param("features", "features"))
    if feature_input not in inputs:
        raise InvalidInputError(
            f"step {ctx.step!r}: learner {name!r} reads input {feature_input!r}, which is not "
            f"wired; inputs: {sorted(inputs)}"
        )
    await active_hub().observe(name, ctx.request_id, inputs[feature_input], ctx.params)
    return dict(inputs)
