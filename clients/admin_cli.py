"""Client commands of the ``meshserve`` CLI, over the SDK:

    meshserve plans apply FILE [--dry-run] [--expected-version N] [--breaking-change]
    meshserve plans list | get NAME [--version N] | delete NAME | rollback NAME VERSION
    meshserve models [NAME]
    meshserve call PLAN --input name=file.npy|file.json|JSON [--routing-key K] [--attr k=v]
                   [--http [--http-url URL]] [--data-token-file PATH]
    meshserve feedback REQUEST_ID (--reward R | --label L) [--feedback-token TOKEN]
    meshserve stats
    meshserve shadows [--plan P] [--step S] [--candidate C] [--limit N]
    meshserve learning [reset (--plan P --step S | --learner L) | rollback LEARNER]
    meshserve proto export --plan NAME | --model NAME [--out DIR] [--stdout]

Common flags: ``--orchestrator HOST:PORT[,HOST:PORT...]`` or ``consul://HOST:PORT`` (a group:
calls are balanced and fail over; $MESHSERVE_ORCHESTRATOR, else the local mesh of
``meshserve up``), ``--token T`` ($MESHSERVE_ADMIN_TOKEN), ``--tls-ca PEM``, ``--timeout-s``.
Failures print ``error: CODE: message`` on stderr and exit 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format

from meshserve.clients.http_call import DATA_TOKEN_ENV, execute_http
from meshserve.clients.local_state import add_token_flags, load_state, orchestrator_target
from meshserve.clients.sdk import MeshServeClient
from meshserve.credentials import read_token
from meshserve.errors import MeshError
from meshserve.v1 import admin_pb2

__all__ = ["parse_input", "register", "render_table"]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table with left-aligned columns."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_input(spec: str) -> tuple[str, np.ndarray]:
    """``name=file.npy``, ``name=file.json`` or ``name=<JSON array>`` (floats become float32)."""
    name, sep, value = spec.partition("=")
    if not sep or not name or not value:
        raise ValueError(f"--input {spec!r}: expected name=file.npy, name=file.json or name=JSON")
    if value.endswith(".npy"):
        return name, np.load(value, allow_pickle=False)
    text = Path(value).read_text() if value.endswith(".json") else value
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--input {name}: not valid JSON ({exc})") from None
    arr = np.asarray(data)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    return name, arr


def _http_url(args: argparse.Namespace) -> str:
    url = args.http_url or os.environ.get("MESHSERVE_HTTP_URL", "")
    if not url:
        state = load_state(Path(args.state_dir))
        url = state.orchestrator_http if state is not None else ""
    if not url:
        raise ValueError("no HTTP ingress: pass --http-url URL (or set MESHSERVE_HTTP_URL)")
    return url


def _read_text(path: str) -> str:
    return Path(path).read_text()


def _connection(args: argparse.Namespace) -> tuple[str, str]:
    address, token = orchestrator_target(args.orchestrator, args.token_file, Path(args.state_dir))
    if not address:
        raise ValueError(
            "no orchestrator: pass --orchestrator HOST:PORT (or set MESHSERVE_ORCHESTRATOR), "
            "or start a local mesh with `meshserve up`"
        )
    return address, token


def _run(
    command: Callable[[MeshServeClient, argparse.Namespace], Awaitable[str]],
) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        try:
            address, token = _connection(args)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

        async def go() -> str:
            data_token = read_token(getattr(args, "data_token_file", ""), DATA_TOKEN_ENV)
            async with MeshServeClient(
                address,
                token=token,
                data_token=data_token,
                tls_ca_file=args.tls_ca,
                timeout_s=args.timeout_s,
            ) as client:
                return await command(client, args)

        try:
            print(asyncio.run(go()))
        except MeshError as exc:  # the server's status, or a local check of the same kind
            print(f"error: {exc.code.name}: {exc.message}", file=sys.stderr)
            return 1
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    return handler


async def _plans_apply(client: MeshServeClient, args: argparse.Namespace) -> str:
    text = _read_text(args.file)
    name, version = await client.apply_plan(
        text,
        expected_version=args.expected_version,
        dry_run=args.dry_run,
        breaking_change=args.breaking_change,
    )
    if args.dry_run:
        return f"plan {name} is valid (latest stored version: {version or 'none'})"
    return f"plan {name} applied as version {version}"


async def _plans_list(client: MeshServeClient, args: argparse.Namespace) -> str:
    plans = await client.list_plans()
    rows = [
        (p.name, p.kind, p.active_version, ",".join(str(v) for v in p.versions), p.description)
        for p in plans
    ]
    return render_table(("PLAN", "KIND", "ACTIVE", "VERSIONS", "DESCRIPTION"), rows)


async def _plans_get(client: MeshServeClient, args: argparse.Namespace) -> str:
    plan = await client.get_plan(args.name, args.version)
    return json_format.MessageToJson(plan, preserving_proto_field_name=True)


async def _plans_delete(client: MeshServeClient, args: argparse.Namespace) -> str:
    return f"deleted {await client.delete_plan(args.name)} versions of plan {args.name}"


async def _plans_rollback(client: MeshServeClient, args: argparse.Namespace) -> str:
    version = await client.rollback_plan(args.name, args.version)
    return f"plan {args.name}: version {args.version} is active again as version {version}"


async def _models(client: MeshServeClient, args: argparse.Namespace) -> str:
    rows: list[tuple[Any, ...]] = []
    for model in await client.list_models(args.name):
        if not model.endpoints:
            rows.append((model.name, ",".join(model.versions), "-", "-", "none", 0, "", 0))
        for e in model.endpoints:
            rows.append(
                (
                    model.name, e.version, e.instance_id, e.address, e.state, e.in_flight,
                    f"{e.latency_ewma_ms:.2f}", f"{e.requests_total}/{e.failures_total}",
                )
            )  # fmt: skip
    headers = (
        "MODEL",
        "VERSION",
        "INSTANCE",
        "ADDRESS",
        "STATE",
        "IN-FLIGHT",
        "EWMA ms",
        "REQ/FAIL",
    )
    return render_table(headers, rows)


async def _call(client: MeshServeClient, args: argparse.Namespace) -> str:
    inputs = dict(parse_input(spec) for spec in args.input or ())
    attributes = {}
    for spec in args.attr or ():
        key, sep, value = spec.partition("=")
        if not sep:
            raise ValueError(f"--attr {spec!r}: expected key=value")
        attributes[key] = value
    if args.http:
        result = await execute_http(
            _http_url(args),
            args.plan,
            inputs,
            routing_key=args.routing_key,
            attributes=attributes,
            data_token=read_token(args.data_token_file, DATA_TOKEN_ENV),
            timeout_s=args.timeout_s,
        )
    else:
        result = await client.execute(
            args.plan, inputs, routing_key=args.routing_key, attributes=attributes
        )
    lines = [
        f"plan {result.plan} v{result.plan_version}  request {result.request_id}  "
        f"{result.latency_ms:.2f} ms" + (f"  trace {result.trace_id}" if result.trace_id else "")
    ]
    for step, branch in sorted(result.decisions.items()):
        lines.append(f"decision {step} -> {branch}")
    if result.feedback_token:
        token = base64.urlsafe_b64encode(result.feedback_token).decode()
        lines.append(f"feedback-token {token}")
    for name, arr in sorted(result.outputs.items()):
        if args.output_dir:
            path = Path(args.output_dir) / f"{name}.npy"
            np.save(path, arr)
            lines.append(f"{name}: {arr.dtype} {list(arr.shape)} -> {path}")
        else:
            lines.append(
                f"{name}: {arr.dtype} {list(arr.shape)}\n{np.array2string(arr, threshold=50)}"
            )
    return "\n".join(lines)


async def _feedback(client: MeshServeClient, args: argparse.Namespace) -> str:
    try:
        token = base64.urlsafe_b64decode(args.feedback_token) if args.feedback_token else b""
    except (binascii.Error, ValueError):
        raise ValueError(
            f"--feedback-token {args.feedback_token[:40]!r}: expected the base64 text "
            "`meshserve call` printed"
        ) from None
    outcome = await client.rate(args.request_id, reward=args.reward, label=args.label, token=token)
    if outcome.duplicate:
        return (
            f"request {outcome.request_id}: already applied to {', '.join(outcome.already_applied)}"
        )
    return f"request {outcome.request_id}: applied to {', '.join(outcome.applied)}"


async def _stats(client: MeshServeClient, args: argparse.Namespace) -> str:
    stats = await client.stats()
    out = [
        f"orchestrator {stats.instance_id}  leader={stats.leader}  retries={stats.retries_total}  "
        f"ejections={stats.ejections_total}  no-endpoint={stats.no_endpoint_failures_total}"
    ]
    if stats.learning_digest:
        out.append(
            f"learning digest {stats.learning_digest[:16]}  feedback applied="
            f"{stats.feedback_applied_total} duplicates={stats.feedback_duplicates_total}"
        )
    rows: list[tuple[Any, ...]] = [
        (
            p.plan, p.latency.count, p.latency.errors, f"{p.latency.p50_ms:.2f}",
            f"{p.latency.p99_ms:.2f}", " ".join(f"{k}={v}" for k, v in sorted(p.decisions.items())),
        )
        for p in stats.plans
    ]  # fmt: skip
    out += ["", render_table(("PLAN", "COUNT", "ERRORS", "P50 ms", "P99 ms", "DECISIONS"), rows)]
    if stats.shadows:
        out += ["", _shadow_table(stats.shadows)]
    if stats.bandits:
        rows = [
            (b.plan, b.step, a.context or "-", a.arm, a.pulls, f"{a.reward_sum:.2f}")
            for b in stats.bandits
            for a in b.arms
        ]
        out += ["", render_table(("PLAN", "STEP", "CONTEXT", "ARM", "PULLS", "REWARD"), rows)]
    return "\n".join(out)


async def _proto_export(client: MeshServeClient, args: argparse.Namespace) -> str:
    info = await client.contract_info(plan=args.plan, model=args.model)
    if args.stdout:
        return info.proto_text.rstrip("\n")
    path = Path(args.out) / info.file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(info.proto_text)
    return (
        f"{path}  ({info.kind} {info.name}, service {info.service}, schema v"
        f"{info.schema_version}, sha256 {info.fingerprint[:16]}...)"
    )


def _shadow_table(shadows: Sequence[admin_pb2.ShadowStats]) -> str:
    rows = [
        (
            s.plan, s.step, s.candidate or "-", s.comparison or "label", s.compared, s.agreed,
            f"{s.agreement_rate:.3f}" if s.compared else "-", s.candidate_errors,
            f"{s.candidate_latency_p50_ms - s.primary_latency_p50_ms:+.2f}",
            f"{s.candidate_latency_p99_ms - s.primary_latency_p99_ms:+.2f}",
        )
        for s in shadows
    ]  # fmt: skip
    headers = ("PLAN", "STEP", "CANDIDATE", "COMPARISON", "ROWS", "AGREED", "RATE", "CAND ERR",
               "ΔP50 ms", "ΔP99 ms")  # fmt: skip
    return render_table(headers, rows)


async def _shadows(client: MeshServeClient, args: argparse.Namespace) -> str:
    stats = await client.stats()
    shadows = [
        s for s in stats.shadows
        if (not args.plan or s.plan == args.plan) and (not args.step or s.step == args.step)
    ]  # fmt: skip
    found = await client.shadow_disagreements(args.plan, args.step, args.candidate, args.limit)
    rows = [
        (d.plan, d.step, d.candidate, d.request_id, d.row, d.primary_value, d.candidate_value,
         f"{d.distance:.4g}")
        for d in found
    ]  # fmt: skip
    headers = ("PLAN", "STEP", "CANDIDATE", "REQUEST", "ROW", "PRIMARY", "CANDIDATE OUT", "DIST")
    return "\n".join(
        [_shadow_table(shadows), "", f"disagreements ({len(found)}):", render_table(headers, rows)]
    )


async def _learning(client: MeshServeClient, args: argparse.Namespace) -> str:
    stats = await client.stats()
    out = [
        f"orchestrator {stats.instance_id}  leader={stats.leader}  learning digest "
        f"{stats.learning_digest[:16] or '-'}  feedback applied={stats.feedback_applied_total} "
        f"duplicates={stats.feedback_duplicates_total}"
    ]
    rows: list[tuple[Any, ...]] = [
        (b.plan, b.step, a.context or "-", a.arm, a.pulls, round(a.alpha + a.beta - 2),
         f"{a.reward_sum:.2f}")
        for b in stats.bandits
        for a in b.arms
    ]  # fmt: skip
    out += ["", render_table(("PLAN", "STEP", "CONTEXT", "ARM", "PULLS", "REWARDS", "SUM"), rows)]
    rows = [
        (item.name, item.updates, item.deployed_version or "-", f"{item.holdout_accuracy:.3f}")
        for item in stats.learners
    ]
    out += ["", render_table(("LEARNER", "UPDATES", "DEPLOYED", "HOLDOUT"), rows)]
    return "\n".join(out)


async def _learning_reset(client: MeshServeClient, args: argparse.Namespace) -> str:
    if not args.learner and not (args.plan and args.step):
        raise ValueError("learning reset: pass --plan and --step (a bandit) or --learner")
    existed = await client.reset_learning(plan=args.plan, step=args.step, learner=args.learner)
    what = f"learner {args.learner}" if args.learner else f"bandit {args.plan}/{args.step}"
    return f"{what}: reset" if existed else f"{what}: nothing was stored"


async def _learning_rollback(client: MeshServeClient, args: argparse.Namespace) -> str:
    version = await client.rollback_learner(args.learner)
    return f"learner {args.learner}: {version} is deployed again"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--orchestrator",
        default="",
        metavar="TARGET",
        help="HOST:PORT, several comma-separated, or consul://HOST:PORT (balanced, fail over)",
    )
    add_token_flags(parser)
    parser.add_argument("--tls-ca", default="", help="CA certificate (PEM) for a TLS orchestrator")
    parser.add_argument("--state-dir", default=".meshserve", help="local mesh from `meshserve up`")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="deadline of each call")


def register(subparsers: Any) -> None:
    """Add ``plans``, ``models``, ``call``, ``feedback``, ``stats``, ``shadows``, ``learning``
    and ``proto`` to the meshserve CLI."""
    plans = subparsers.add_parser("plans", help="apply, list, get, delete, roll back plans")
    sub = plans.add_subparsers(dest="plans_command", required=True)
    p = sub.add_parser("apply", help="validate and store a plan file (YAML or JSON)")
    p.add_argument("file")
    p.add_argument("--dry-run", action="store_true", help="validate only")
    p.add_argument("--expected-version", type=int, default=0, help="check-and-set on the latest")
    p.add_argument(
        "--breaking-change",
        action="store_true",
        help="accept a typed contract incompatible with the active version's (schema + 1)",
    )
    p.set_defaults(handler=_run(_plans_apply))
    p_list = sub.add_parser("list", help="plans with their versions")
    p_list.set_defaults(handler=_run(_plans_list))
    p_get = sub.add_parser("get", help="a plan version as JSON")
    p_get.add_argument("name")
    p_get.add_argument("--version", type=int, default=0, help="0 = active")
    p_get.set_defaults(handler=_run(_plans_get))
    p_del = sub.add_parser("delete", help="delete every version of a plan")
    p_del.add_argument("name")
    p_del.set_defaults(handler=_run(_plans_delete))
    p_rb = sub.add_parser("rollback", help="make an earlier version active again")
    p_rb.add_argument("name")
    p_rb.add_argument("version", type=int)
    p_rb.set_defaults(handler=_run(_plans_rollback))
    for parser in (p, p_list, p_get, p_del, p_rb):
        _common(parser)

    models = subparsers.add_parser("models", help="models, endpoints, health, load")
    models.add_argument("name", nargs="?", default="")
    models.set_defaults(handler=_run(_models))
    _common(models)

    call = subparsers.add_parser("call", help="execute a plan once")
    call.add_argument("plan")
    call.add_argument("--input", action="append", metavar="NAME=FILE|JSON", help="repeatable")
    call.add_argument("--routing-key", default="")
    call.add_argument("--attr", action="append", metavar="KEY=VALUE", help="request attribute")
    call.add_argument("--output-dir", default="", help="write outputs as NAME.npy here")
    call.add_argument(
        "--http",
        action="store_true",
        help="call over the orchestrator's HTTP/JSON ingress (URL from --http-url, "
        "$MESHSERVE_HTTP_URL or the local mesh) instead of gRPC",
    )
    call.add_argument("--http-url", default="", help="base URL of the HTTP ingress")
    call.add_argument(
        "--data-token-file",
        default="",
        metavar="PATH",
        help=f"data-plane token file (else ${DATA_TOKEN_ENV})",
    )
    call.set_defaults(handler=_run(_call))
    _common(call)

    proto = subparsers.add_parser("proto", help="typed .proto of plans and models")
    proto_sub = proto.add_subparsers(dest="proto_command", required=True)
    export = proto_sub.add_parser("export", help="write the .proto of a plan's or model's service")
    which = export.add_mutually_exclusive_group(required=True)
    which.add_argument("--plan", default="", help="plan name (its active version)")
    which.add_argument("--model", default="", help="model name (one of its replicas)")
    export.add_argument("--out", default=".", help="folder; the file goes to its proto path")
    export.add_argument("--stdout", action="store_true", help="print the .proto instead")
    export.set_defaults(handler=_run(_proto_export))
    _common(export)

    fb = subparsers.add_parser("feedback", help="rate an earlier call (reward or label)")
    fb.add_argument("request_id")
    signal = fb.add_mutually_exclusive_group(required=True)
    signal.add_argument("--reward", type=float, help="reward in [0, 1] for bandit steps")
    signal.add_argument("--label", type=int, help="true class label for online learners")
    fb.add_argument("--feedback-token", default="", help="the token `meshserve call` printed")
    fb.set_defaults(handler=_run(_feedback))
    _common(fb)

    learning = subparsers.add_parser(
        "learning", help="bandits and learners: list, reset, roll back"
    )
    learning.set_defaults(handler=_run(_learning))
    _common(learning)
    lsub = learning.add_subparsers(dest="learning_command")
    reset = lsub.add_parser("reset", help="forget what a bandit step or a learner learned")
    reset.add_argument("--plan", default="")
    reset.add_argument("--step", default="")
    reset.add_argument("--learner", default="")
    reset.set_defaults(handler=_run(_learning_reset))
    back = lsub.add_parser("rollback", help="send a learner's traffic back to its standby version")
    back.add_argument("learner")
    back.set_defaults(handler=_run(_learning_rollback))
    for parser in (reset, back):
        _common(parser)

    stats = subparsers.add_parser("stats", help="plan latency, decisions, shadows, bandits")
    stats.set_defaults(handler=_run(_stats))
    _common(stats)

    shadows = subparsers.add_parser(
        "shadows", help="shadow/canary agreement, latency deltas and disagreeing requests"
    )
    shadows.add_argument("--plan", default="")
    shadows.add_argument("--step", default="")
    shadows.add_argument("--candidate", default="", help="e.g. mlp@2")
    shadows.add_argument("--limit", type=int, default=20, help="disagreements shown (0 = all)")
    shadows.set_defaults(handler=_run(_shadows))
    _common(shadows)
