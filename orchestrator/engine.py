"""The execution engine: runs a plan version for one request, transport-free.

Plans are compiled once per version (``compiled.py``): wiring, kinds, input specs and the
schedule are resolved there, never per request. When the steps form a chain (each depends on
the one before) they run inline in the request's own task, one after the other. Otherwise each
step becomes a task that first awaits the tasks of the steps it is wired to, so independent
steps run concurrently and a step starts as soon as its own inputs exist. Plan and step spans
are created only while ``meshserve.telemetry.tracing_enabled()``; otherwise the one code path
runs with ``NO_SPAN`` (no span, attribute dict or context attach). One deadline per request
(monotonic seconds) bounds every model and logic call. The first failing step fails the
request: its error (created once, where it failed) keeps its status code and gains the plan
and step in place (``MeshError.add_context``), so its message names plan, step, model and
replica, e.g. ``INVALID_ARGUMENT "plan 'p' step 'mlp' model 'mlp' replica 'r1': ..."``; the
other steps are cancelled.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from opentelemetry import trace

from meshserve.errors import DeadlineExceededError, InternalError, InvalidInputError, MeshError
from meshserve.logs import rate_limited
from meshserve.names import quote
from meshserve.orchestrator.caller import ModelCaller
from meshserve.orchestrator.compiled import CompiledPlan, StepPlan, compile_plan
from meshserve.orchestrator.learning_port import Learning, NullLearning
from meshserve.orchestrator.plans.validate import format_spec
from meshserve.orchestrator.programmatic import Handles, PlanContext, current_run
from meshserve.orchestrator.stats import StatsRecorder
from meshserve.orchestrator.steps.base import Outputs, RunContext, StepContext
from meshserve.orchestrator.traffic import TrafficTable
from meshserve.telemetry import NO_SPAN, tracing_enabled
from meshserve.v1 import plan_pb2

__all__ = ["Engine", "EngineConfig", "ExecuteCall", "ExecutionResult", "PlanSource"]

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

# Request ids for calls that bring none: 32 hex digits, unique per process start (random half)
# and per request (counter half); cheaper than a uuid4 per request.
_ID_PREFIX = uuid.uuid4().hex[:16]
_id_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


class PlanSource(Protocol):
    """Where the engine finds plans (the plan store, or a dict in tests)."""

    def get(self, name: str, version: int = 0) -> plan_pb2.Plan:
        """The plan version (0 = active); NotFoundError when it does not exist."""
        ...


@dataclass(frozen=True)
class EngineConfig:
    """Engine settings. `default_timeout_s` applies when a request brings no deadline;
    `python_modules` is the allow-list of python plan targets (None: any module, for
    in-process embedding; a server always sets it from its command line)."""

    default_timeout_s: float | None = 30.0
    max_background_tasks: int = 1024
    python_modules: frozenset[str] | None = None


@dataclass(frozen=True)
class ExecuteCall:
    """One request to run a plan."""

    plan: str
    inputs: Mapping[str, np.ndarray]
    request_id: str = ""
    plan_version: int = 0
    routing_key: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None


@dataclass(frozen=True)
class ExecutionResult:
    request_id: str
    plan: str
    plan_version: int
    outputs: dict[str, np.ndarray]
    decisions: dict[str, str]
    latency_ms: float
    trace_id: str = ""


class Engine:
    """Runs plans from a PlanSource through a ModelCaller (see module docstring)."""

    def __init__(
        self,
        caller: ModelCaller,
        plans: PlanSource,
        *,
        learning: Learning | None = None,
        traffic: TrafficTable | None = None,
        stats: StatsRecorder | None = None,
        config: EngineConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.caller = caller
        self.plans = plans
        self.learning: Learning = learning or NullLearning()
        self.traffic = traffic or TrafficTable()
        self.stats = stats or StatsRecorder()
        self.config = config or EngineConfig()
        self.clock = clock
        self.rng = rng or random.Random()
        self._compiled: dict[tuple[str, int, int], CompiledPlan] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.models_handles = Handles(self, "models")
        self.plans_handles = Handles(self, "plans")

    # ---- public API ------------------------------------------------------------------------
    async def execute(self, call: ExecuteCall) -> ExecutionResult:
        """Run `call.plan`; raises MeshError subclasses naming the failing step."""
        start = self.clock()
        request_id = call.request_id or new_request_id()
        timeout_s = call.timeout_s if call.timeout_s is not None else self.config.default_timeout_s
        compiled = self.compiled(call.plan, call.plan_version)
        run = RunContext(
            request_id=request_id,
            plan=compiled.name,
            routing_key=call.routing_key,
            attributes=call.attributes,
            deadline=None if timeout_s is None else start + timeout_s,
        )
        ok = False
        span_cm: AbstractContextManager[trace.Span | None] = (
            _tracer.start_as_current_span(
                f"plan {compiled.name}",
                attributes={
                    "meshserve.plan": compiled.name,
                    "meshserve.plan_version": compiled.version,
                    "meshserve.request_id": request_id,
                },
            )
            if tracing_enabled()
            else NO_SPAN
        )
        try:
            with span_cm as span:
                trace_id = _trace_id(trace.get_current_span())
                try:
                    outputs = await self._run(compiled, call.inputs, run)
                except MeshError as exc:
                    if span is not None:
                        span.set_status(trace.Status(trace.StatusCode.ERROR, exc.message))
                    raise
            ok = True
        finally:
            latency_ms = (self.clock() - start) * 1000
            self.stats.plan_done(compiled.name, latency_ms, ok)
        return ExecutionResult(
            request_id=request_id,
            plan=compiled.name,
            plan_version=compiled.version,
            outputs=outputs,
            decisions=dict(run.decisions),
            latency_ms=latency_ms,
            trace_id=trace_id,
        )

    def compiled(self, name: str, version: int = 0) -> CompiledPlan:
        """The compiled form of a plan version (cached by name, version and apply time)."""
        plan = self.plans.get(name, version)
        key = (plan.name, plan.version, plan.created_unix_ms)
        found = self._compiled.get(key)
        if found is None:
            found = compile_plan(
                plan, (self.models_handles, self.plans_handles), self.config.python_modules
            )
            if len(self._compiled) > 1024:
                self._compiled.clear()
            self._compiled[key] = found
        return found

    async def run_plan(
        self, name: str, inputs: Mapping[str, np.ndarray], run: RunContext
    ) -> Outputs:
        """Run another plan within the request `run` (same deadline, routing key, attributes)."""
        compiled = self.compiled(name)
        nested = RunContext(
            request_id=run.request_id,
            plan=compiled.name,
            routing_key=run.routing_key,
            attributes=run.attributes,
            deadline=run.deadline,
            decisions={},
            depth=run.depth + 1,
        )
        out = await self._run(compiled, inputs, nested)
        for step, branch in nested.decisions.items():
            run.decisions.setdefault(f"{compiled.name}/{step}", branch)
        return out

    def spawn_background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a detached task (shadow candidates); dropped when too many are pending."""
        if len(self._background) >= self.config.max_background_tasks:
            coro.close()
            log.warning("background task dropped: %d already pending", len(self._background))
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain_background(self, timeout_s: float = 5.0) -> None:
        """Wait for detached tasks (then cancel what is left)."""
        pending = set(self._background)
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout_s)
            for task in still:
                task.cancel()
            if still:
                await asyncio.gather(*still, return_exceptions=True)

    # ---- execution ---------------------------------------------------------------------------
    async def _run(
        self, compiled: CompiledPlan, inputs: Mapping[str, np.ndarray], run: RunContext
    ) -> Outputs:
        _check_inputs(compiled, inputs)
        if compiled.python is not None:
            return await self._run_python(compiled, inputs, run)
        values: dict[str, Outputs] = {}
        if compiled.chain:
            for sp in compiled.schedule:
                values[sp.name] = await self._run_step(compiled, sp, run, inputs, values)
        else:
            await self._run_graph(compiled, run, inputs, values)
        outputs: Outputs = {}
        for key, ref in compiled.outputs:
            source = inputs if ref.is_input else values[ref.source]
            if ref.name not in source:
                raise InvalidInputError(
                    f"plan output '{key}': '{ref}' was not produced (available: {sorted(source)})"
                )
            outputs[key] = source[ref.name]
        return outputs

    async def _run_graph(
        self,
        compiled: CompiledPlan,
        run: RunContext,
        inputs: Mapping[str, np.ndarray],
        values: dict[str, Outputs],
    ) -> None:
        """A task per step, each awaiting the steps it is wired to; the first failure wins."""
        tasks: dict[str, asyncio.Task[Outputs]] = {}  # in topological order

        async def run_step(sp: StepPlan) -> Outputs:
            for dep in sp.deps:
                await tasks[dep]
            out = await self._run_step(compiled, sp, run, inputs, values)
            values[sp.name] = out
            return out

        for sp in compiled.schedule:
            tasks[sp.name] = asyncio.create_task(run_step(sp), name=f"step {sp.name}")
        try:
            done, pending = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            for task in tasks.values():
                task.cancel()
            raise
        failed = [t for t in done if not t.cancelled() and t.exception() is not None]
        if failed:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            # The earliest step in topological order is the root cause (dependents re-raise it).
            order = {task: index for index, task in enumerate(tasks.values())}
            first = min(failed, key=order.__getitem__)
            exc = first.exception()
            assert exc is not None
            raise exc

    async def _run_step(
        self,
        compiled: CompiledPlan,
        sp: StepPlan,
        run: RunContext,
        inputs: Mapping[str, np.ndarray],
        values: Mapping[str, Outputs],
    ) -> Outputs:
        """Gather the step's inputs from the request and earlier steps, then run it."""
        step_inputs: dict[str, np.ndarray] = {}
        for key, ref in sp.wiring:
            source = inputs if ref.is_input else values[ref.source]
            if ref.name not in source:
                what = (
                    "the request has no input"
                    if ref.is_input
                    else f"step '{ref.source}' produced no output"
                )
                raise InvalidInputError(
                    f"step '{sp.name}' input '{key}': {what} '{ref.name}' "
                    f"(available: {sorted(source)})"
                )
            step_inputs[key] = source[ref.name]
        upstream = {dep: values[dep] for dep in sp.deps}
        ctx = StepContext(self, run, compiled, sp.step, upstream)
        span_cm: AbstractContextManager[trace.Span | None] = (
            _tracer.start_as_current_span(
                f"step {sp.name}",
                attributes={"meshserve.step": sp.name, "meshserve.step_kind": sp.kind},
            )
            if tracing_enabled()
            else NO_SPAN
        )
        started = self.clock()
        with span_cm as span:
            try:
                out = await self._execute_step(ctx, sp, step_inputs)
            except MeshError as exc:
                self.stats.step_done(compiled.name, sp.name, self.clock() - started, False)
                if span is not None:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, exc.message))
                raise
            self.stats.step_done(compiled.name, sp.name, self.clock() - started, True)
            if span is not None and sp.name in run.decisions:
                span.set_attribute("meshserve.branch", run.decisions[sp.name])
            return out

    async def _execute_step(
        self, ctx: StepContext, sp: StepPlan, inputs: dict[str, np.ndarray]
    ) -> Outputs:
        """The step's executor under the request deadline; errors name the step."""
        try:
            deadline = ctx.run.deadline
            if deadline is not None and deadline - self.clock() <= 0:
                raise DeadlineExceededError("the request deadline passed before it started")
            return await sp.execute(ctx, inputs)
        except MeshError as exc:
            exc.add_context(plan=ctx.run.plan, step=sp.name)
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            rate_limited(
                log, "step failed", "step %s of plan %s failed", sp.name, ctx.run.plan,
                level=logging.ERROR, exc_info=exc,
            )  # fmt: skip
            raise InternalError(f"internal error ({type(exc).__name__})").add_context(
                plan=ctx.run.plan, step=sp.name
            ) from exc

    async def _run_python(
        self, compiled: CompiledPlan, inputs: Mapping[str, np.ndarray], run: RunContext
    ) -> Outputs:
        ctx = PlanContext(
            models=self.models_handles,
            plans=self.plans_handles,
            attributes=run.attributes,
            routing_key=run.routing_key,
            request_id=run.request_id,
            deadline=run.deadline,
        )
        token = current_run.set(run)
        try:
            result = compiled.python(dict(inputs), ctx)
            if inspect.isawaitable(result):
                result = await result
        except MeshError as exc:
            exc.add_context(plan=compiled.name)
            raise
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            rate_limited(
                log, "python plan failed", "python plan %s failed", compiled.name,
                level=logging.ERROR, exc_info=exc,
            )  # fmt: skip
            raise InternalError(
                f"python plan '{compiled.name}' ({compiled.plan.python}) raised "
                f"{type(exc).__name__}: {quote(str(exc))}"
            ) from exc
        finally:
            current_run.reset(token)
        if not isinstance(result, Mapping):
            raise InvalidInputError(
                f"python plan '{compiled.name}' returned {type(result).__name__}; expected a dict "
                "of named outputs"
            )
        return {str(k): np.asarray(v) for k, v in result.items()}


def _check_inputs(compiled: CompiledPlan, inputs: Mapping[str, np.ndarray]) -> None:
    """Request inputs against the plan's declared inputs (names, dtype, shape)."""
    specs = compiled.inputs
    if not specs:
        return
    plan = compiled.plan
    if len(inputs) != len(specs) or any(name not in inputs for name in (s.name for s in specs)):
        declared = {s.name for s in specs}
        for name in inputs:
            if name not in declared:
                raise InvalidInputError(
                    f"plan '{plan.name}' has no input '{name}' (inputs: {sorted(declared)})"
                )
        for spec in specs:
            if spec.name not in inputs:
                raise InvalidInputError(
                    f"plan '{plan.name}' input '{spec.name}' ({format_spec(spec.spec)}) is missing"
                )
    for spec in specs:
        arr = inputs[spec.name]
        if not isinstance(arr, np.ndarray):
            arr = np.asarray(arr)
        dtype_ok = spec.dtype is not None and (
            arr.dtype == spec.dtype or arr.dtype.newbyteorder("=") == spec.dtype
        )
        shape = spec.shape
        shape_ok = not shape or (
            len(shape) == arr.ndim
            and all(d < 0 or d == a for d, a in zip(shape, arr.shape, strict=True))
        )
        if not (dtype_ok and shape_ok):
            raise InvalidInputError(
                f"plan '{plan.name}' input '{spec.name}': expects {format_spec(spec.spec)}, got "
                f"{arr.dtype.name} {list(arr.shape)}"
            )


def _trace_id(span: trace.Span) -> str:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
