"""The router of one model: live replica set, picking, retries, hedging, ejection, draining.

- The replica set follows the registry (``update_endpoints``). An endpoint that disappears is
  marked removed and keeps serving the requests it has in flight; its channel is closed only
  when the last one finishes (never cut mid-request).
- Each call has one deadline. An attempt gets the remaining time, capped by the per-attempt
  timeout (max(floor, k x p99) of the model's latency history, ``latency.LatencyWindow``)
  while a retry could still follow it; the last possible attempt gets all that remains.
- A failed attempt is retried on a replica this call has not tried yet, as
  ``attempt.RetryPolicy`` allows (retryable codes, a broken stream, an attempt timeout;
  INTERNAL/UNKNOWN once), within ``max_attempts`` and the retry budget, after a jittered backoff
  that honours the server's retry pushback and never runs past the deadline.
- Hedging (``hedge.Hedge``): after the hedging delay (configured, or the p95) a second attempt
  goes to another untried replica, for a token of the hedge budget; first good answer wins, the
  other is cancelled. The timer is armed only when a hedge is possible.
- Pushback: a replica that answered RESOURCE_EXHAUSTED with `retry_pushback_ms` takes no attempt
  until it passes; any RESOURCE_EXHAUSTED keeps retries and hedges away from it for
  max(pushback, overload penalty) and first attempts while another replica can take them. When
  every ready replica holds a pushback, the call fails fast with RESOURCE_EXHAUSTED carrying it.
- Replica faults (UNAVAILABLE/INTERNAL/UNKNOWN, broken stream, attempt timeout) count toward
  outlier ejection; a fast RESOURCE_EXHAUSTED records a latency penalty (not a fast success).
- No available replica: fail fast with UnavailableError (counted), never queue.
- Strategies are passed in: a picker policy (``policy.POLICIES``) chooses among the candidates
  and sees the call (``CallInfo``); each replica owns its transport (``transport.TRANSPORTS``),
  wrapped in fault injection (``faults.FaultInjectingTransport``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanContext

from meshserve.errors import DeadlineExceededError, MeshError, OverloadedError, UnavailableError
from meshserve.orchestrator.datapath.attempt import RetryPolicy, is_replica_fault
from meshserve.orchestrator.datapath.budget import RetryBudget
from meshserve.orchestrator.datapath.config import DataPathConfig
from meshserve.orchestrator.datapath.faults import FaultInjector
from meshserve.orchestrator.datapath.hedge import Hedge
from meshserve.orchestrator.datapath.latency import LatencyWindow
from meshserve.orchestrator.datapath.metrics import (
    ATTEMPTS,
    EJECTIONS,
    HEDGES,
    NO_ENDPOINT,
    READY_REPLICAS,
    RETRIES,
    RETRY_BUDGET,
    SERVER_BATCH_ROWS,
)
from meshserve.orchestrator.datapath.policy import CallInfo, PickerPolicy
from meshserve.orchestrator.datapath.replica import EndpointInfo, Replica
from meshserve.orchestrator.datapath.spans import NO_METADATA as _NO_METADATA
from meshserve.orchestrator.datapath.spans import ClientSpans
from meshserve.telemetry import EMPTY_CONTEXT, tracing_enabled
from meshserve.v1 import model_pb2

__all__ = ["ModelRouter", "ReplicaFactory", "RouterCounters"]

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)


@dataclass
class RouterCounters:
    """Plain counts kept per caller instance (metrics.py has the process-wide ones)."""

    attempts_total: int = 0
    retries_total: int = 0
    hedges_total: int = 0
    ejections_total: int = 0
    no_endpoint_failures_total: int = 0
    calls_total: int = 0
    batch_rows: dict[str, list[int]] = field(default_factory=dict)  # model -> [rows, batches]


ReplicaFactory = Callable[
    [str, EndpointInfo, DataPathConfig, Callable[[], float], FaultInjector], Replica
]

_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()


def _copy(request: model_pb2.InferRequest) -> model_pb2.InferRequest:
    copy = model_pb2.InferRequest()
    copy.CopyFrom(request)
    return copy


class ModelRouter:
    """Routes the calls of one model over its replicas."""

    def __init__(
        self,
        model: str,
        config: DataPathConfig,
        policy: PickerPolicy,
        faults: FaultInjector,
        counters: RouterCounters,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        replica_factory: ReplicaFactory = Replica,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.model = model
        self._tracer = tracer or _tracer
        self._own_tracer = tracer is not None  # a given tracer always records (tests)
        self._new_replica = replica_factory
        self._config = config
        self._policy = policy
        self._faults = faults
        self._counters = counters
        self._clock = clock
        self._rng = rng or random.Random()
        retry = config.retry
        self.budget = RetryBudget(
            retry.budget_ratio, retry.budget_min_per_s, retry.budget_max_tokens, clock
        )
        self._retry = RetryPolicy(model, retry, self.budget, clock, self._rng)
        self._replicas: dict[str, Replica] = {}
        self._batch_max: int | None = None
        self._closing: set[asyncio.Task[Any]] = set()  # replicas closing, hedges finishing
        hedge = config.hedge
        self.hedge_budget = RetryBudget(
            hedge.budget_ratio, hedge.budget_min_per_s, hedge.budget_max_tokens, clock
        )
        self._hedging = hedge.enabled
        self._max_attempts = retry.max_attempts
        self._latency = LatencyWindow(config.latency_window_samples, config.latency_min_samples)
        # Derived from the latency history once it is warm (inf: no cap / no hedge yet).
        self._attempt_cap_s = math.inf
        self._hedge_delay_s = (
            hedge.delay_ms / 1000.0 if hedge.enabled and hedge.delay_ms else math.inf
        )
        self._hedges = HEDGES.labels(model)
        self._ejections = EJECTIONS.labels(model)
        self._attempts = ATTEMPTS.labels(model)
        self._server_rows = SERVER_BATCH_ROWS.labels(model)
        NO_ENDPOINT.labels(model)  # a series at 0 from the start, not only after a failure
        # Read on the scrape thread: read-only views of loop-owned state.
        RETRY_BUDGET.labels(model).set_function(self.budget.peek)
        READY_REPLICAS.labels(model).set_function(self._passing_count)

    def _passing_count(self) -> int:
        """Replicas neither draining nor ejected (read-only, safe from another thread)."""
        return sum(1 for r in list(self._replicas.values()) if r.state == "passing")

    # ----- replica set -----------------------------------------------------------------------
    def update_endpoints(self, endpoints: Sequence[EndpointInfo]) -> None:
        """Make the replica set follow the registry's passing endpoints."""
        seen = set()
        for ep in endpoints:
            seen.add(ep.instance_id)
            current = self._replicas.get(ep.instance_id)
            if current is not None and current.endpoint.target == ep.target:
                current.removed = False
                current.endpoint = ep
                continue
            if current is not None:
                self._retire(current)
            self._replicas[ep.instance_id] = self._new_replica(
                self.model, ep, self._config, self._clock, self._faults
            )
            log.info("model %s: replica %s at %s added", self.model, ep.instance_id, ep.target)
        for rid, replica in list(self._replicas.items()):
            if rid not in seen and not replica.removed:
                log.info(
                    "model %s: replica %s left the registry (%d in flight, draining)",
                    self.model, rid, replica.in_flight,
                )  # fmt: skip
                replica.removed = True
                self._maybe_close(replica)
        self._batch_max = self._min_batch_max()

    def _retire(self, replica: Replica) -> None:
        replica.removed = True
        self._replicas.pop(replica.instance_id, None)
        if replica.in_flight == 0:
            self._close_soon(replica)
        else:
            # Closed by _maybe_close once its last request finishes.
            self._replicas[f"{replica.instance_id}#retired{id(replica)}"] = replica

    def _maybe_close(self, replica: Replica) -> None:
        if replica.removed and replica.in_flight == 0:
            for key, value in list(self._replicas.items()):
                if value is replica:
                    del self._replicas[key]
            self._close_soon(replica)

    def _close_soon(self, replica: Replica) -> None:
        task = asyncio.get_running_loop().create_task(replica.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def replicas(self) -> list[Replica]:
        return list(self._replicas.values())

    def ready(self, version: str = "") -> list[Replica]:
        return [
            r
            for r in self._replicas.values()
            if r.available() and (not version or r.endpoint.version == version)
        ]

    def batch_max_hint(self) -> int | None:
        """Smallest batch_max the replicas advertise (None when none does); kept up to date by
        ``update_endpoints``, the only place where endpoints and `removed` change."""
        return self._batch_max

    def _min_batch_max(self) -> int | None:
        values = []
        for r in self._replicas.values():
            raw = r.endpoint.meta.get("batch_max", "")
            if raw.isdigit() and int(raw) > 0 and not r.removed:
                values.append(int(raw))
        return min(values) if values else None

    def drain(self, instance_id: str, drain: bool = True) -> int:
        replica = self._replicas.get(instance_id)
        if replica is None:
            return -1
        replica.draining = drain
        return replica.in_flight

    # ----- calls -----------------------------------------------------------------------------
    async def call(
        self,
        request: model_pb2.InferRequest,
        *,
        deadline: float,
        version: str = "",
        routing_key: str = "",
        callers: Sequence[SpanContext | None] = (),
    ) -> model_pb2.InferResponse:
        """Send `request` to a replica, retrying elsewhere as policy allows; raises MeshError.

        `callers`: the span of each caller whose rows `request` carries, in order (None: the
        current span). While tracing, every attempt records one CLIENT span per sampled caller,
        in that caller's trace, and the request carries those spans' traceparents, so each
        caller's trace holds its own share of every attempt (see ``_attempt``)."""
        call = CallInfo(self.model, version, routing_key)
        attempt = 0
        reason = ""
        last: MeshError | None = None
        once_spent = False
        self.budget.record_attempt()
        if self._hedging:
            self.hedge_budget.record_attempt()
        while True:
            now = self._clock()
            remaining = deadline - now
            if remaining <= 0:
                raise DeadlineExceededError(
                    f"model '{self.model}': deadline passed after {attempt} attempt(s)"
                    + (f" (last: {last.code.name}: {last.detail})" if last else "")
                )
            candidates = self._candidates(version, call.tried, now, attempt > 0)
            if not candidates:
                if last is not None:
                    raise last
                raise self._no_endpoint(version, now)
            attempt += 1
            call.attempt = attempt
            call.now = now
            replica = self._policy.pick(candidates, call)
            self._count_attempt(replica, attempt)
            timeout = self._attempt_timeout(remaining, attempt, len(candidates))
            hedge: Hedge | None = None
            if (
                self._hedge_delay_s < timeout
                and len(candidates) > 1
                and attempt < self._max_attempts
                and self.hedge_budget.tokens >= 1.0
            ):
                hedge = Hedge(
                    self._hedge_delay_s,
                    functools.partial(
                        self._start_hedge, request, call, replica, deadline, attempt, callers
                    ),
                )
            try:
                primary = self._attempt(
                    replica, request, timeout, timeout < remaining, attempt, reason, callers
                )
                return await (primary if hedge is None else hedge.run(primary))
            except MeshError as err:
                last = err
                call.tried = call.tried.union((replica.instance_id,))
                if hedge is not None and hedge.replica_id:
                    call.tried = call.tried.union((hedge.replica_id,))
                    attempt += 1
                delay = self._retry.delay(err, attempt, deadline, once_spent)
                if delay is None:
                    raise err from None
                once_spent = once_spent or err.code in self._retry.once_codes
                reason = err.reason
                self._counters.retries_total += 1
                RETRIES.labels(self.model, reason).inc()
                if delay > 0:
                    await asyncio.sleep(delay)

    def _candidates(
        self, version: str, tried: frozenset[str], now: float, retry: bool
    ) -> list[Replica]:
        """Replicas this attempt may go to: available, of `version`, not tried by the call, not
        holding a pushback. An explicit pushback (retry_pushback_ms) holds every attempt; any
        RESOURCE_EXHAUSTED holds retries and hedges, and first attempts while another replica
        can take them."""
        out: list[Replica] = []
        overloaded: list[Replica] | None = None  # allocated only when a replica is
        for r in self._replicas.values():
            if not r.available() or (version and r.endpoint.version != version):
                continue
            if (tried and r.instance_id in tried) or r.pushback_until > now:
                continue
            if r.overloaded_until > now:
                if not retry:
                    overloaded = overloaded or []
                    overloaded.append(r)
                continue
            out.append(r)
        return out or overloaded or out

    def _count_attempt(self, replica: Replica, attempt: int) -> None:
        self._counters.attempts_total += 1
        self._attempts.inc()
        if attempt > 1:
            replica.retries_total += 1

    def _attempt_timeout(self, remaining: float, attempt: int, candidates: int) -> float:
        """The attempt's time: the latency-derived cap while a retry could follow a timeout
        (another candidate, attempts and a budget token left), else the remaining deadline."""
        cap = self._attempt_cap_s
        if (
            cap >= remaining
            or candidates < 2
            or attempt >= self._max_attempts
            or self.budget.tokens < 1.0
        ):
            return remaining
        return cap

    def _start_hedge(
        self,
        request: model_pb2.InferRequest,
        call: CallInfo,
        primary: Replica,
        deadline: float,
        attempt: int,
        callers: Sequence[SpanContext | None],
    ) -> tuple[str, asyncio.Task[model_pb2.InferResponse]] | None:
        """The hedge of `attempt` (sent to `primary`) as a task, if one may still be sent."""
        now = self._clock()
        remaining = deadline - now
        tried = call.tried.union((primary.instance_id,))
        candidates = self._candidates(call.version, tried, now, True)
        if remaining <= 0 or not candidates or not self.hedge_budget.try_retry():
            return None
        call.attempt, call.now = attempt + 1, now
        replica = self._policy.pick(candidates, call)
        self._count_attempt(replica, attempt + 1)
        self._counters.hedges_total += 1
        self._hedges.inc()
        timeout = self._attempt_timeout(remaining, attempt + 1, len(candidates))
        task = asyncio.get_running_loop().create_task(
            self._attempt(
                replica, request, timeout, timeout < remaining, attempt + 1, "hedge", callers
            )
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return replica.instance_id, task

    async def _attempt(
        self,
        replica: Replica,
        request: model_pb2.InferRequest,
        timeout_s: float,
        capped: bool,
        attempt: int,
        reason: str,
        callers: Sequence[SpanContext | None],
    ) -> model_pb2.InferResponse:
        """One attempt on `replica` (in CLIENT spans when spans are wanted), with its latency,
        health and batch-size bookkeeping. With tracing off it costs one no-op ``with``.
        `capped`: the timeout is the latency-derived attempt timeout, not the call's deadline."""
        scope: AbstractContextManager[ClientSpans | None] = _NO_SPAN
        if self._own_tracer or tracing_enabled(EMPTY_CONTEXT):  # the router's one tracing check
            if attempt > 1:  # a retry or hedge: the first attempt's request may still be queued
                request = _copy(request)
            scope = ClientSpans(
                self._tracer, replica, self.model, attempt, reason, callers, request
            )
        with scope as span:
            metadata = _NO_METADATA if span is None else span.metadata
            start = self._clock()
            try:
                resp = await replica.infer(request, timeout_s=timeout_s, metadata=metadata)
            except MeshError as err:
                if capped and err.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    err = DeadlineExceededError(
                        f"no answer within the attempt timeout ({timeout_s * 1000.0:.0f} ms, "
                        "derived from the model's p99)",
                        reason="attempt_timeout",
                    )
                self._on_failure(replica, err, start)
                if span is not None:
                    span.failed(err)
                raise err.add_context(model=self.model, replica=replica.instance_id) from None
            except asyncio.CancelledError:  # a lost hedge race, or the caller gave up
                replica.record_latency((self._clock() - start) * 1000.0)
                replica.outlier.on_abandon()
                raise
            finally:
                self._maybe_close(replica)
            elapsed_ms = (self._clock() - start) * 1000.0
            replica.record_latency(elapsed_ms)
            if self._latency.record(elapsed_ms):
                self._derive_timers()
            replica.outlier.on_success()
            if resp.stats.batch_size:
                self._server_rows.observe(resp.stats.batch_size)
            return resp

    def _derive_timers(self) -> None:
        """Attempt timeout and hedging delay from the latency history (inf when off)."""
        at, hedge, window = self._config.attempt_timeout, self._config.hedge, self._latency
        if at.enabled:
            self._attempt_cap_s = max(at.floor_ms, at.p99_multiplier * window.p99_ms) / 1000.0
        if hedge.enabled and not hedge.delay_ms:
            self._hedge_delay_s = max(hedge.min_delay_ms, window.p95_ms) / 1000.0

    def _on_failure(self, replica: Replica, err: MeshError, start: float) -> None:
        now = self._clock()
        elapsed_ms = (now - start) * 1000.0
        code = err.code
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            penalty_ms = self._config.ejection.overload_penalty_ms
            replica.record_latency(max(elapsed_ms, penalty_ms))
            pushback_ms = err.retry_pushback_ms
            if pushback_ms is not None and pushback_ms > 0:
                replica.pushback_until = now + pushback_ms / 1000.0
            replica.overloaded_until = now + max(pushback_ms or 0, penalty_ms) / 1000.0
            return
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            replica.record_latency(elapsed_ms)
            if err.reason != "attempt_timeout":
                return  # the call's own deadline passed: says nothing about the replica
        elif not is_replica_fault(err):
            return  # the request's fault (INVALID_ARGUMENT...), not the replica's
        if replica.outlier.on_failure(may_eject=self._may_eject()):
            self._counters.ejections_total += 1
            self._ejections.inc()
            log.warning(
                "model %s: replica %s ejected for %.1fs after %d consecutive failures (%s)",
                self.model, replica.instance_id,
                replica.outlier.ejected_until - self._clock(),
                replica.outlier.consecutive_failures, err.reason,
            )  # fmt: skip

    def _may_eject(self) -> bool:
        """Below the model's ejection cap? Replicas holding a pushback count as out, so
        ejection and pushback together never leave a model without a replica to try."""
        now = self._clock()
        live = [r for r in self._replicas.values() if not r.removed]
        out = sum(1 for r in live if r.outlier.is_ejected or r.pushback_until > now)
        return out + 1 <= self._config.ejection.max_ejected_fraction * len(live)

    def _no_endpoint(self, version: str, now: float) -> MeshError:
        held = [r.pushback_until - now for r in self.ready(version) if r.pushback_until > now]
        if held:  # every ready replica pushed back: fail fast with the shortest pushback
            wait_ms = max(1, math.ceil(round(min(held) * 1000.0, 3)))
            return OverloadedError(
                f"model '{self.model}': every ready replica pushed back (retry in {wait_ms} ms)",
                retry_pushback_ms=wait_ms,
            )
        self._counters.no_endpoint_failures_total += 1
        NO_ENDPOINT.labels(self.model).inc()
        known = {r.instance_id: r.state for r in self._replicas.values()}
        want = f" version '{version}'" if version else ""
        return UnavailableError(
            f"model '{self.model}'{want}: no ready replica (known: {known or 'none'}); "
            "expected at least one passing, non-ejected replica in Consul"
        )

    async def close(self) -> None:
        for gauge in (RETRY_BUDGET, READY_REPLICAS):
            with contextlib.suppress(KeyError):
                gauge.remove(self.model)
        replicas = list(self._replicas.values())
        self._replicas.clear()
        await asyncio.gather(*(r.close() for r in replicas), return_exceptions=True)
        await asyncio.gather(*self._closing, return_exceptions=True)
