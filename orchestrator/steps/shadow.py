"""``shadow`` step: answer from the primary; mirror to the candidate in the background.

The candidate starts together with the primary (so it adds no latency) as a detached task; the
response never waits for it and never sees its errors. When both finish, agreement is recorded
per row (argmax per row of `compare_output`, or the labels themselves for 1-D outputs): the
stats count compared rows and rows that agree, plus the candidate's latency and errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError, MeshError
from meshserve.logs import rate_limited
from meshserve.orchestrator.plans.validate import PlanCheck, StepOutputs
from meshserve.orchestrator.steps.base import Outputs, StepContext, run_target
from meshserve.orchestrator.steps.branches import check_branches, parse_branch
from meshserve.orchestrator.steps.registry import StepKind
from meshserve.v1 import plan_pb2

__all__ = ["ShadowKind", "agreement", "candidate_label"]

log = logging.getLogger(__name__)


def agreement(primary: np.ndarray, candidate: np.ndarray) -> tuple[int, int]:
    """(rows where both give the same class, rows compared); argmax per row for 2-D outputs."""
    a, b = np.asarray(primary), np.asarray(candidate)
    rows = int(a.shape[0]) if a.ndim else 1
    if a.shape != b.shape:
        return 0, rows
    if a.ndim >= 2:
        a, b = a.argmax(axis=-1), b.argmax(axis=-1)
    same = (a == b).reshape(rows, -1).all(axis=1) if a.ndim else np.asarray([a == b])
    return int(same.sum()), rows


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
            services.stats.shadow_primary(
                ctx.run.plan,
                ctx.step.name,
                (services.clock() - start) * 1000,
                candidate_label(shadow.candidate),
            )
        primary_done.set_result(out)
        return out


async def _candidate(
    ctx: StepContext, inputs: dict[str, np.ndarray], primary_done: asyncio.Future[Outputs]
) -> None:
    services = ctx.services
    candidate = candidate_label(ctx.step.shadow.candidate)
    start = services.clock()
    try:
        out = await run_target(ctx, ctx.step.shadow.candidate, inputs)
    except (MeshError, Exception) as exc:
        latency_ms = (services.clock() - start) * 1000
        rate_limited(
            log, "shadow candidate failed", "shadow candidate of step %s failed: %s",
            ctx.step.name, exc, level=logging.INFO,
        )  # fmt: skip
        services.stats.shadow_candidate(
            ctx.run.plan, ctx.step.name, latency_ms, False, candidate=candidate
        )
        return
    latency_ms = (services.clock() - start) * 1000
    agreed = compared = 0
    try:
        primary = await primary_done
    except asyncio.CancelledError:
        primary = None
    if primary is not None:
        name = _compare_name(ctx, primary, out)
        if name:
            agreed, compared = agreement(primary[name], out[name])
    services.stats.shadow_candidate(
        ctx.run.plan,
        ctx.step.name,
        latency_ms,
        True,
        agreed=agreed,
        compared=compared,
        candidate=candidate,
    )
