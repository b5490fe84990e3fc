"""``meshserve model serve``: flags and the environment are read here and nowhere else.

Settings come from ``--config FILE`` (YAML or TOML; keys are the flag names with underscores,
e.g. ``batch_max``, or the nested ModelServiceConfig form) with flags given on the command line
taking precedence.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from meshserve.errors import MeshError

__all__ = ["load_settings", "register"]

log = logging.getLogger(__name__)

# flag name (underscored) -> (section or "", field) of ModelServiceConfig.
_FIELDS: dict[str, tuple[str, str]] = {
    "model": ("", "model_path"),
    "model_path": ("", "model_path"),
    "name": ("", "name"),
    "version": ("", "version"),
    "handler": ("", "handler"),
    "schema_version": ("", "schema_version"),
    "host": ("", "host"),
    "port": ("", "port"),
    "consul": ("", "consul_address"),
    "consul_address": ("", "consul_address"),
    "instance_id": ("", "instance_id"),
    "metrics_port": ("", "metrics_port"),
    "http_port": ("", "http_port"),
    "grace_s": ("", "grace_s"),
    "max_message_bytes": ("", "max_message_bytes"),
    "max_concurrent_rpcs": ("", "max_concurrent_rpcs"),
    "max_pending_rpcs": ("", "max_pending_rpcs"),
    "max_elements": ("", "max_elements"),
    "gil_switch_interval_us": ("", "gil_switch_interval_us"),
    "register": ("", "register"),
    "batch_max": ("batching", "max_batch_rows"),
    "batch_wait_us": ("batching", "max_wait_us"),
    "queue_max": ("batching", "queue_max"),
    "max_concurrent_batches": ("batching", "max_concurrent_batches"),
    "overload_pushback_ms": ("batching", "overload_pushback_ms"),
    "inline_max_us": ("batching", "inline_max_us"),
    "max_in_flight_requests": ("admission", "max_in_flight_requests"),
    "max_in_flight_rows": ("admission", "max_in_flight_rows"),
    "max_client_in_flight_requests": ("admission", "max_client_in_flight_requests"),
    "client_id_metadata": ("admission", "client_id_metadata"),
    "threads": ("session", "intra_op_threads"),
    "inter_op_threads": ("session", "inter_op_threads"),
    "graph_optimization": ("session", "graph_optimization"),
    "sha256": ("session", "expected_sha256"),
    "tls_cert": ("", "tls_cert_file"),
    "tls_key": ("", "tls_key_file"),
    "tls_client_ca": ("", "tls_client_ca_file"),
    "tls_check_skip_verify": ("", "tls_check_skip_verify"),
}

_SECTIONS = ("batching", "admission", "session")


def _read_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    if path.endswith(".toml"):
        import tomllib

        data: Any = tomllib.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise MeshError(f"config file {path!r} must hold a mapping of settings")
    return data


def load_settings(file_values: dict[str, Any], flag_values: dict[str, Any]) -> dict[str, Any]:
    """Merge file settings and explicitly given flags into config_from_mapping's nested form."""
    nested: dict[str, Any] = {section: {} for section in _SECTIONS}
    for source in (file_values, flag_values):
        for key, value in source.items():
            if value is None:
                continue
            if key in _SECTIONS and isinstance(value, dict):
                nested[key].update(value)
                continue
            section, field = _FIELDS.get(key.replace("-", "_"), ("", key))
            if section:
                nested[section][field] = value
            else:
                nested[field] = value
    return nested


def _serve(args: argparse.Namespace) -> int:
    from meshserve.modelsvc.config import config_from_mapping
    from meshserve.modelsvc.server import run

    flags = {key: getattr(args, key, None) for key in _FIELDS if key != "handler"}
    flags["handler"] = args.handler_spec
    if args.no_register:
        flags["register"] = False
    try:
        file_values = _read_file(args.config) if args.config else {}
        config = config_from_mapping(load_settings(file_values, flags))
    except (OSError, ValueError, TypeError, MeshError) as exc:
        print(f"meshserve model serve: {exc}", file=sys.stderr)
        return 2
    consul = None
    if config.register:
        from meshserve.registry.config import ConsulConfig

        env_config = ConsulConfig.from_env()
        consul = (
            ConsulConfig(**{**env_config.__dict__, "address": config.consul_address})
            if args.consul or "consul" in file_values or "consul_address" in file_values
            else env_config
        )
    try:
        return asyncio.run(run(config, consul))
    except MeshError as exc:
        log.error("model service failed to start: %s", exc.message)
        return 1


def register(subparsers: Any) -> None:
    """Add the ``model`` command group (``model serve``) to the meshserve CLI."""
    model = subparsers.add_parser("model", help="model replicas")
    sub = model.add_subparsers(dest="model_command", required=True)
    p = sub.add_parser("serve", help="serve one ONNX model as a gRPC replica")
    p.add_argument("model", nargs="?", default=None, help="path of the .onnx file")
    p.add_argument("--config", default=None, help="YAML/TOML file with the same settings")
    p.add_argument("--name", default=None, help="model (and Consul service) name")
    p.add_argument("--version", default=None, help="model version (default 1)")
    p.add_argument(
        "--schema-version",
        type=int,
        default=None,
        help="schema number of the typed contract (package meshserve.models.NAME.vN; default "
        "1): bump it when the signature changes incompatibly",
    )
    p.add_argument(
        "--handler",
        dest="handler_spec",
        default=None,
        help="pre/post-processing handler module:Class",
    )
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="gRPC port (0 = free port)")
    p.add_argument("--batch-max", type=int, default=None, help="rows per batch (1 = off)")
    p.add_argument("--batch-wait-us", type=int, default=None, help="max batch wait (us)")
    p.add_argument("--queue-max", type=int, default=None, help="queued requests accepted")
    p.add_argument(
        "--max-concurrent-batches",
        type=int,
        default=None,
        help="session calls in flight at once (0 = auto: 1 on <= 2 cores, else 2)",
    )
    p.add_argument("--overload-pushback-ms", type=int, default=None)
    p.add_argument(
        "--inline-max-us",
        type=int,
        default=None,
        help="run batches expected to compute within this on the event loop (0 = never; 150)",
    )
    p.add_argument(
        "--max-in-flight-requests",
        type=int,
        default=None,
        help="admission: requests in flight before RESOURCE_EXHAUSTED (0 = off; 512)",
    )
    p.add_argument(
        "--max-in-flight-rows", type=int, default=None, help="admission: rows in flight (0 = off)"
    )
    p.add_argument(
        "--max-client-in-flight-requests",
        type=int,
        default=None,
        help="admission: requests in flight per client (0 = off)",
    )
    p.add_argument(
        "--client-id-metadata",
        default=None,
        help="admission: header naming the client (default: the connection's peer)",
    )
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (0 = auto)")
    p.add_argument("--inter-op-threads", type=int, default=None)
    p.add_argument(
        "--graph-optimization", choices=("disable", "basic", "extended", "all"), default=None
    )
    p.add_argument("--sha256", default=None, help="expected sha256 of the model file")
    p.add_argument("--consul", default=None, help="Consul host:port (default $CONSUL_HTTP_ADDR)")
    p.add_argument("--instance-id", default=None, help="Consul service id")
    p.add_argument("--no-register", action="store_true", help="do not register in Consul")
    p.add_argument("--metrics-port", type=int, default=None, help="0 = free port, -1 = off")
    p.add_argument(
        "--http-port", type=int, default=None, help="KServe V2 REST port: 0 = free port, -1 = off"
    )
    p.add_argument("--grace-s", type=float, default=None, help="drain time on SIGTERM")
    p.add_argument("--max-message-bytes", type=int, default=None)
    p.add_argument("--max-concurrent-rpcs", type=int, default=None)
    p.add_argument(
        "--max-pending-rpcs",
        type=int,
        default=None,
        help="calls waiting for the event loop before gRPC refuses them itself (0 = grpc default)",
    )
    p.add_argument("--max-elements", type=int, default=None, help="elements per input tensor")
    p.add_argument(
        "--gil-switch-interval-us", type=int, default=None, help="sys.setswitchinterval (us)"
    )
    p.add_argument("--tls-cert", default=None, help="serve TLS with this certificate (PEM)")
    p.add_argument("--tls-key", default=None, help="private key of --tls-cert (PEM)")
    p.add_argument("--tls-client-ca", default=None, help="require client certs from this CA")
    p.add_argument(
        "--tls-check-skip-verify",
        action="store_const",
        const=True,
        default=None,
        help="Consul's TLS health check skips certificate verification",
    )
    # `handler` is what the meshserve CLI dispatcher calls with the parsed args.
    p.set_defaults(handler=_serve)
