"""``shadow`` step: answer from the primary; mirror to the candidate in the background.

The candidate starts together with the primary (so it adds no latency) as a detached task; the
response never waits for it and never sees its errors. When both finish, `compare_output` is
compared row by row with the step's ``comparison`` (label equality, probability distance or
regression tolerance: orchestrator/comparison.py). Results are recorded per candidate
(``model@version`` for a pinned model, so two versions of one model are told apart): compared
and agreeing rows, both latencies, candidate errors and a bounded sample of disagreeing rows
(orchestrator/shadows.py: Prometheus metrics, Admin.GetStats, Admin.ListShadowDisagreements,
durable in Consul KV).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError, MeshError
from meshserve.logs import rate_limited
from meshserve.orchestrator.comparison import comparison_of
from meshserve.orchestrator.plans.validate import PlanCheck, StepOutputs
from meshserve.orchestrator.shadows import ShadowKey
from meshserve.orchestrator.steps.base import Outputs, StepContext, run_target
from meshserve.orchestrator.steps.branches import check_branches, parse_branch
from meshserve.orchestrator.steps.registry import StepKind, enum_form
from meshserve.v1 import plan_pb2

__all__ = ["ShadowKind", "candidate_label"]

log = logging.getLogger(__name__)


def _compare_name(ctx: StepContext, primary: Outputs, candidate: Outputs) -> str | None:
    name = ctx.step.shadow.compare_output
    if name:
        return name if name in primary and name in candidate else None
    common = sorted(set(primary) & set(candidate))
    for preferred in ("label", "probabilities"):
        if preferred in common:
            return preferred
    return common[0] if common else None


def candidate_label(branch: plan_pb2.Branch) -> str:
    """The candidate's name in metrics and stats: ``model@version`` for a pinned model (so two
    versions of one model are told apart), else the model, function, plan or branch name."""
    target = branch.target
    kind = target.WhichOneof("kind")
    if kind == "model":
        m = target.model
        return f"{m.model}@{m.version}" if m.version else m.model
    if kind == "logic":
        return target.logic.function
    if kind == "plan":
        return target.plan
    return branch.name


class ShadowKind(StepKind):
    """``shadow: {primary: {model: a}, candidate: {model: b}, sample_rate: 0.5}``; the step's
    outputs are the primary's."""

    name = "shadow"

    def parse(self, body: Any, where: str) -> Any:
        if not isinstance(body, dict):
            return body
        body = dict(body)
        if isinstance(body.get("comparison"), str):
            body["comparison"] = enum_form("SHADOW_COMPARISON_", body["comparison"])
        for key in ("primary", "candidate"):
            if key in body:
                body[key] = parse_branch(body[key])
        return body

    async def validate(self, step: plan_pb2.Step, check: PlanCheck) -> StepOutputs:
        sh = step.shadow
        where = f"step '{step.name}' shadow"
        if not sh.HasField("primary") or not sh.HasField("candidate"):
            raise InvalidInputError(f"{where}: needs both 'primary' and 'candidate'")
        if not 0.0 <= sh.sample_rate <= 1.0:
            raise InvalidInputError(f"{where} sample_rate: {sh.sample_rate} is outside [0, 1]")
        if sh.comparison not in plan_pb2.ShadowComparison.values():
            known = ", ".join(n.removeprefix("SHADOW_COMPARISON_").lower()
                              for n in plan_pb2.ShadowComparison.keys()[1:])  # fmt: skip
            raise InvalidInputError(f"{where} comparison: {sh.comparison} is not one of {known}")
        if not (math.isfinite(sh.tolerance) and sh.tolerance >= 0.0):
            raise InvalidInputError(f"{where} tolerance: {sh.tolerance} must be a number >= 0")
        await check_branches(check, step, [sh.candidate], where)
        return await check_branches(check, step, [sh.primary], where)

    async def execute(self, ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
        shadow = ctx.step.shadow
        services = ctx.services
        rate = shadow.sample_rate or 1.0
        mirror = rate >= 1.0 or services.rng.random() < rate
        primary_done: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        if mirror:
            services.spawn_background(_candidate(ctx, dict(inputs), primary_done))
        start = services.clock()
        try:
            out = await run_target(ctx, shadow.primary, inputs)
        except BaseException:
            primary_done.cancel()
            raise
        if mirror:
            services.stats.shadow_primary(_key(ctx), (services.clock() - start) * 1000)
        primary_done.set_result(out)
        return out


def _key(ctx: StepContext) -> ShadowKey:
    return (ctx.run.plan, ctx.step.name, candidate_label(ctx.step.shadow.candidate))


async def _candidate(
    ctx: StepContext, inputs: dict[str, np.ndarray], primary_done: asyncio.Future[Outputs]
) -> None:
    services = ctx.services
    key = _key(ctx)
    start = services.clock()
    try:
        out = await run_target(ctx, ctx.step.shadow.candidate, inputs)
    except (MeshError, Exception) as exc:
        rate_limited(
            log, "shadow candidate failed", "shadow candidate of step %s failed: %s",
            ctx.step.name, exc, level=logging.INFO,
        )  # fmt: skip
        services.stats.shadow_candidate_failed(key, (services.clock() - start) * 1000)
        return
    latency_ms = (services.clock() - start) * 1000
    try:
        primary = await primary_done
    except asyncio.CancelledError:
        primary = None
    comparison = comparison_of(ctx.step.shadow)
    rows, outputs = None, None
    name = _compare_name(ctx, primary, out) if primary is not None else None
    if primary is not None and name:
        outputs = (primary[name], out[name])
        rows = comparison.compare(*outputs)
    services.stats.shadow_candidate(key, latency_ms, comparison, rows, ctx.run.request_id, outputs)
