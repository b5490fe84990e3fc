"""``meshserve trace``: look at recent traces held by an orchestrator.

    meshserve trace TRACE_ID            waterfall of one trace
    meshserve trace --slowest 10        the slowest recent requests

Spans come from the orchestrator's in-memory buffer (Admin.GetTrace / Admin.ListTraces). When a
JSON-lines trace directory is given (``--trace-dir`` or $MESHSERVE_TRACE_DIR, where every
process writes its spans), spans from every process's file are merged in, so model-side spans
(``modelsvc.request``, ``modelsvc.batch``...) show up too. Without ``--orchestrator`` the
address and token of the local mesh (``meshserve up``, ``--state-dir``) are used.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc

from meshserve.clients.local_state import add_token_flags, orchestrator_target
from meshserve.clients.sdk import MeshServeClient
from meshserve.errors import MeshError
from meshserve.telemetry.convert import spans_from_proto, summaries_from_proto
from meshserve.telemetry.jsonl import read_spans, read_trace
from meshserve.telemetry.records import SpanRecord, TraceSummary, start_order, summarize
from meshserve.telemetry.render import render_slowest, render_waterfall

__all__ = ["fetch_slowest", "fetch_trace", "register"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def _call(
    address: str,
    token: str,
    timeout_s: float,
    method: Callable[[MeshServeClient], Awaitable[T]],
) -> T:
    async with MeshServeClient(address, token=token, timeout_s=timeout_s) as client:
        return await method(client)


def fetch_trace(
    trace_id: str,
    *,
    address: str = "",
    token: str = "",
    trace_dir: str = "",
    timeout_s: float = 5.0,
) -> list[SpanRecord]:
    """Spans of `trace_id` from the orchestrator at `address` and/or the files in `trace_dir`."""
    spans: dict[tuple[str, str], SpanRecord] = {}
    remote_error: MeshError | None = None
    if address:
        try:
            message = asyncio.run(_call(address, token, timeout_s, lambda c: c.get_trace(trace_id)))
            spans.update({(s.trace_id, s.span_id): s for s in spans_from_proto(message)})
        except MeshError as exc:
            if not trace_dir or exc.code not in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.UNAVAILABLE,
            ):
                raise
            remote_error = exc
    if trace_dir:
        spans.update({(s.trace_id, s.span_id): s for s in read_trace([trace_dir], trace_id)})
    if not spans and remote_error is not None:
        raise remote_error
    return sorted(spans.values(), key=start_order)


def fetch_slowest(
    n: int, *, address: str = "", token: str = "", trace_dir: str = "", timeout_s: float = 5.0
) -> list[TraceSummary]:
    """The `n` slowest recent traces: from the orchestrator, else from the files in `trace_dir`."""
    if address:
        message = asyncio.run(_call(address, token, timeout_s, lambda c: c.list_traces(n)))
        return summaries_from_proto(message)[:n]
    by_trace: dict[str, list[SpanRecord]] = {}
    for span in read_spans([trace_dir]):
        by_trace.setdefault(span.trace_id, []).append(span)
    summaries = [summarize(tid, spans) for tid, spans in by_trace.items()]
    ranked = sorted((s for s in summaries if s is not None), key=lambda s: -s.duration_ms)
    return ranked[:n]


def _cmd_trace(args: argparse.Namespace) -> int:
    trace_dir = args.trace_dir or os.environ.get("MESHSERVE_TRACE_DIR", "")
    address, token = orchestrator_target(args.orchestrator, args.token_file, Path(args.state_dir))
    if not address and not trace_dir:
        print(
            "error: no orchestrator to ask: pass --orchestrator HOST:PORT (and --token), "
            "--trace-dir DIR, or start a local mesh with `meshserve up`",
            file=sys.stderr,
        )
        return 2
    if trace_dir and not Path(trace_dir).is_dir():
        print(f"error: --trace-dir {trace_dir} is not a directory", file=sys.stderr)
        return 2
    common = {
        "address": address,
        "token": token,
        "trace_dir": trace_dir,
        "timeout_s": args.timeout_s,
    }
    try:
        if args.trace_id:
            spans = fetch_trace(args.trace_id.strip().lower(), **common)
            if not spans:
                print(f"error: trace {args.trace_id} has no spans in {trace_dir}", file=sys.stderr)
                return 1
            print(render_waterfall(args.trace_id.strip().lower(), spans, bar_width=args.width))
        else:
            print(render_slowest(fetch_slowest(args.slowest, **common)))
    except MeshError as exc:
        print(f"error: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    return 0


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {value}")
    return value


def register(subparsers: Any) -> None:
    """Add the ``trace`` command to the ``meshserve`` CLI."""
    parser = subparsers.add_parser(
        "trace",
        help="show a trace as a waterfall, or the slowest recent traces",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("trace_id", nargs="?", default="", help="32 hex characters")
    parser.add_argument(
        "--slowest", type=_non_negative, default=10, metavar="N", help="list the N slowest traces"
    )
    parser.add_argument("--orchestrator", default="", metavar="HOST:PORT", help="Admin address")
    add_token_flags(parser)
    parser.add_argument("--trace-dir", default="", help="JSON-lines span files of every process")
    parser.add_argument("--state-dir", default=".meshserve", help="local mesh from `meshserve up`")
    parser.add_argument("--timeout-s", type=float, default=5.0, help="deadline of each call")
    parser.add_argument("--width", type=int, default=40, help="width of the timeline bars")
    parser.set_defaults(handler=_cmd_trace)
