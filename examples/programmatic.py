"""Programmatic composition: the twin of examples/plans/pipeline.yaml written as plain Python.

Serve it with (from the repository root, so ``examples`` is importable)::

    meshserve orchestrator serve --python-plan digits-pipeline-py=examples.programmatic:pipeline

or as a class: ``examples.programmatic:Pipeline``. Both give exactly the declarative plan's
outputs: the same models are called through the same ModelCaller.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Ensemble", "Pipeline", "pipeline", "validated_pipeline"]


async def pipeline(inputs: dict[str, np.ndarray], ctx: Any) -> dict[str, np.ndarray]:
    """scaler -> mlp, as a function using the request's handles."""
    scaled = await ctx.models["scaler"].infer(inputs["input"])
    out = await ctx.models["mlp"].infer(scaled["scaled"])
    return {"label": out["label"], "probabilities": out["probabilities"]}


async def validated_pipeline(inputs: dict[str, np.ndarray], ctx: Any) -> dict[str, np.ndarray]:
    """The pipeline behind the ``validate`` logic block, called as a declarative step would."""
    fields = {"input": {"kind": "float", "shape": [-1, 64], "min": 0, "max": 16, "finite": True}}
    checked = await ctx.logic["validate"].call(inputs, step="check", fields=fields)
    return await pipeline(checked, ctx)


class Pipeline:
    """The same pipeline as a class that keeps its handles (built once, like a deployment)."""

    def __init__(self, models: Any, plans: Any) -> None:
        self.scaler = models["scaler"]
        self.mlp = models["mlp"]

    async def __call__(self, inputs: dict[str, np.ndarray], ctx: Any) -> dict[str, np.ndarray]:
        scaled = await self.scaler.infer(inputs["input"])
        out = await self.mlp.infer(scaled["scaled"])
        return {"label": out["label"], "probabilities": out["probabilities"]}


class Ensemble:
    """scaler -> three classifiers concurrently -> majority vote (ties to the smallest label)."""

    def __init__(self, models: Any, plans: Any) -> None:
        self.models = models

    async def __call__(self, inputs: dict[str, np.ndarray], ctx: Any) -> dict[str, np.ndarray]:
        import asyncio

        scaled = (await self.models["scaler"].infer(inputs["input"]))["scaled"]
        outs = await asyncio.gather(
            *(self.models[name].infer(scaled) for name in ("logreg", "mlp", "forest"))
        )
        labels = np.stack([o["label"] for o in outs])
        votes = np.stack([(labels == k).sum(axis=0) for k in range(10)])
        return {"label": votes.argmax(axis=0).astype(np.int64)}
