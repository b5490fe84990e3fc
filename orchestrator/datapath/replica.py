"""One model replica as the caller sees it: the only thing that touches a gRPC channel.

It keeps the replica's load and health signals: requests in flight, a peak latency EWMA
(time-decayed, so a replica left idle is eventually tried again), totals, consecutive failures
and outlier-ejection state (``OutlierState``), plus whether it is draining.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

import grpc

from meshserve.errors import MeshError
from meshserve.grpc_errors import from_rpc_error
from meshserve.orchestrator.caller import EndpointSnapshot
from meshserve.orchestrator.datapath.config import DataPathConfig
from meshserve.orchestrator.datapath.ejection import OutlierState
from meshserve.orchestrator.datapath.faults import FaultInjectingTransport, FaultInjector
from meshserve.orchestrator.datapath.metrics import IN_FLIGHT
from meshserve.orchestrator.datapath.transport import TRANSPORTS, Metadata, Transport
from meshserve.serving import CLIENT_KEEPALIVE_MS
from meshserve.tls import open_channel
from meshserve.v1 import model_pb2, model_pb2_grpc

if TYPE_CHECKING:
    from meshserve.v1.model_pb2_grpc import ModelServiceAsyncStub

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
    """A replica of `model` at `endpoint.target` with its channel, transport and statistics.

    It owns one transport (the model's ``transport_for``, from ``transport.TRANSPORTS``),
    opened with the channel on first use and wrapped in ``FaultInjectingTransport`` when
    `faults` is given.
    """

    def __init__(
        self,
        model: str,
        endpoint: EndpointInfo,
        config: DataPathConfig,
        clock: Callable[[], float] = time.monotonic,
        faults: FaultInjector | None = None,
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
        self.retries_total = 0  # attempts that were retries or hedges
        # Pushback: no attempt before `pushback_until` (the server's retry_pushback_ms), no
        # retry or hedge before `overloaded_until` (any RESOURCE_EXHAUSTED); router clock.
        self.pushback_until = 0.0
        self.overloaded_until = 0.0
        self.draining = False
        self.removed = False  # gone from Consul; closed once in_flight reaches 0
        self._ewma_ms = 0.0
        self._last_sample = 0.0
        self._has_sample = False
        self._gauge = IN_FLIGHT.labels(model, endpoint.instance_id)
        self._channel: grpc.aio.Channel | None = None
        self._faults = faults
        self._stub: ModelServiceAsyncStub | None = None
        self._transport: Transport | None = None

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
            retries_total=self.retries_total,
        )

    # ----- transport -------------------------------------------------------------------------
    @functools.cached_property
    def rpc_method(self) -> str:
        """The ModelService method its transport calls (``Infer``, ``InferStream``)."""
        cls = TRANSPORTS.get(self._config.transport_for(self.model))
        return str(getattr(cls, "rpc_method", "Infer"))

    def _ensure_stub(self) -> ModelServiceAsyncStub:
        if self._stub is None:
            size = self._config.max_message_bytes
            self._channel = open_channel(
                self.endpoint.target,
                self._config.tls,
                options=[
                    ("grpc.max_send_message_length", size),
                    ("grpc.max_receive_message_length", size),
                    ("grpc.enable_retries", 0),
                    ("grpc.keepalive_time_ms", CLIENT_KEEPALIVE_MS),
                    ("grpc.keepalive_timeout_ms", 5_000),
                ],
            )
            self._stub = model_pb2_grpc.ModelServiceStub(self._channel)
        return self._stub

    def _connect(self) -> Transport:
        """The model's configured transport over this replica's channel."""
        cls = TRANSPORTS.get(self._config.transport_for(self.model))
        return cls(self._ensure_stub(), self.endpoint.target, self._config)

    def _open_transport(self) -> Transport:
        transport = self._connect()
        if self._faults is not None:
            transport = FaultInjectingTransport(
                transport, self._faults, self.model, self.instance_id
            )
        self._transport = transport
        return transport

    async def infer(
        self, request: model_pb2.InferRequest, *, timeout_s: float, metadata: Metadata = ()
    ) -> model_pb2.InferResponse:
        """One attempt; raises MeshError. Updates in-flight and totals (not the EWMA)."""
        transport = self._transport or self._open_transport()
        self.in_flight += 1
        self.requests_total += 1
        self._gauge.inc()
        self.outlier.on_start()
        try:
            return await transport.infer(request, timeout_s, metadata)
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
        """Close the transport and the channel (in-flight requests should be done by now)."""
        transport, channel = self._transport, self._channel
        self._transport = None
        self._channel = None
        self._stub = None
        if transport is not None:
            await transport.close()
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()
        with contextlib.suppress(KeyError):
            IN_FLIGHT.remove(self.model, self.instance_id)
