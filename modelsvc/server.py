"""Assembles and runs one model replica: model, core, gRPC server, health, reflection, Consul.

`ModelServer.start()` loads the model, serves and registers; `ModelServer.stop()` is the SIGTERM
path: health NOT_SERVING, deregister, stop accepting, drain in-flight within the grace period.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import sys
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from meshserve.contracts.live import ContractSet
from meshserve.decoding import tolerant
from meshserve.modelsvc.admission import Admission
from meshserve.modelsvc.backend import OnnxBackend
from meshserve.modelsvc.config import (
    ModelServiceConfig,
    auto_concurrent_batches,
    auto_intra_op_threads,
    usable_cpus,
)
from meshserve.modelsvc.core import ModelCore
from meshserve.modelsvc.handler import load_handler
from meshserve.modelsvc.metrics import ModelMetrics
from meshserve.modelsvc.servicers import ModelServicer, V2Servicer
from meshserve.modelsvc.typed_servicer import TypedModelServicer
from meshserve.modelsvc.v2_rest import v2_rest_app
from meshserve.reflection import enable_reflection
from meshserve.serving import serve_until_signal, server_options
from meshserve.telemetry import Telemetry, TelemetryConfig, server_interceptors, setup_telemetry
from meshserve.tls import bind
from meshserve.typed_rpc import add_typed_services
from meshserve.v1 import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc, model_pb2, model_pb2_grpc
from meshserve.web import HttpConfig, HttpServer

__all__ = ["HEALTH_SERVICES", "ModelServer", "run"]

log = logging.getLogger(__name__)

MODEL_SERVICE = model_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name
V2_SERVICE = grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_SERVICES = ("", MODEL_SERVICE, V2_SERVICE)


@dataclass(frozen=True)
class Bound:
    """Where the replica ended up: gRPC port, metrics port (-1 off), Consul id."""

    host: str
    port: int
    metrics_port: int
    instance_id: str
    http_port: int = -1  # KServe V2 REST (-1 off)


class ModelServer:
    """One model replica; `consul` is a meshserve.registry.ConsulConfig (None = no registration)."""

    def __init__(
        self,
        config: ModelServiceConfig,
        consul: Any | None = None,
        telemetry: TelemetryConfig | None = None,
    ) -> None:
        if config.batching.max_concurrent_batches == 0:
            batching = dataclasses.replace(
                config.batching, max_concurrent_batches=auto_concurrent_batches(usable_cpus())
            )
            config = dataclasses.replace(config, batching=batching)
        self.config = config
        self._telemetry_config = telemetry or TelemetryConfig.from_env()
        self._telemetry: Telemetry | None = None
        self._consul = consul if config.register else None
        self._server: grpc.aio.Server | None = None
        self._health = health_aio.HealthServicer()
        self._registration: Any | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.batching.max_concurrent_batches,
            thread_name_prefix="modelsvc-infer",
        )
        self.metrics = ModelMetrics(config.name)
        self.metrics.queue_capacity(config.batching.queue_max)
        self.admission = Admission(config.admission, config.batching.overload_pushback_ms)
        self.core: ModelCore | None = None
        self.bound: Bound | None = None
        self._http: HttpServer | None = None

    async def start(self) -> Bound:
        cfg = self.config
        session = cfg.session
        if session.intra_op_threads <= 0:
            threads = auto_intra_op_threads(usable_cpus(), cfg.batching.max_concurrent_batches)
            session = dataclasses.replace(session, intra_op_threads=threads)
        log.info(
            "onnxruntime: %d intra-op threads per call, %d concurrent batches",
            session.intra_op_threads,
            cfg.batching.max_concurrent_batches,
        )
        backend = await asyncio.to_thread(OnnxBackend, cfg.model_path, session)
        handler = load_handler(cfg.handler)
        core = ModelCore(
            name=cfg.name,
            version=cfg.version,
            backend=backend,
            batching=cfg.batching,
            handler=handler,
            schema_version=cfg.schema_version,
            executor=self._executor,
            observer=self.metrics,
        )
        await asyncio.get_running_loop().run_in_executor(self._executor, core.warm_up)
        self.core = core

        options = server_options(cfg.max_message_bytes)
        if cfg.max_pending_rpcs > 0:
            options.append(("grpc.server.max_pending_requests", cfg.max_pending_rpcs // 4))
            options.append(("grpc.server.max_pending_requests_hard_limit", cfg.max_pending_rpcs))
        server = grpc.aio.server(
            options=options,
            maximum_concurrent_rpcs=cfg.max_concurrent_rpcs,
            interceptors=server_interceptors(enabled=self._telemetry_config.active()),
        )
        model_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(core, self.metrics, cfg.max_elements, self.admission), tolerant(server)
        )
        v2_servicer = V2Servicer(core, self.metrics, cfg.max_elements, self.admission)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            v2_servicer, tolerant(server)
        )
        typed = TypedModelServicer(core, self.metrics, cfg.max_elements, self.admission)
        contracts = ContractSet()
        contracts.put(core.info.contract)
        add_typed_services(server, contracts, unary=typed.predict, stream=typed.predict_stream)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        enable_reflection(server, (MODEL_SERVICE, V2_SERVICE), live=contracts)
        port = bind(server, f"{cfg.host}:{cfg.port}", cfg.server_tls)
        await server.start()
        self._server = server
        core.start()

        instance_id = cfg.instance_id or f"{cfg.name}-{cfg.host}-{port}"
        core.set_instance_id(instance_id)
        self._telemetry = setup_telemetry(
            cfg.name, instance_id, cfg.version, config=self._telemetry_config
        )
        metrics_port = cfg.metrics_port
        if metrics_port >= 0:
            metrics_port = self.metrics.serve(cfg.host, metrics_port)
        for service in (*HEALTH_SERVICES, cfg.name):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        http_port = -1
        if cfg.http_port >= 0:
            http = HttpConfig(
                host=cfg.host, port=cfg.http_port, max_body_bytes=cfg.max_message_bytes
            )
            self._http = HttpServer(v2_rest_app(v2_servicer, http), http)
            http_port = await self._http.start()
        self.bound = Bound(cfg.host, port, metrics_port, instance_id, http_port)
        if self._consul is not None:
            await self._register(self.bound)
        log.info(
            "serving model %s v%s on %s:%d as %s (metrics port %d, batch_max %d, wait %d us)",
            cfg.name, cfg.version, cfg.host, port, instance_id, metrics_port,
            cfg.batching.max_batch_rows, cfg.batching.max_wait_us,
        )  # fmt: skip
        return self.bound

    async def _register(self, bound: Bound) -> None:
        from meshserve.registry.registration import Registration, ServiceInstance

        assert self.core is not None
        info = self.core.info
        instance = ServiceInstance(
            name=info.name,
            instance_id=bound.instance_id,
            address=bound.host,
            port=bound.port,
            tags=("meshserve-model", f"version={info.version}"),
            meta={
                "version": info.version,
                "model_sha256": info.model_sha256,
                "signature_sha256": info.signature_sha256,
                "typed_service": info.contract.service,
                "typed_schema": str(info.contract.schema_version),
                "typed_fingerprint": info.contract.fingerprint,
                "batch_max": str(info.batching.max_batch_rows),
                "batch_wait_us": str(info.batching.max_wait_us),
                "metrics_port": str(bound.metrics_port),
                "http_port": str(bound.http_port),
            },
            grpc_health_service=MODEL_SERVICE,
            grpc_use_tls=self.config.server_tls is not None,
            tls_skip_verify=self.config.tls_check_skip_verify,
        )
        assert self._consul is not None
        self._registration = Registration(self._consul, instance)
        await self._registration.start()
        if not await self._registration.wait_passing(self.config.ready_timeout_s):
            log.warning(
                "%s registered but its Consul check is not passing after %.1fs",
                instance.instance_id, self.config.ready_timeout_s,
            )  # fmt: skip

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, deregister, stop accepting, drain in-flight within `grace_s`."""
        grace = self.config.grace_s if grace_s is None else grace_s
        await self._health.enter_graceful_shutdown()
        if self._registration is not None:
            await self._registration.stop(deregister=True)
        if self._http is not None:
            await self._http.stop()
        if self._server is not None:
            await self._server.stop(grace)
        if self.core is not None:
            await self.core.stop(timeout_s=0.0)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._telemetry is not None:
            self._telemetry.shutdown()  # export what is pending
        log.info("model server stopped")


async def run(config: ModelServiceConfig, consul: Any | None = None) -> int:
    """Serve until SIGTERM/SIGINT; print the ready line; exit code 0 on a clean drain."""
    if config.gil_switch_interval_us > 0:
        sys.setswitchinterval(config.gil_switch_interval_us / 1e6)
    return await serve_until_signal(ModelServer(config, consul), config.grace_s)
