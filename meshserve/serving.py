"""The process edge shared by every meshserve server: serve until a signal, then drain."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Protocol

__all__ = ["READY_PREFIX", "serve_until_signal"]

log = logging.getLogger(__name__)

# Printed once a server serves (and is registered); tests and `meshserve up` wait for it.
READY_PREFIX = "MESHSERVE_READY"


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
    sys.stdout.write(f"{READY_PREFIX} {bound.host}:{bound.port}\n")
    sys.stdout.flush()
    await stop.wait()
    log.info("signal received: draining (grace %.1fs)", grace_s)
    await server.stop()
    return 0
