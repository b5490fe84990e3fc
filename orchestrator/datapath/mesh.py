"""``MeshCaller``: the production ``ModelCaller`` (Consul discovery, load balancing, streaming
batching, retries, outlier ejection, fault injection).

Per model it keeps an ``EndpointWatcher`` (started on first call), a ``ModelRouter`` fed by it,
and a ``MicroBatcher`` in front of the router when batching is on for that model.

- Watchers follow use: a metadata lookup of an untracked model (plan validation, dry runs,
  rejected plans) is one-shot and leaves no watcher; after ``retain(models)`` (the models of the
  active plans) every other model is released - its watcher stopped at once, its router and
  batcher closed once no call to it is in progress.
- A failed micro-batch does not fail every caller in it: on INVALID_ARGUMENT (one bad row) its
  callers are re-sent one call each, so only the bad one fails; on a replica fault that the
  router could not retry away, the same, for one retry-budget token.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from opentelemetry import trace

from meshserve.clock import LOOP_TIMERS, Timers
from meshserve.errors import (
    DeadlineExceededError,
    InvalidInputError,
    MeshError,
    NotFoundError,
    UnavailableError,
)
from meshserve.names import quote
from meshserve.orchestrator.caller import CallerCounters, EndpointSnapshot, FaultSpec
from meshserve.orchestrator.datapath.attempt import is_replica_fault
from meshserve.orchestrator.datapath.batching import (
    BatchEntry,
    MicroBatcher,
    build_request,
    entry_key,
    split_response,
)
from meshserve.orchestrator.datapath.config import DataPathConfig
from meshserve.orchestrator.datapath.faults import FaultInjector
from meshserve.orchestrator.datapath.metrics import BATCH_ROWS, CALL_LATENCY, CALLS
from meshserve.orchestrator.datapath.policy import make_policy
from meshserve.orchestrator.datapath.router import ModelRouter, RouterCounters
from meshserve.registry.config import ConsulConfig
from meshserve.registry.discovery import EndpointWatcher
from meshserve.telemetry import EMPTY_CONTEXT, tracing_enabled
from meshserve.v1 import model_pb2

__all__ = ["MeshCaller"]

log = logging.getLogger(__name__)


@dataclass
class _Model:
    router: ModelRouter
    watcher: EndpointWatcher | None
    batcher: MicroBatcher | None
    # Metric children resolved once per model: no label lookups per call.
    latency: Any = None
    batch_rows: Any = None
    active: int = 0  # calls in progress (queued, in flight or retrying)
    idle: asyncio.Event | None = None  # set when a released model's last call ends
    outcomes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        model = self.router.model
        self.latency = CALL_LATENCY.labels(model)
        self.batch_rows = BATCH_ROWS.labels(model)
        self.outcomes = {"ok": CALLS.labels(model, "ok"), "error": CALLS.labels(model, "error")}

    def outcome(self, name: str) -> Any:
        child = self.outcomes.get(name)
        if child is None:
            child = self.outcomes[name] = CALLS.labels(self.router.model, name)
        return child


class MeshCaller:
    """Calls models by Consul service name over their passing replicas.

    Safe to use concurrently from one event loop. `clock`, `timers` (on that clock) and `rng`
    are injectable for tests.
    """

    def __init__(
        self,
        config: DataPathConfig | None = None,
        consul: ConsulConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        timers: Timers = LOOP_TIMERS,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or DataPathConfig()
        self._consul = consul or ConsulConfig.from_env()
        self._clock = clock
        self._timers = timers
        self._rng = rng or random.Random()
        self._faults = FaultInjector(clock, random.Random(self._rng.random()))
        self._counters = RouterCounters()
        self._models: dict[str, _Model] = {}
        self._starting: dict[str, asyncio.Task[_Model]] = {}
        self._retained: frozenset[str] | None = None  # None: keep every model (no plans told)
        self._releasing: dict[asyncio.Task[None], _Model] = {}
        self._closed = False

    # ----- model state -----------------------------------------------------------------------
    async def _model(self, model: str) -> _Model:
        state = self._models.get(model)
        if state is not None:
            return state
        if self._closed:
            raise UnavailableError("model caller is closed")
        task = self._starting.get(model)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._start_model(model))
            self._starting[model] = task
        return await asyncio.shield(task)

    async def _start_model(self, model: str) -> _Model:
        try:
            state = await self._open(model)
        finally:
            self._starting.pop(model, None)
        self._models[model] = state
        return state

    async def _open(self, model: str) -> _Model:
        """A model's state with its watcher started and its router fed (not registered)."""
        if not model:
            raise InvalidInputError("model name is empty (expected a Consul service name)")
        watcher = EndpointWatcher(
            self._consul,
            model,
            self.config.service_tag or None,
            start_timeout_s=self.config.discovery_timeout_s,
        )
        state = self._new_state(model, watcher)
        router = state.router
        watcher.subscribe(router.update_endpoints)
        try:
            await watcher.start()
        except BaseException:
            await watcher.stop()
            raise
        router.update_endpoints(watcher.endpoints())
        return state

    async def _close_state(self, state: _Model) -> None:
        if state.watcher is not None:
            await state.watcher.stop()
        if state.batcher is not None:
            await state.batcher.close()
        await state.router.close()

    async def _release(self, state: _Model) -> None:
        """Stop a released model's watcher now; close the rest once its calls are done."""
        if state.watcher is not None:
            await state.watcher.stop()
            state.watcher = None
        if state.active:
            state.idle = asyncio.Event()
            await state.idle.wait()
        await self._close_state(state)

    def _release_done(self, task: asyncio.Task[None]) -> None:
        self._releasing.pop(task, None)

    def retain(self, models: Collection[str]) -> None:
        """Release every tracked model not in `models` (see the module docstring); models routed
        to static endpoints are kept."""
        self._retained = frozenset(models)
        for name, state in list(self._models.items()):
            if name in self._retained or state.watcher is None:
                continue
            del self._models[name]
            log.info("model %s: no active plan uses it any more, released", name)
            task = asyncio.get_running_loop().create_task(self._release(state))
            self._releasing[task] = state
            task.add_done_callback(self._release_done)

    def _new_state(self, model: str, watcher: EndpointWatcher | None) -> _Model:
        router = ModelRouter(
            model,
            self.config,
            make_policy(*self.config.policy_for(model), rng=random.Random(self._rng.random())),
            self._faults,
            self._counters,
            self._clock,
            random.Random(self._rng.random()),
        )
        state = _Model(router, watcher, None)
        batch = self.config.batch_for(model)
        if batch.enabled:
            state.batcher = MicroBatcher(
                model,
                batch,
                lambda entries: self._send_batch(state, entries),
                lambda: max(1, batch.eager_batches_per_replica * len(router.ready())),
                router.batch_max_hint,
                self._clock,
                self._timers,
            )
        return state

    def add_static_endpoints(self, model: str, endpoints: Sequence[object]) -> None:
        """Route `model` to fixed endpoints without Consul (benchmarks, embedded use).

        Each endpoint needs instance_id, version, meta and target (like registry.Endpoint).
        """
        state = self._models.get(model)
        if state is None:
            state = self._new_state(model, None)
            self._models[model] = state
        state.router.update_endpoints(endpoints)  # type: ignore[arg-type]

    # ----- ModelCaller -----------------------------------------------------------------------
    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: str = "",
        routing_key: str = "",
        timeout_s: float | None = None,
        output_names: Sequence[str] = (),
    ) -> dict[str, np.ndarray]:
        """Run `model` on `inputs` (see ModelCaller.infer). `routing_key` reaches the picker
        policy (``CallInfo.routing_key``) when the call is not batched: a micro-batch mixes
        callers and carries none."""
        start = self._clock()
        self._counters.calls_total += 1
        if timeout_s is not None and timeout_s <= 0:
            raise DeadlineExceededError(f"model '{model}': timeout_s={timeout_s} (expected > 0)")
        deadline = start + (timeout_s if timeout_s is not None else self.config.timeout_for(model))
        state = self._models.get(model)
        outcome = "error"
        counted: _Model | None = None
        try:
            if state is None:
                state = await self._model(model)
            counted = state
            state.active += 1
            arrays = {
                name: arr if isinstance(arr, np.ndarray) else np.asarray(arr)
                for name, arr in inputs.items()
            }
            if not arrays:
                raise InvalidInputError(f"model '{model}': no inputs given (expected named arrays)")
            names = tuple(output_names)
            key, rows = entry_key(arrays, names, version)
            parent = None
            if tracing_enabled(EMPTY_CONTEXT):  # an SDK is installed (sampling aside)
                span_ctx = trace.get_current_span().get_span_context()
                parent = span_ctx if span_ctx.is_valid else None
            entry = BatchEntry(
                inputs=arrays,
                rows=rows,
                key=key,
                deadline=deadline,
                future=asyncio.get_running_loop().create_future(),
                output_names=names,
                version=version,
                parent=parent,
            )
            if state.batcher is not None:
                result = await state.batcher.submit(entry)
            else:
                await self._send_batch(state, [entry], routing_key)
                result = entry.future.result()
            outcome = "ok"
            return result
        except MeshError as exc:
            outcome = exc.code.name.lower()
            raise
        finally:
            if counted is not None:
                counted.active -= 1
                if counted.idle is not None and not counted.active:
                    counted.idle.set()
            elapsed_s = self._clock() - start
            if state is not None:
                state.outcome(outcome).inc()
                state.latency.observe(elapsed_s)
            else:
                CALLS.labels(model, outcome).inc()
                CALL_LATENCY.labels(model).observe(elapsed_s)

    async def _send_batch(
        self, state: _Model, entries: list[BatchEntry], routing_key: str = ""
    ) -> None:
        """Send one micro-batch through the router and settle every entry's future."""
        live = [e for e in entries if not e.future.done()]
        if not live:
            return
        model = state.router.model
        rows = sum(e.rows for e in live)
        state.batch_rows.observe(rows)
        acc = self._counters.batch_rows.setdefault(model, [0, 0])
        acc[0] += rows
        acc[1] += 1
        request = build_request(live)
        try:
            response = await state.router.call(
                request,
                deadline=max(e.deadline for e in live),
                version=live[0].version,
                routing_key=routing_key,
                # Each caller's own span: a batch may be flushed outside any caller's context.
                callers=[e.parent for e in live],
            )
            results = split_response(model, response, live)
        except MeshError as exc:
            if len(live) > 1 and self._resend_alone(state, exc):
                await asyncio.gather(*(self._send_batch(state, [e]) for e in live))
                return
            for entry in live:  # one error per caller: each adds its own plan and step
                if not entry.future.done():
                    entry.future.set_exception(exc if len(live) == 1 else exc.copy())
            return
        for entry, result in zip(live, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(result)

    def _resend_alone(self, state: _Model, exc: MeshError) -> bool:
        """Re-send a failed batch's callers one call each? (see the module docstring)"""
        if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
            return True
        return is_replica_fault(exc) and state.router.budget.try_retry()

    async def metadata(self, model: str, version: str = "") -> model_pb2.ModelMetadata:
        """GetMetadata of one ready replica. An untracked model (and not one of the retained
        models) is looked up once: its watcher is stopped before this returns."""
        state = self._models.get(model)
        if (
            state is not None
            or model in self._starting
            or (self._retained is not None and model in self._retained)
        ):
            return await self._metadata_of(await self._model(model), version)
        if self._closed:
            raise UnavailableError("model caller is closed")
        state = await self._open(model)
        try:
            return await self._metadata_of(state, version)
        finally:
            await self._close_state(state)

    async def _metadata_of(self, state: _Model, version: str) -> model_pb2.ModelMetadata:
        model = state.router.model
        replicas = state.router.ready(version)
        if not replicas:
            raise NotFoundError(
                f"model '{model}'"
                + (f" version '{version}'" if version else "")
                + " has no ready replica in Consul"
            )
        last: MeshError | None = None
        for replica in replicas:
            try:
                return await replica.get_metadata(timeout_s=self.config.discovery_timeout_s)
            except MeshError as err:
                last = err.add_context(model=model, replica=replica.instance_id)
        assert last is not None
        raise last

    def models(self) -> Sequence[str]:
        return sorted(self._models)

    def snapshot(self, model: str = "") -> list[EndpointSnapshot]:
        out = []
        for name in sorted(self._models):
            if model and name != model:
                continue
            for replica in self._models[name].router.replicas():
                out.append(replica.snapshot(self._faults.faulted(name, replica.instance_id)))
        return out

    def drain(self, model: str, instance_id: str, drain: bool = True) -> int:
        state = self._models.get(model)
        in_flight = state.router.drain(instance_id, drain) if state else -1
        if in_flight < 0:
            raise NotFoundError(
                f"model {quote(model)} has no tracked endpoint {quote(instance_id)} "
                f"(known: {[s.instance_id for s in self.snapshot(model)]})"
            )
        return in_flight

    def inject_fault(self, fault: FaultSpec) -> str:
        return self._faults.inject(fault)

    def clear_faults(self, model: str = "") -> int:
        return self._faults.clear(model)

    def counters(self) -> CallerCounters:
        c = self._counters
        return CallerCounters(
            retries_total=c.retries_total,
            hedges_total=c.hedges_total,
            ejections_total=c.ejections_total,
            no_endpoint_failures_total=c.no_endpoint_failures_total,
            attempts_total=c.attempts_total,
            calls_total=c.calls_total,
            batch_sizes={m: calls / batches for m, (calls, batches) in c.batch_rows.items()},
        )

    async def close(self) -> None:
        self._closed = True
        for task in list(self._starting.values()):
            task.cancel()
        models, self._models = self._models, {}
        for state in models.values():
            await self._close_state(state)
        releasing, self._releasing = self._releasing, {}
        for release in releasing:
            release.cancel()
        await asyncio.gather(*releasing, return_exceptions=True)
        for state in releasing.values():  # released models still waiting for their last call
            await self._close_state(state)
