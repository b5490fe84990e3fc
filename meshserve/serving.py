"""The process edge shared by every meshserve server: serve until a signal, then drain."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Protocol

__all__ = [
    "CLIENT_KEEPALIVE_MS",
    "HTTP_READY_PREFIX",
    "READY_PREFIX",
    "serve_until_signal",
    "server_options",
]

log = logging.getLogger(__name__)

# Printed once a server serves (and is registered); tests and `meshserve up` wait for it.
READY_PREFIX = "MESHSERVE_READY"
# Printed before the ready line by a server that also serves HTTP (`Bound.http_port` >= 0).
HTTP_READY_PREFIX = "MESHSERVE_HTTP"

# meshserve's own clients ping idle long-lived streams this often (grpc.keepalive_time_ms).
CLIENT_KEEPALIVE_MS = 10_000


def server_options(max_message_bytes: int, *, reuse_port: bool = False) -> list[tuple[str, int]]:
    """gRPC server options every meshserve server shares.

    Message size limits both ways; no port sharing (a second server must fail to bind) unless
    `reuse_port` (the workers of ``orchestrator serve --workers N`` share one port); and
    keepalive pings from clients accepted every `CLIENT_KEEPALIVE_MS / 2` even on a stream with
    no data in flight. gRPC's default (5 minutes) makes a server answer the orchestrator's
    10 s pings on an idle InferStream with GOAWAY "too many pings" after two strikes, which
    broke the next call after about 2.5 minutes without traffic.
    """
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", int(reuse_port)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", CLIENT_KEEPALIVE_MS // 2),
    ]


class _Bound(Protocol):
    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


class Server(Protocol):
    async def start(self) -> _Bound: ...

    async def stop(self, grace_s: float | None = None) -> None: ...


async def serve_until_signal(server: Server, grace_s: float) -> int:
    """Start `server`, print the ready line, wait for SIGTERM/SIGINT, drain; 0 on a clean stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        bound = await server.start()
    except BaseException:
        await server.stop(grace_s=0)
        raise
    http_port = getattr(bound, "http_port", -1)
    if http_port >= 0:
        sys.stdout.write(f"{HTTP_READY_PREFIX} {bound.host}:{http_port}\n")
    sys.stdout.write(f"{READY_PREFIX} {bound.host}:{bound.port}\n")
    sys.stdout.flush()
    await stop.wait()
    log.info("signal received: draining (grace %.1fs)", grace_s)
    await server.stop()
    return 0
