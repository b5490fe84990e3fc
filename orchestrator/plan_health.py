"""``grpc.health.v1`` statuses for plan names, kept in step with the plan store.

A health check for a plan's name (``Check(service="digits-pipeline")``) answers SERVING while the
plan has an active version on this orchestrator and NOT_SERVING once it was deleted (the health
protocol has no way to forget a name; NOT_FOUND stays for names never seen). One task follows
the store's change notifications, so bursts of applies cost one pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

__all__ = ["PlanHealth"]

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class PlanHealth:
    """Mirrors `names()` (the store's plan names) into `health` (see the module docstring)."""

    def __init__(
        self, health: health_aio.HealthServicer, names: Callable[[], Iterable[str]]
    ) -> None:
        self._health = health
        self._names = names
        self._serving: set[str] = set()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def changed(self) -> None:
        """Store callback: the plan set may have changed."""
        self._changed.set()

    def start(self) -> None:
        self._changed.set()
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="plan-health")

    async def sync(self) -> None:
        """Bring the statuses in line with the store now."""
        current = set(self._names())
        for name in sorted(current - self._serving):
            await self._health.set(name, _SERVING)
        for name in sorted(self._serving - current):
            await self._health.set(name, _NOT_SERVING)
        self._serving = current

    async def _follow(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self.sync()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
