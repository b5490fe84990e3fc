"""Assembles and runs one orchestrator: plan store, engine, data path, learning, gRPC, Consul.

`OrchestratorServer.start()` loads plans from Consul KV (and follows them), contends for the
leader lock, serves Orchestrator + Admin (+ health, reflection) over plaintext or TLS and
registers as ``meshserve-orchestrator``; `stop()` is the SIGTERM path.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from meshserve import __version__
from meshserve.contracts.live import ContractSet
from meshserve.decoding import tolerant
from meshserve.errors import InvalidInputError, MeshError
from meshserve.limits import DEFAULT_LIMITS, Limits
from meshserve.names import check_prefix
from meshserve.orchestrator.admin import AdminCore
from meshserve.orchestrator.auth import BearerTokenInterceptor, DataPlaneAuth
from meshserve.orchestrator.caller import ModelCaller
from meshserve.orchestrator.compiled import compile_plan
from meshserve.orchestrator.datapath.config import DataPathConfig
from meshserve.orchestrator.engine import Engine, EngineConfig
from meshserve.orchestrator.feedback_stream import FeedbackStreamConfig, FeedbackStreamConsumer
from meshserve.orchestrator.http.app import Ingress, ingress_app
from meshserve.orchestrator.learning_port import Learning, NullLearning
from meshserve.orchestrator.logic.connections import close_logic_connections
from meshserve.orchestrator.model_usage import follow_plan_models
from meshserve.orchestrator.plan_health import PlanHealth
from meshserve.orchestrator.plans.parse import load_plan_file
from meshserve.orchestrator.servicers import AdminServicer, OrchestratorServicer
from meshserve.orchestrator.shadows import ShadowStore
from meshserve.orchestrator.store import DEFAULT_PREFIX, PlanStore
from meshserve.orchestrator.traffic import TrafficTable
from meshserve.orchestrator.typed_plans import follow_plan_contracts, stamp_plan
from meshserve.orchestrator.typed_servicer import TypedPlanServicer
from meshserve.reflection import enable_reflection
from meshserve.registry import KV, ConsulConfig, LeaderElection, list_services
from meshserve.serving import serve_until_signal, server_options
from meshserve.telemetry import (
    Telemetry,
    TelemetryConfig,
    server_interceptors,
    setup_telemetry,
    start_metrics_server,
)
from meshserve.tls import ClientTLS, ServerTLS, bind
from meshserve.typed_rpc import add_typed_services
from meshserve.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    plan_pb2,
)
from meshserve.web import HttpConfig, HttpServer

__all__ = [
    "ORCHESTRATOR_SERVICE",
    "OrchestratorConfig",
    "OrchestratorServer",
    "python_allow_list",
    "run",
]

log = logging.getLogger(__name__)

ORCHESTRATOR_SERVICE = orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name
CONSUL_SERVICE = "meshserve-orchestrator"
LEADER_LEAF = "leader"  # the leader lock is <kv_prefix>leader
DEFAULT_HTTP = HttpConfig(port=0)  # the HTTP ingress is on, on a free port, unless told


@dataclass(frozen=True)
class OrchestratorConfig:
    """Settings of one orchestrator process (flags are read only in cli.py)."""

    host: str = "127.0.0.1"
    port: int = 0
    # Share the port with other processes of this user (SO_REUSEPORT): set on the workers of
    # `orchestrator serve --workers N` (meshserve.orchestrator.workers), off otherwise.
    reuse_port: bool = False
    admin_token: str = field(default="", repr=False)
    # HMAC keys of feedback tokens (first signs, all verify); () = one shared via Consul KV.
    feedback_keys: tuple[str, ...] = field(default=(), repr=False)
    instance_id: str = ""
    python_plans: tuple[tuple[str, str], ...] = ()  # (plan name, "module:attr")
    # Modules python plan targets may come from (with those of python_plans and logic_modules):
    # a plan applied over Admin naming any other module is refused before anything is imported.
    python_modules: tuple[str, ...] = ()
    plan_files: tuple[str, ...] = ()
    register: bool = True
    metrics_port: int = -1
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # require client certificates from this CA (mTLS)
    tls_check_skip_verify: bool = False  # Consul's TLS health check skips verification
    model_tls: ClientTLS | None = None  # dial model replicas with TLS
    grace_s: float = 5.0
    default_timeout_s: float = 30.0
    # Data path settings (batching, transport, retries, ejection, per-model overrides; None:
    # the defaults); the three below override them when set.
    datapath: DataPathConfig | None = None
    client_batching: bool | None = None  # micro-batching on/off for every model
    model_transport: str = ""  # "stream" (bidi InferStream) or "unary" (Infer per batch)
    max_message_bytes: int = 64 * 1024 * 1024
    stream_max_in_flight: int = 256
    leader_ttl_s: float = 10.0
    # Consul KV namespace of every key this orchestrator (plans, traffic, learning, leader lock)
    # uses: orchestrators with the same prefix form one group, other prefixes share Consul safely.
    kv_prefix: str = DEFAULT_PREFIX
    learning: bool = True
    # How often shadow results recorded here are added to Consul KV (orchestrator/shadows.py).
    shadow_flush_s: float = 2.0
    learning_dir: str = ""  # learner model files and logs (default: a temp folder)
    logic_modules: tuple[str, ...] = ()  # modules that register @logic functions on import
    limits: Limits = DEFAULT_LIMITS  # every bound a caller can hit (meshserve.limits)
    # The HTTP/JSON ingress (orchestrator/http/): port -1 = off, 0 = any free port.
    http: HttpConfig = DEFAULT_HTTP
    # Data-plane tokens (orchestrator/auth.py file format); "" = the data plane is open.
    data_tokens: str = field(default="", repr=False)
    # sys.setswitchinterval of the process (`run`): how long a control-plane worker thread
    # (plan parsing) may keep the GIL while the event loop waits to serve Execute calls.
    gil_switch_interval_us: int = 500
    extra_interceptors: tuple[Any, ...] = field(default=(), compare=False)
    # Labels/rewards from a NATS JetStream subject, applied like Feedback RPCs (None: off).
    feedback_stream: FeedbackStreamConfig | None = None


@dataclass(frozen=True)
class Bound:
    host: str
    port: int
    instance_id: str
    metrics_port: int
    http_port: int = -1


def _datapath(cfg: OrchestratorConfig) -> DataPathConfig:
    """The data path settings with the command line's overrides applied."""
    datapath = replace(
        cfg.datapath or DataPathConfig(), default_timeout_s=cfg.default_timeout_s, tls=cfg.model_tls
    )
    if cfg.model_transport:
        datapath = replace(datapath, transport=cfg.model_transport)
    if cfg.client_batching is not None:
        datapath = datapath.with_batching(cfg.client_batching)
    return datapath


def _plan_files(paths: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json")))
        elif path.exists():
            out.append(path)
        else:
            raise InvalidInputError(f"--plans {raw}: no such file or directory")
    return out


def python_allow_list(cfg: OrchestratorConfig) -> frozenset[str]:
    """The modules python plan targets may come from: ``--python-module``, the modules of
    ``--python-plan`` targets and ``--logic`` modules (named at process start, never by RPC)."""
    plan_modules = (target.partition(":")[0] for _, target in cfg.python_plans)
    return frozenset((*cfg.python_modules, *plan_modules, *cfg.logic_modules))


def _import_logic_modules(modules: tuple[str, ...]) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise InvalidInputError(f"--logic {module}: cannot import it: {exc}") from None


class OrchestratorServer:
    """One orchestrator process (see module docstring)."""

    def __init__(
        self,
        config: OrchestratorConfig,
        consul: ConsulConfig,
        *,
        caller: ModelCaller | None = None,
        telemetry: TelemetryConfig | None = None,
    ) -> None:
        self.config = config
        self.consul = consul
        self._caller = caller
        # The orchestrator keeps recent traces for Admin.GetTrace/ListTraces by default.
        self._telemetry_config = telemetry or TelemetryConfig.from_env(buffer_max_traces=256)
        self._telemetry: Telemetry | None = None
        self._health = health_aio.HealthServicer()
        self._plan_health: PlanHealth | None = None
        self._server: grpc.aio.Server | None = None
        self._registration: Any = None
        self.kv: KV | None = None
        self.store: PlanStore | None = None
        self.contracts = ContractSet()  # the typed services of the active plans
        self.election: LeaderElection | None = None
        self.learning: Learning = NullLearning()
        self._feedback_stream: FeedbackStreamConsumer | None = None
        self.engine: Engine | None = None
        self.shadow_store: ShadowStore | None = None
        self.bound: Bound | None = None
        self._http: HttpServer | None = None
        self._serving = False

    async def start(self) -> Bound:
        cfg = self.config
        data_plane = (
            DataPlaneAuth.parse(cfg.data_tokens, cfg.admin_token) if cfg.data_tokens else None
        )
        server = grpc.aio.server(
            options=server_options(cfg.max_message_bytes, reuse_port=cfg.reuse_port),
            interceptors=[
                BearerTokenInterceptor(
                    cfg.admin_token, data_plane=data_plane, plan_of_method=self._plan_of_method
                ),
                *server_interceptors(enabled=self._telemetry_config.active()),
                *cfg.extra_interceptors,
            ],
        )
        address = f"{cfg.host}:{cfg.port}"
        tls = None
        if cfg.tls_cert_file or cfg.tls_key_file:
            tls = ServerTLS(cfg.tls_cert_file, cfg.tls_key_file, cfg.tls_client_ca_file)
        port = bind(server, address, tls)
        instance_id = cfg.instance_id or f"orchestrator-{socket.gethostname()}-{port}"
        self._telemetry = setup_telemetry(
            "orchestrator", instance_id, __version__, config=self._telemetry_config
        )

        check_prefix(cfg.kv_prefix)
        self.kv = KV(self.consul)
        traffic = TrafficTable()
        self.store = PlanStore(self.kv, traffic, prefix=cfg.kv_prefix)
        await self.store.start()
        store = self.store
        plan_health = self._plan_health = PlanHealth(self._health, store.names)
        store.on_change(plan_health.changed)
        self.election = LeaderElection(
            self.consul, cfg.kv_prefix + LEADER_LEAF, instance_id, cfg.leader_ttl_s
        )
        await self.election.start()
        if self._caller is None:
            from meshserve.orchestrator.datapath import MeshCaller

            self._caller = MeshCaller(_datapath(cfg), self.consul)
        caller = self._caller
        follow_plan_models(
            lambda: [info.active_plan() for info in store.infos()], store.on_change, caller.retain
        )
        follow_plan_contracts(
            lambda: [info.active_plan() for info in store.infos()], store.on_change, self.contracts
        )
        _import_logic_modules(cfg.logic_modules)
        if cfg.learning:
            self.learning = await self._start_learning(instance_id)
        self.engine = Engine(
            caller,
            self.store,
            learning=self.learning,
            traffic=traffic,
            config=EngineConfig(
                default_timeout_s=cfg.default_timeout_s, python_modules=python_allow_list(cfg)
            ),
        )
        consul = self.consul
        core = AdminCore(
            self.store,
            self.engine,
            caller,
            list_services=lambda: list_services(consul),
            limits=cfg.limits,
        )
        self.shadow_store = ShadowStore(self.kv, self.engine.stats.shadow_results, cfg.kv_prefix)
        await self.shadow_store.load()
        self.shadow_store.start(cfg.shadow_flush_s)
        await self._apply_startup_plans()

        election = self.election
        orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(
            OrchestratorServicer(
                self.engine,
                self.learning,
                cfg.stream_max_in_flight,
                limits=cfg.limits,
                contracts=self.contracts,
                model_metadata=caller.metadata,
            ),
            tolerant(server),
        )
        admin_pb2_grpc.add_AdminServicer_to_server(
            AdminServicer(
                core,
                instance_id=instance_id,
                is_leader=lambda: election.is_leader,
                learning=self.learning,
            ),
            tolerant(server),
        )
        typed = TypedPlanServicer(self.engine, cfg.stream_max_in_flight, limits=cfg.limits)
        add_typed_services(server, self.contracts, unary=typed.execute, stream=typed.execute_stream)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        enable_reflection(server, (ORCHESTRATOR_SERVICE, ADMIN_SERVICE), live=self.contracts)
        await server.start()
        self._server = server
        if cfg.feedback_stream is not None:
            self._feedback_stream = FeedbackStreamConsumer(
                self.learning, cfg.feedback_stream, limits=cfg.limits
            )
            await self._feedback_stream.start()
        metrics_port = start_metrics_server(cfg.metrics_port, cfg.host)
        for service in ("", ORCHESTRATOR_SERVICE, ADMIN_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        await plan_health.sync()
        plan_health.start()
        http_port = await self._start_http(data_plane) if cfg.http.enabled else -1
        self._serving = True
        self.bound = Bound(cfg.host, port, instance_id, metrics_port, http_port)
        if cfg.register:
            await self._register(self.bound)
        log.info("orchestrator %s serving on %s:%d", instance_id, cfg.host, port)
        return self.bound

    def _plan_of_method(self, method: str) -> str | None:
        """The plan whose typed service `method` belongs to (token scopes apply to it)."""
        resolved = self.contracts.resolve(method)
        contract = resolved.contract if resolved is not None else None
        return contract.name if contract is not None and contract.kind == "plan" else None

    async def _start_http(self, data_plane: DataPlaneAuth | None) -> int:
        """The HTTP/JSON ingress on its own port, over the same engine, store and auth."""
        assert self.engine is not None and self.store is not None
        ingress = Ingress(
            engine=self.engine,
            store=self.store,
            learning=self.learning,
            limits=self.config.limits,
            auth=data_plane,
            ready=lambda: self._serving,
        )
        http = replace(self.config.http, host=self.config.host, reuse_port=self.config.reuse_port)
        app, openapi = ingress_app(ingress, http)
        self.store.on_change(openapi.changed)
        self._http = HttpServer(app, http)
        return await self._http.start()

    async def _start_learning(self, instance_id: str) -> Learning:
        try:
            from meshserve.orchestrator.learning import HubConfig, LearningHub
        except ImportError as exc:
            log.warning("online learning unavailable: %s", exc)
            return NullLearning()
        from meshserve.orchestrator.learning.rollout import DeployConfig, ProcessDeployer

        assert self.kv is not None and self.store is not None
        work_dir = self.config.learning_dir or str(
            Path(tempfile.gettempdir()) / "meshserve-learning" / instance_id
        )
        deployer = ProcessDeployer(
            self.consul, DeployConfig(work_dir=work_dir), self.store.set_traffic
        )
        hub = LearningHub(
            self.kv,
            config=HubConfig(kv_prefix=f"{self.config.kv_prefix}learning/"),
            leader=self.election,
            deployer=deployer,
            instance_id=instance_id,
            feedback_keys=[k.encode() for k in self.config.feedback_keys],
        )
        await hub.start()
        return hub

    async def _apply_startup_plans(self) -> None:
        """--plans files and --python-plan entries seed the store (`PlanStore.seed`)."""
        assert self.store is not None and self.engine is not None
        started_ms = int(time.time() * 1000)  # timestamps only, compared with created_unix_ms
        plans: list[tuple[plan_pb2.Plan, int]] = [
            (load_plan_file(str(p), self.config.limits), int(p.stat().st_mtime * 1000))
            for p in _plan_files(self.config.plan_files)
        ]
        for name, target in self.config.python_plans:
            plan = plan_pb2.Plan(name=name, python=target, description=f"python {target}")
            plans.append((plan, started_ms))
        for plan, written_ms in plans:
            # structure and imports only: models may come up later
            compile_plan(
                plan,
                (self.engine.models_handles, self.engine.plans_handles),
                self.engine.config.python_modules,
            )
            # typed contract from the declared specs only (models are not asked at startup)
            active = self.store.get(plan.name) if self.store.exists(plan.name) else None
            typed = stamp_plan(
                plan, {s.name: s for s in plan.output_specs}, active, breaking_change=True
            )
            for note in typed.notes:
                log.info("startup plan %s: %s", plan.name, note)
            version, decision = await self.store.seed(plan, written_ms)
            log.info("startup plan %s: %s (active version %d)", plan.name, decision, version)

    async def _register(self, bound: Bound) -> None:
        from meshserve.registry import Registration, ServiceInstance

        instance = ServiceInstance(
            name=CONSUL_SERVICE,
            instance_id=bound.instance_id,
            address=bound.host,
            port=bound.port,
            tags=("meshserve-orchestrator",),
            meta={
                "metrics_port": str(bound.metrics_port),
                "http_port": str(bound.http_port),
                "version": __version__,
            },
            grpc_health_service=ORCHESTRATOR_SERVICE,
            grpc_use_tls=bool(self.config.tls_cert_file),
            tls_skip_verify=self.config.tls_check_skip_verify,
        )
        self._registration = Registration(self.consul, instance)
        await self._registration.start()

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, deregister, stop accepting, finish in-flight within the grace period."""
        grace = self.config.grace_s if grace_s is None else grace_s
        self._serving = False
        if self._plan_health is not None:
            await self._plan_health.stop()
        await self._health.enter_graceful_shutdown()
        if self._registration is not None:
            with contextlib.suppress(MeshError):
                await self._registration.stop(deregister=True)
        if self._http is not None:
            await self._http.stop()
        if self._server is not None:
            await self._server.stop(grace)
        if self._feedback_stream is not None:
            await self._feedback_stream.stop()
        if self.engine is not None:
            await self.engine.drain_background(timeout_s=1.0)
        if self.shadow_store is not None:
            await self.shadow_store.stop()
        await close_logic_connections()
        stop = getattr(self.learning, "stop", None)
        if stop is not None:
            await stop()
        if self.store is not None:
            await self.store.stop()
        if self.election is not None:
            with contextlib.suppress(MeshError):
                await self.election.stop()
        if self._caller is not None:
            await self._caller.close()
        if self.kv is not None:
            await self.kv.close()
        if self._telemetry is not None:
            self._telemetry.shutdown()
        log.info("orchestrator stopped")


async def run(config: OrchestratorConfig, consul: ConsulConfig) -> int:
    """Serve until SIGTERM/SIGINT; print the ready line once serving and registered."""
    if config.gil_switch_interval_us > 0:
        sys.setswitchinterval(config.gil_switch_interval_us / 1e6)
    return await serve_until_signal(OrchestratorServer(config, consul), config.grace_s)
