"""Business logic of the fraud example: the decision rule on the ensemble's score.

Registered on import (``meshserve orchestrator serve --logic examples.fraud.logic`` or
``import examples.fraud.logic``). `decide` combines the models' probability of risky behaviour
clusters with the amount and the user's risk tier from the database:

    score = clip(sum(p[risky]) + amount_weight * (amount >= high_amount) + tier_weight * tier
                 + external_weight * external_risk, 0, 1)

``external_risk`` is optional: the production plan wires it from an external risk service
(``http.json``, examples/fraud/risk_service.py); without it the term is 0.
    decision = 2 (block) if score >= block_at, 1 (review) if score >= review_at, else 0 (approve)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.logic import LogicContext, logic

__all__ = ["APPROVE", "BLOCK", "REVIEW", "decide"]

APPROVE, REVIEW, BLOCK = 0, 1, 2


def fraud_score(
    probabilities: np.ndarray,
    amount: np.ndarray,
    risk_tier: np.ndarray,
    *,
    risky_classes: list[int],
    high_amount: float,
    amount_weight: float,
    tier_weight: float,
    external_risk: np.ndarray | None = None,
    external_weight: float = 0.0,
) -> np.ndarray:
    """The rule above, vectorised over rows (pure, for tests and notebooks)."""
    model = probabilities[:, risky_classes].sum(axis=1)
    bump = amount_weight * (amount.astype(np.float64) >= high_amount)
    score = model + bump + tier_weight * risk_tier.astype(np.float64)
    if external_risk is not None:
        score = score + external_weight * external_risk.astype(np.float64)
    return np.clip(score, 0.0, 1.0)


@logic("fraud.decide")
async def decide(inputs: dict[str, Any], ctx: LogicContext) -> dict[str, Any]:
    """Outputs ``score`` (float32 [N]) and ``decision`` (int64 [N]: 0/1/2 approve/review/block)."""
    for name in ("probabilities", "amount", "risk_tier"):
        if name not in inputs:
            raise InvalidInputError(f"fraud.decide needs input {name!r}; wired: {sorted(inputs)}")
    probabilities = np.asarray(inputs["probabilities"], dtype=np.float64)
    amount = np.asarray(inputs["amount"]).ravel()
    tier = np.asarray(inputs["risk_tier"]).ravel()
    external = inputs.get("external_risk")
    external = None if external is None else np.asarray(external, dtype=np.float64).ravel()
    if external is not None and external.shape[0] != amount.shape[0]:
        raise InvalidInputError(
            f"fraud.decide: external_risk has {external.shape[0]} rows, amount {amount.shape[0]}"
        )
    if not probabilities.shape[0] == amount.shape[0] == tier.shape[0]:
        raise InvalidInputError(
            f"fraud.decide: rows differ: probabilities {probabilities.shape[0]}, amount "
            f"{amount.shape[0]}, risk_tier {tier.shape[0]}; expected one row per transaction"
        )
    score = fraud_score(
        probabilities,
        amount,
        tier,
        risky_classes=[int(c) for c in ctx.param("risky_classes", [3, 8])],
        high_amount=float(ctx.param("high_amount", 1000.0)),
        amount_weight=float(ctx.param("amount_weight", 0.3)),
        tier_weight=float(ctx.param("tier_weight", 0.1)),
        external_risk=external,
        external_weight=float(ctx.param("external_weight", 0.2)),
    )
    block_at = float(ctx.param("block_at", 0.8))
    review_at = float(ctx.param("review_at", 0.5))
    decision = np.where(score >= block_at, BLOCK, np.where(score >= review_at, REVIEW, APPROVE))
    return {"score": score.astype(np.float32), "decision": decision.astype(np.int64)}
