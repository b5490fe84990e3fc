"""``meshserve orchestrator serve``: flags and the environment are read here and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from meshserve.credentials import add_refused_secret_flag, read_token
from meshserve.errors import MeshError
from meshserve.orchestrator.auth import DATA_TOKENS_ENV, DataPlaneAuth
from meshserve.tls import ClientTLS
from meshserve.web import HttpConfig

__all__ = ["register"]

log = logging.getLogger(__name__)

FEEDBACK_KEY_ENV = "MESHSERVE_FEEDBACK_KEYS"


def _python_plan(value: str) -> tuple[str, str]:
    name, sep, target = value.partition("=")
    if not sep or not name or ":" not in target:
        raise argparse.ArgumentTypeError(
            f"--python-plan {value!r}: expected NAME=package.module:attr"
        )
    return name, target


def _serve(args: argparse.Namespace) -> int:
    if args.workers < 1:
        log.error("orchestrator: --workers %d: expected at least 1", args.workers)
        return 2
    if args.workers > 1:
        return _serve_workers(args)
    from meshserve.orchestrator.datapath.config import load_datapath_config
    from meshserve.orchestrator.server import OrchestratorConfig, run
    from meshserve.registry import ConsulConfig

    try:
        datapath = load_datapath_config(args.datapath_config) if args.datapath_config else None
    except MeshError as exc:
        log.error("orchestrator: %s", exc.message)
        return 2
    try:
        admin_token = read_token(args.admin_token_file)
    except (OSError, ValueError) as exc:
        log.error("orchestrator: --admin-token-file: %s", exc)
        return 2
    feedback_stream = None
    if args.feedback_stream_subject:
        from meshserve.orchestrator.feedback_stream import FeedbackStreamConfig

        try:  # the URL may hold credentials: a secret file or the environment, never argv
            url = read_token(args.feedback_nats_url_file, "MESHSERVE_FEEDBACK_NATS_URL")
        except (OSError, ValueError) as exc:
            log.error("orchestrator: --feedback-nats-url-file: %s", exc)
            return 2
        feedback_stream = FeedbackStreamConfig(
            url=url or "nats://127.0.0.1:4222",
            subject=args.feedback_stream_subject,
            stream=args.feedback_stream_name,
            dead_letter_subject=args.feedback_dead_letter_subject
            or f"{args.feedback_stream_subject}.dead",
            durable=args.feedback_durable,
        )
    try:
        data_tokens = read_token(args.data_tokens_file, DATA_TOKENS_ENV)
        if data_tokens:
            DataPlaneAuth.parse(data_tokens, admin_token)  # refuse a bad file before starting
        http = HttpConfig(
            port=args.http_port,
            max_body_bytes=args.http_max_body_bytes,
            body_timeout_s=args.http_body_timeout_s,
        )
    except (OSError, ValueError) as exc:
        log.error("orchestrator: data-plane tokens / HTTP settings: %s", exc)
        return 2
    try:  # one key a line: the first signs feedback tokens, all verify (rotation)
        keys = read_token(args.feedback_key_file, FEEDBACK_KEY_ENV)
    except (OSError, ValueError) as exc:
        log.error("orchestrator: --feedback-key-file: %s", exc)
        return 2
    feedback_keys = tuple(line.strip() for line in keys.splitlines() if line.strip())
    if any(len(k) < 16 for k in feedback_keys):
        log.error("orchestrator: feedback keys must be at least 16 characters each")
        return 2
    env_consul = ConsulConfig.from_env()
    consul = (
        ConsulConfig(**{**env_consul.__dict__, "address": args.consul})
        if args.consul
        else env_consul
    )
    config = OrchestratorConfig(
        host=args.host,
        port=args.port,
        reuse_port=args.reuse_port,
        admin_token=admin_token,
        feedback_keys=feedback_keys,
        instance_id=args.instance_id,
        python_plans=tuple(args.python_plan or ()),
        python_modules=tuple(args.python_module or ()),
        plan_files=tuple(args.plans or ()),
        register=not args.no_register,
        metrics_port=args.metrics_port,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        tls_client_ca_file=args.tls_client_ca,
        tls_check_skip_verify=args.tls_check_skip_verify,
        model_tls=(
            ClientTLS(args.model_tls_ca, args.model_tls_cert, args.model_tls_key)
            if args.model_tls_ca or args.model_tls_cert
            else None
        ),
        grace_s=args.grace_s,
        default_timeout_s=args.default_timeout_s,
        learning=not args.no_learning,
        learning_dir=args.learning_dir,
        logic_modules=tuple(args.logic or ()),
        datapath=datapath,
        client_batching=None if args.client_batching is None else args.client_batching == "on",
        model_transport=args.model_transport or "",
        kv_prefix=args.kv_prefix or os.environ.get("MESHSERVE_KV_PREFIX", "") or "meshserve/",
        feedback_stream=feedback_stream,
        http=http,
        data_tokens=data_tokens,
    )
    if not data_tokens:
        log.warning(
            "no data-plane tokens (--data-tokens-file / $%s): Execute, Feedback and the HTTP "
            "ingress accept any caller",
            DATA_TOKENS_ENV,
        )
    if not config.admin_token:
        log.warning(
            "no admin token (--admin-token-file / $MESHSERVE_ADMIN_TOKEN): Admin RPCs are refused"
        )
    try:
        return asyncio.run(run(config, consul))
    except (MeshError, OSError) as exc:
        log.error("orchestrator failed to start: %s", getattr(exc, "message", exc))
        return 1


def _serve_workers(args: argparse.Namespace) -> int:
    from meshserve.orchestrator.workers import WorkerGroup, WorkersConfig

    cfg = WorkersConfig(
        workers=args.workers,
        host=args.host,
        port=args.port,
        instance_id=args.instance_id,
        metrics_port=args.metrics_port,
        http_port=args.http_port,
        grace_s=args.grace_s,
        argv=tuple(getattr(args, "argv", ())),
    )
    try:
        return WorkerGroup(cfg).run()
    except OSError as exc:
        log.error("orchestrator: cannot hold %s:%d for the workers: %s", args.host, args.port, exc)
        return 1


def register(subparsers: Any) -> None:
    """Add the ``orchestrator`` command group (``orchestrator serve``) to the meshserve CLI."""
    group = subparsers.add_parser("orchestrator", help="the plan-executing orchestrator")
    sub = group.add_subparsers(dest="orchestrator_command", required=True)
    serve = sub.add_parser("serve", help="serve Orchestrator and Admin over gRPC")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.add_argument("--port", type=int, default=0, help="port (0 = a free one)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="orchestrator processes serving the port (SO_REUSEPORT; each its own instance "
        "id <id>-w<i> and, with --metrics-port P, metrics port P+i)",
    )
    serve.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other processes of this user (set on --workers' workers)",
    )
    serve.add_argument("--consul", default="", help="Consul host:port (default $CONSUL_HTTP_ADDR)")
    serve.add_argument(
        "--admin-token-file",
        default="",
        metavar="PATH",
        help="file holding the bearer token Admin calls must present (else $MESHSERVE_ADMIN_TOKEN)",
    )
    add_refused_secret_flag(serve, "--admin-token", "--admin-token-file")
    serve.add_argument(
        "--data-tokens-file",
        default="",
        metavar="PATH",
        help="data-plane bearer tokens, one per line with the plans each may run "
        f"(else ${DATA_TOKENS_ENV}; none: the data plane is open)",
    )
    add_refused_secret_flag(serve, "--data-token", "--data-tokens-file", DATA_TOKENS_ENV)
    serve.add_argument(
        "--http-port", type=int, default=0, help="HTTP/JSON ingress port (0 = a free one, -1 = off)"
    )
    serve.add_argument(
        "--http-max-body-bytes",
        type=int,
        default=HttpConfig().max_body_bytes,
        help="largest HTTP request body (413 past it)",
    )
    serve.add_argument(
        "--http-body-timeout-s",
        type=float,
        default=HttpConfig().body_timeout_s,
        help="time a client has to send its whole body (408 past it)",
    )
    serve.add_argument(
        "--feedback-key-file",
        default="",
        metavar="PATH",
        help="file of HMAC keys for feedback tokens, one a line, the first signs (else "
        f"${FEEDBACK_KEY_ENV}, else a key shared through Consul KV); the same for the group",
    )
    serve.add_argument(
        "--kv-prefix",
        default="",
        help="Consul KV namespace of plans, traffic, learning state and the leader lock "
        "(default $MESHSERVE_KV_PREFIX, else meshserve/); orchestrators sharing it form one group",
    )
    serve.add_argument(
        "--python-plan",
        action="append",
        type=_python_plan,
        metavar="NAME=module:attr",
        help="serve a programmatic plan (repeatable); its module joins the python allow-list",
    )
    serve.add_argument(
        "--python-module",
        action="append",
        metavar="MODULE",
        help="allow python plan targets applied over Admin from MODULE (repeatable); targets "
        "from any other module are refused and never imported",
    )
    serve.add_argument(
        "--plans", action="append", metavar="FILE_OR_DIR", help="plan files to apply at start"
    )
    serve.add_argument("--instance-id", default="", help="Consul service id")
    serve.add_argument("--metrics-port", type=int, default=-1, help="/metrics port (-1 = off)")
    serve.add_argument("--tls-cert", default="", help="server certificate (PEM) to serve TLS")
    serve.add_argument("--tls-key", default="", help="server private key (PEM)")
    serve.add_argument("--tls-client-ca", default="", help="require client certs from this CA")
    serve.add_argument(
        "--tls-check-skip-verify",
        action="store_true",
        help="Consul's TLS health check skips certificate verification",
    )
    serve.add_argument("--model-tls-ca", default="", help="dial model replicas with TLS (CA)")
    serve.add_argument("--model-tls-cert", default="", help="client cert for model replicas")
    serve.add_argument("--model-tls-key", default="", help="client key for model replicas")
    serve.add_argument("--grace-s", type=float, default=5.0, help="drain time on SIGTERM")
    serve.add_argument(
        "--default-timeout-s", type=float, default=30.0, help="request budget without a deadline"
    )
    serve.add_argument(
        "--datapath-config",
        metavar="FILE",
        default="",
        help="YAML/JSON data path settings: batching, transport, retries, outlier ejection, "
        "per-model overrides (examples/datapath.yaml)",
    )
    serve.add_argument(
        "--client-batching",
        choices=("on", "off"),
        default=None,
        help="coalesce concurrent calls to a model into micro-batches, for every model "
        "(default: on, or as --datapath-config says)",
    )
    serve.add_argument(
        "--model-transport",
        choices=("stream", "unary"),
        default=None,
        help="how model calls travel: one bidi InferStream per replica, or unary Infer "
        "(default: stream, or as --datapath-config says)",
    )
    serve.add_argument("--no-register", action="store_true", help="do not register in Consul")
    serve.add_argument("--no-learning", action="store_true", help="no bandits/online learning")
    serve.add_argument(
        "--logic",
        action="append",
        metavar="MODULE",
        help="import a module that registers @logic functions (repeatable)",
    )
    serve.add_argument(
        "--learning-dir", default="", help="folder for learner model versions (default: a temp one)"
    )
    stream = serve.add_argument_group(
        "streaming feedback (NATS JetStream; URL from --feedback-nats-url-file or "
        "$MESHSERVE_FEEDBACK_NATS_URL, default nats://127.0.0.1:4222)"
    )
    stream.add_argument(
        "--feedback-stream-subject", default="", help="consume feedback from this subject"
    )
    stream.add_argument("--feedback-stream-name", default="MESHSERVE_FEEDBACK", help="stream")
    stream.add_argument(
        "--feedback-dead-letter-subject", default="", help="default: <subject>.dead"
    )
    stream.add_argument("--feedback-durable", default="meshserve-orchestrator", help="consumer")
    stream.add_argument("--feedback-nats-url-file", default="", help="file holding the NATS URL")
    serve.set_defaults(handler=_serve)
