"""Settings of one model replica: frozen dataclasses, units in names, no environment variables."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from meshserve.errors import InvalidInputError
from meshserve.tls import ServerTLS

__all__ = [
    "AdmissionConfig",
    "BatchingConfig",
    "ModelServiceConfig",
    "SessionConfig",
    "auto_concurrent_batches",
    "auto_intra_op_threads",
    "config_from_mapping",
    "usable_cpus",
]


@dataclass(frozen=True)
class BatchingConfig:
    """The dynamic batcher's contract (see modelsvc/batcher.py).

    max_batch_rows: rows per session call (1 = batching off: one request per call).
    max_wait_us: how long the first queued request waits for company before its batch runs.
    queue_max: queued requests accepted; past it submit fails at once with RESOURCE_EXHAUSTED.
    max_concurrent_batches: session calls in flight at once (each in the executor); 0 = auto,
      resolved at the process edge by `auto_concurrent_batches` (1 on two cores or fewer).
    overload_pushback_ms: retry hint sent with RESOURCE_EXHAUSTED.
    inline_max_us: a batch expected to compute in at most this long runs on the event loop
      thread instead of the executor (the two thread hand-offs cost more); 0 = never.
    """

    max_batch_rows: int = 32
    max_wait_us: int = 2000
    queue_max: int = 1024
    max_concurrent_batches: int = 0
    overload_pushback_ms: int = 50
    inline_max_us: int = 150

    @property
    def enabled(self) -> bool:
        return self.max_batch_rows > 1

    def __post_init__(self) -> None:
        if self.max_batch_rows < 1:
            raise InvalidInputError(f"batch_max must be >= 1, got {self.max_batch_rows}")
        if self.max_wait_us < 0:
            raise InvalidInputError(f"batch_wait_us must be >= 0, got {self.max_wait_us}")
        if self.queue_max < 1:
            raise InvalidInputError(f"queue_max must be >= 1, got {self.queue_max}")
        if self.inline_max_us < 0:
            raise InvalidInputError(f"inline_max_us must be >= 0, got {self.inline_max_us}")
        if self.max_concurrent_batches < 0:
            raise InvalidInputError(
                f"max_concurrent_batches must be >= 0 (0 = auto), got {self.max_concurrent_batches}"
            )


@dataclass(frozen=True)
class AdmissionConfig:
    """Admission control, checked before a request is decoded (see modelsvc/admission.py).

    Refusals are RESOURCE_EXHAUSTED with ``batching.overload_pushback_ms`` as retry pushback.
    0 turns a limit off.

    max_in_flight_requests: requests admitted and not yet answered (queued, running or being
      answered), all methods and streams together. Below `BatchingConfig.queue_max` so that
      overload is refused here, before decoding, rather than in the batcher queue.
    max_in_flight_rows: rows of those requests (a request alone bigger than this is admitted
      when nothing else is in flight).
    max_client_in_flight_requests: in-flight requests of one client (per-client fairness).
    client_id_metadata: request header naming the client (e.g. ``x-client-id``); "" or a
      request without it: the client is its transport peer (one key per connection).
    """

    max_in_flight_requests: int = 512
    max_in_flight_rows: int = 0
    max_client_in_flight_requests: int = 0
    client_id_metadata: str = ""

    def __post_init__(self) -> None:
        for name in (
            "max_in_flight_requests",
            "max_in_flight_rows",
            "max_client_in_flight_requests",
        ):
            value = getattr(self, name)
            if value < 0:
                raise InvalidInputError(f"{name} must be >= 0 (0 = off), got {value}")
        if self.client_id_metadata != self.client_id_metadata.lower():
            raise InvalidInputError(
                "client_id_metadata must be a lower-case header name, "
                f"got {self.client_id_metadata!r}"
            )


@dataclass(frozen=True)
class SessionConfig:
    """onnxruntime session options.

    intra_op_threads: threads of one session call; 0 = auto, resolved at the process edge by
      `auto_intra_op_threads` (one core stays free for the gRPC event loop).
    inter_op_threads: threads running independent graph nodes in parallel (1 = sequential).
    allow_spinning: let idle intra-op threads busy-wait for work (lower latency per call, but
      they burn CPU the event loop needs on a small box).
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 1
    graph_optimization: str = "all"  # disable | basic | extended | all
    expected_sha256: str = ""
    allow_spinning: bool = False


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_concurrent_batches(cpus: int) -> int:
    """Session calls in flight at once when not set: 1 on two cores or fewer, else 2.

    One core stays with the gRPC event loop; a second concurrent batch on a 2-core box only
    oversubscribes the cores (measured: +15-20% rows/s for the wide MLP behind the orchestrator
    with 1 instead of 2), while on bigger boxes it overlaps one batch's hand-off with the next.
    """
    return 1 if cpus <= 2 else 2


def auto_intra_op_threads(cpus: int, max_concurrent_batches: int) -> int:
    """Intra-op threads per session call when not set: the cores left after one for the event
    loop (request decoding, batching, responses), shared by the concurrent batches, at least 1.

    2 cores -> 1 thread (the session call runs on its executor thread, the loop on the other
    core); 16 cores, 2 concurrent batches -> 7.
    """
    return max(1, (cpus - 1) // max(1, max_concurrent_batches))


@dataclass(frozen=True)
class ModelServiceConfig:
    """Everything `meshserve model serve` needs; built by modelsvc/cli.py from flags or a file."""

    model_path: str
    name: str
    version: str = "1"
    handler: str = ""  # "module:Class"
    # Typed contract package meshserve.models.<name>.v<schema_version> (docs/TYPED.md).
    schema_version: int = 1
    host: str = "127.0.0.1"
    port: int = 0
    consul_address: str = "127.0.0.1:8500"
    consul_token: str = ""
    register: bool = True
    instance_id: str = ""  # default NAME-<host>-<port>
    metrics_port: int = 0  # 0 = free port, -1 = off
    http_port: int = 0  # KServe V2 REST (modelsvc/v2_rest.py): 0 = free port, -1 = off
    grace_s: float = 10.0
    ready_timeout_s: float = 10.0  # wait this long for the Consul check to pass before READY
    tls_cert_file: str = ""  # serve TLS with this certificate and key (PEM)
    tls_key_file: str = ""
    tls_client_ca_file: str = ""  # require client certificates signed by this CA (mTLS)
    # Consul's gRPC check dials TLS; skip verification when the agent lacks our CA.
    tls_check_skip_verify: bool = False
    max_message_bytes: int = 64 * 1024 * 1024
    max_concurrent_rpcs: int = 1024
    # Calls gRPC's C core has received but the event loop has not picked up yet; past it the C
    # core answers RESOURCE_EXHAUSTED itself (no pushback trailer), without Python running.
    # Refusal probability rises linearly from a quarter of it (random early detection); 0 = grpc's
    # defaults (1000 / 3000).
    max_pending_rpcs: int = 0
    max_elements: int = 1 << 26
    # sys.setswitchinterval of a replica process (`run`): how long the busy event loop may keep
    # the GIL while the inference thread waits to start a batch or hand its outputs back.
    # Python's 5000 us default leaves the model idle for up to that long per batch.
    gil_switch_interval_us: int = 500
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    session: SessionConfig = field(default_factory=SessionConfig)

    @property
    def server_tls(self) -> ServerTLS | None:
        """TLS settings when a certificate is configured, else None (plaintext)."""
        if not (self.tls_cert_file or self.tls_key_file):
            return None
        return ServerTLS(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)


_NESTED = {"batching": BatchingConfig, "admission": AdmissionConfig, "session": SessionConfig}


def config_from_mapping(values: dict[str, Any]) -> ModelServiceConfig:
    """Build a config from a flat-or-nested mapping (a parsed YAML/TOML file merged with flags).

    Unknown keys are an error naming the key and the accepted ones.
    """
    top = {f.name for f in dataclasses.fields(ModelServiceConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key in _NESTED:
            cls = _NESTED[key]
            allowed = {f.name for f in dataclasses.fields(cls)}
            unknown = set(value) - allowed
            if unknown:
                raise InvalidInputError(
                    f"unknown {key} settings {sorted(unknown)} (expected {sorted(allowed)})"
                )
            kwargs[key] = cls(**value)
        elif key in top:
            kwargs[key] = value
        else:
            raise InvalidInputError(f"unknown setting {key!r} (expected {sorted(top)})")
    for required in ("model_path", "name"):
        if not kwargs.get(required):
            raise InvalidInputError(f"setting {required!r} is required")
    return ModelServiceConfig(**kwargs)
