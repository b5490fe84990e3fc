"""One model replica as the caller sees it: the only thing that touches a gRPC channel.

It keeps the replica's load and health signals: requests in flight, a peak latency EWMA
(time-decayed, so a replica left idle is eventually tried again), totals, consecutive failures
and outlier-ejection state (``OutlierState``), plus whether it is draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import grpc

from meshserve.errors import DeadlineExceededError, MeshError
from meshserve.grpc_errors import from_rpc_error
from meshserve.orchestrator.caller import EndpointSnapshot
from meshserve.orchestrator.datapath.config import DataPathConfig, Transport
from meshserve.orchestrator.datapath.ejection import OutlierState
from meshserve.orchestrator.datapath.faults import FaultDecision
from meshserve.orchestrator.datapath.metrics import IN_FLIGHT
from meshserve.orchestrator.datapath.stream import StreamSession
from meshserve.tls import open_channel
from meshserve.v1 import model_pb2, model_pb2_grpc

__all__ = ["EndpointInfo", "Replica"]


class EndpointInfo(Protocol):
    """What the replica needs of a ``meshserve.registry.Endpoint``."""

    @property
    def instance_id(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def meta(self) -> Mapping[str, str]: ...
    @property
    def target(self) -> str: ...


class Replica:
    """A replica of `model` at `endpoint.target` with its channel and statistics."""

    def __init__(
        self,
        model: str,
        endpoint: EndpointInfo,
        config: DataPathConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.endpoint = endpoint
        self.instance_id = endpoint.instance_id
        self._config = config
        self._clock = clock
        self.outlier = OutlierState(config.ejection, clock)
        self.in_flight = 0
        self.requests_total = 0
        self.failures_total = 0
        self.draining = False
        self.removed = False  # gone from Consul; closed once in_flight reaches 0
        self._ewma_ms = 0.0
        self._last_sample = 0.0
        self._has_sample = False
        self._gauge = IN_FLIGHT.labels(model, endpoint.instance_id)
        self._channel: grpc.aio.Channel | None = None
        self._stub: model_pb2_grpc.ModelServiceStub | None = None
        self._stream: StreamSession | None = None

    # ----- load / health signals ---------------------------------------------------------------
    def latency_score_ms(self, now: float) -> float:
        """Peak EWMA of latency, decayed toward 0 while no sample arrives (0 when unknown)."""
        if not self._has_sample:
            return 0.0
        idle = max(0.0, now - self._last_sample)
        return self._ewma_ms * math.pow(0.5, idle / self._config.latency_idle_half_life_s)

    def record_latency(self, sample_ms: float) -> None:
        """Peak EWMA: a slower sample takes effect at once, faster ones blend in by half-life."""
        now = self._clock()
        if not self._has_sample or sample_ms >= self._ewma_ms:
            self._ewma_ms = sample_ms
        else:
            dt = max(0.0, now - self._last_sample)
            w = math.pow(0.5, dt / self._config.latency_ewma_half_life_s)
            # At least 10% weight per sample so bursts of samples still move it.
            w = min(w, 0.9)
            self._ewma_ms = w * self._ewma_ms + (1.0 - w) * sample_ms
        self._last_sample = now
        self._has_sample = True

    def available(self) -> bool:
        """May be picked for a new request (not draining/removed, ejection allows)."""
        return not self.draining and not self.removed and self.outlier.may_take()

    @property
    def state(self) -> str:
        if self.draining or self.removed:
            return "draining"
        if self.outlier.is_ejected:
            return "ejected"
        return "passing"

    def snapshot(self, faulted: bool) -> EndpointSnapshot:
        state = self.state
        if faulted and state == "passing":
            state = "faulted"
        return EndpointSnapshot(
            model=self.model,
            instance_id=self.instance_id,
            address=self.endpoint.target,
            version=self.endpoint.version,
            state=state,
            in_flight=self.in_flight,
            latency_ewma_ms=round(self._ewma_ms, 3),
            requests_total=self.requests_total,
            failures_total=self.failures_total,
        )

    # ----- transport -------------------------------------------------------------------------
    def _ensure_stub(self) -> model_pb2_grpc.ModelServiceStub:
        if self._stub is None:
            size = self._config.max_message_bytes
            self._channel = open_channel(
                self.endpoint.target,
                self._config.tls,
                options=[
                    ("grpc.max_send_message_length", size),
                    ("grpc.max_receive_message_length", size),
                    ("grpc.enable_retries", 0),
                    ("grpc.keepalive_time_ms", 10_000),
                    ("grpc.keepalive_timeout_ms", 5_000),
                ],
            )
            self._stub = model_pb2_grpc.ModelServiceStub(self._channel)
        return self._stub

    async def infer(
        self,
        request: model_pb2.InferRequest,
        *,
        transport: Transport,
        timeout_s: float,
        metadata: Sequence[tuple[str, str]] = (),
        fault: FaultDecision | None = None,
    ) -> model_pb2.InferResponse:
        """One attempt; raises MeshError. Updates in-flight and totals (not the EWMA)."""
        stub = self._ensure_stub()
        self.in_flight += 1
        self.requests_total += 1
        self._gauge.inc()
        self.outlier.on_start()
        try:
            if fault is not None:
                if fault.delay_s:
                    await asyncio.sleep(min(fault.delay_s, timeout_s))
                    if fault.delay_s >= timeout_s:
                        raise DeadlineExceededError("deadline passed in injected delay")
                if fault.abort is not None:
                    raise fault.abort
            if transport == "stream":
                # The item's own budget: the server drops it if it expires in its queue.
                request.timeout_ms = max(1, int(timeout_s * 1000))
                if self._stream is None:
                    self._stream = StreamSession(
                        stub, self.endpoint.target, self._config.stream_max_in_flight
                    )
                return await self._stream.infer(request, timeout_s)
            try:
                return await stub.Infer(request, timeout=timeout_s, metadata=tuple(metadata))
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error(exc) from None
        except MeshError:
            self.failures_total += 1
            raise
        finally:
            self.in_flight -= 1
            self._gauge.dec()

    async def get_metadata(self, timeout_s: float) -> model_pb2.ModelMetadata:
        stub = self._ensure_stub()
        try:
            return await stub.GetMetadata(model_pb2.GetMetadataRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def close(self) -> None:
        """Close the stream and the channel (in-flight requests should be done by now)."""
        stream, channel = self._stream, self._channel
        self._stream = None
        self._channel = None
        self._stub = None
        if stream is not None:
            await stream.close()
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()
        with contextlib.suppress(KeyError):
            IN_FLIGHT.remove(self.model, self.instance_id)
