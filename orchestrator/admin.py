"""The Admin service's transport-free core: plans, traffic, endpoints, faults, stats, traces."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from meshserve import telemetry
from meshserve.errors import InvalidInputError, MeshError, NotFoundError
from meshserve.limits import DEFAULT_LIMITS, LimitExceededError, Limits, check_string
from meshserve.names import check_name, quote
from meshserve.orchestrator.caller import EndpointSnapshot, FaultSpec, ModelCaller
from meshserve.orchestrator.engine import Engine
from meshserve.orchestrator.plans.parse import parse_plan_text
from meshserve.orchestrator.plans.validate import ValidationContext, validate_plan_outputs
from meshserve.orchestrator.store import PlanInfo, PlanStore
from meshserve.orchestrator.traffic import TrafficPolicy
from meshserve.orchestrator.typed_plans import TypedPlan, stamp_plan
from meshserve.telemetry import SpanRecord, TraceSummary
from meshserve.v1 import plan_pb2, tensor_pb2

__all__ = ["AdminCore", "AppliedPlan", "ModelView"]

log = logging.getLogger(__name__)

MAX_FAULT_S = 3600.0
ListServices = Callable[[], Awaitable[dict[str, list[str]]]]


@dataclass(frozen=True)
class ModelView:
    name: str
    versions: tuple[str, ...]
    endpoints: tuple[EndpointSnapshot, ...]


@dataclass(frozen=True)
class AppliedPlan:
    """What ApplyPlan / RollbackPlan did: the version stored (latest for a dry run) and its
    typed contract."""

    name: str
    version: int
    typed: TypedPlan


def _logic_exists(name: str) -> bool:
    try:
        from meshserve.orchestrator.logic import get_logic

        get_logic(name)
    except (ImportError, MeshError):
        return False
    return True


class AdminCore:
    """What the Admin RPCs do, without protobuf transport concerns."""

    def __init__(
        self,
        store: PlanStore,
        engine: Engine,
        caller: ModelCaller,
        *,
        list_services: ListServices | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.store = store
        self.engine = engine
        self.caller = caller
        self.limits = limits
        self._list_services = list_services

    # ---- plans ------------------------------------------------------------------------------
    async def validate(self, plan: plan_pb2.Plan) -> dict[str, tensor_pb2.TensorSpec | None]:
        """Validate `plan` (limits first; a python target's module must be allow-listed and is
        imported off the event loop); returns the spec of each plan output (None: unknown)."""
        ctx = ValidationContext(
            metadata=self.caller.metadata,
            plan_exists=self.store.exists,
            logic_exists=_logic_exists,
            limits=self.limits,
        )
        _, outputs = await validate_plan_outputs(plan, ctx)
        if plan.python:
            from meshserve.orchestrator.compiled import load_python_target

            await asyncio.to_thread(
                load_python_target, plan.python, self.engine.config.python_modules
            )
        return outputs

    def _active(self, name: str) -> plan_pb2.Plan | None:
        return self.store.get(name) if self.store.exists(name) else None

    async def apply_plan(
        self,
        plan: plan_pb2.Plan | None = None,
        text: str = "",
        *,
        expected_version: int = 0,
        dry_run: bool = False,
        breaking_change: bool = False,
    ) -> AppliedPlan:
        """Validate and store a plan with its typed contract (`stamp_plan`: an incompatible one
        needs `breaking_change`). Dry runs store nothing and report the latest version.

        Control-plane work never blocks the data plane: plan text is parsed in a worker thread,
        everything before the store write is bounded by the limits and by
        ``plan_parse_timeout_s`` as a whole (LimitExceededError past it)."""
        limits = self.limits
        try:
            async with asyncio.timeout(limits.plan_parse_timeout_s):
                if plan is None:
                    if not text.strip():
                        raise InvalidInputError("ApplyPlan needs 'plan' or 'plan_text'")
                    plan = await asyncio.to_thread(parse_plan_text, text, limits)
                outputs = await self.validate(plan)
        except TimeoutError:
            raise LimitExceededError(
                "ApplyPlan: parsing and validating the plan exceeds the limit "
                f"plan_parse_timeout_s={limits.plan_parse_timeout_s}"
            ) from None
        stored = plan_pb2.Plan()
        stored.CopyFrom(plan)
        active = self._active(plan.name)
        typed = stamp_plan(stored, outputs, active, breaking_change=breaking_change)
        if dry_run:
            return AppliedPlan(plan.name, max(active.version, 0) if active else 0, typed)
        version = await self.store.apply(stored, expected_version)
        log.info(
            "plan %s applied as version %d (typed %s)", plan.name, version, typed.contract.service
        )
        return AppliedPlan(plan.name, version, typed)

    def get_plan(self, name: str, version: int = 0) -> plan_pb2.Plan:
        return self.store.get(name, version)

    def list_plans(self) -> list[PlanInfo]:
        return self.store.infos()

    async def delete_plan(self, name: str) -> int:
        return await self.store.delete(name)

    async def rollback_plan(self, name: str, to_version: int) -> AppliedPlan:
        """Store version `to_version`'s content as a new active version. Its typed contract is
        stamped against the active one; an incompatible one is accepted (the operator asked for
        that version) and moves the schema number up."""
        result: list[TypedPlan] = []

        def restamp(plan: plan_pb2.Plan) -> None:
            specs = {s.name: s for s in plan.typed.outputs} if plan.HasField("typed") else {}
            result.append(stamp_plan(plan, specs, self._active(name), breaking_change=True))

        version = await self.store.rollback(name, to_version, prepare=restamp)
        return AppliedPlan(name, version, result[0])

    # ---- models, traffic, endpoints ------------------------------------------------------------
    async def list_models(self, model: str = "", *, discover: bool = True) -> list[ModelView]:
        """Models with versions and endpoints; `discover` also asks the registry for models the
        caller does not track yet (and starts tracking them)."""
        if not discover:
            out = []
            for name in sorted(self.caller.models()):
                if model and name != model:
                    continue
                endpoints = tuple(self.caller.snapshot(name))
                seen = tuple(sorted({e.version for e in endpoints if e.version}))
                out.append(ModelView(name, seen, endpoints))
            return out
        versions: dict[str, set[str]] = {}
        if self._list_services is not None:
            with contextlib.suppress(MeshError):
                for name, tags in (await self._list_services()).items():
                    if "meshserve-model" in tags:
                        versions[name] = {t[8:] for t in tags if t.startswith("version=")}
        for name in self.caller.models():
            versions.setdefault(name, set())
        if model:
            if model not in versions:
                versions[model] = set()
            versions = {model: versions[model]}
        tracked = set(self.caller.models())
        untracked = [n for n in versions if n not in tracked]
        if untracked:  # start tracking so endpoints show up (best effort)
            await asyncio.gather(*(self._touch(n) for n in untracked), return_exceptions=True)
        out = []
        for name in sorted(versions):
            endpoints = tuple(self.caller.snapshot(name))
            known = versions[name] | {e.version for e in endpoints if e.version}
            out.append(ModelView(name, tuple(sorted(known)), endpoints))
        return out

    async def _touch(self, model: str) -> None:
        with contextlib.suppress(MeshError, TimeoutError):
            await asyncio.wait_for(self.caller.metadata(model), 2.0)

    async def set_traffic(self, policy: TrafficPolicy) -> None:
        await self.store.set_traffic(policy)

    def traffic_policies(self) -> list[TrafficPolicy]:
        return self.store.traffic.policies()

    def drain(self, model: str, instance_id: str, drain: bool) -> int:
        if not model or not instance_id:
            raise InvalidInputError("DrainEndpoint needs 'model' and 'instance_id'")
        check_name("model", model)
        check_string("instance_id", instance_id, self.limits, "max_string_chars")
        return self.caller.drain(model, instance_id, drain)

    # ---- faults -----------------------------------------------------------------------------
    def inject_fault(self, fault: FaultSpec) -> str:
        if not fault.model:
            raise InvalidInputError("InjectFault: 'model' is required")
        check_name("model", fault.model)
        check_string("instance_id", fault.instance_id, self.limits, "max_string_chars")
        if not 0 < fault.duration_s <= MAX_FAULT_S:
            raise InvalidInputError(
                f"InjectFault: duration_ms must be in (0, {int(MAX_FAULT_S * 1000)}], "
                f"got {int(fault.duration_s * 1000)}"
            )
        for name, rate in (("delay_rate", fault.delay_rate), ("abort_rate", fault.abort_rate)):
            if not 0.0 <= rate <= 1.0:
                raise InvalidInputError(f"InjectFault: {name} {rate} is outside [0, 1]")
        if fault.delay_ms == 0 and fault.abort_rate == 0:
            raise InvalidInputError("InjectFault: set delay_ms and/or abort_rate")
        return self.caller.inject_fault(fault)

    def clear_faults(self, model: str = "") -> int:
        return self.caller.clear_faults(model)

    # ---- traces -----------------------------------------------------------------------------
    def trace_spans(self, trace_id: str) -> list[SpanRecord]:
        """Spans of a recent trace kept by this orchestrator (NotFoundError otherwise)."""
        spans = telemetry.get_trace(trace_id)
        if not spans:
            raise NotFoundError(f"trace {quote(trace_id)} is not in this orchestrator's buffer")
        return spans

    def slowest_traces(self, n: int) -> list[TraceSummary]:
        return telemetry.slowest(n or 10)
