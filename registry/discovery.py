"""Health-filtered discovery: a live set of *passing* instances of a service.

`EndpointWatcher` follows ``/v1/health/service/<name>?passing=true`` with blocking queries
(see `meshserve.registry.blocking`) and keeps the last good view, so callers keep routing from
its cache while Consul is down. `list_services` lists the catalog.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshserve.errors import DeadlineExceededError
from meshserve.registry.blocking import BlockingOptions, BlockingQuery, Clock, Sleep
from meshserve.registry.client import ConsulClient, duration, parse_index
from meshserve.registry.config import ConsulConfig, join_host_port

__all__ = ["Endpoint", "EndpointWatcher", "list_services"]

log = logging.getLogger(__name__)

VERSION_TAG_PREFIX = "version="
Callback = Callable[[tuple["Endpoint", ...]], Any]


@dataclass(frozen=True)
class Endpoint:
    """One passing instance of a service. `version` comes from the ``version=<V>`` tag,
    else from meta ``version``, else ""."""

    instance_id: str
    service: str
    address: str
    port: int
    version: str = ""
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def target(self) -> str:
        """``host:port`` for a gRPC channel (IPv6 hosts in brackets)."""
        return join_host_port(self.address, self.port)

    @classmethod
    def from_health_entry(cls, entry: Mapping[str, Any]) -> Endpoint:
        """An endpoint from one element of Consul's ``/v1/health/service`` answer."""
        svc = entry.get("Service") or {}
        node = entry.get("Node") or {}
        tags = tuple(svc.get("Tags") or ())
        meta = dict(svc.get("Meta") or {})
        version = next(
            (t[len(VERSION_TAG_PREFIX) :] for t in tags if t.startswith(VERSION_TAG_PREFIX)),
            meta.get("version", ""),
        )
        return cls(
            instance_id=str(svc.get("ID", "")),
            service=str(svc.get("Service", "")),
            address=str(svc.get("Address") or node.get("Address") or ""),
            port=int(svc.get("Port") or 0),
            version=version,
            tags=tags,
            meta=meta,
        )


class EndpointWatcher:
    """The passing instances of `service` (optionally only those tagged `tag`), kept current.

    `endpoints()` is the last good view (sorted by instance id); it survives a Consul outage.
    Subscribers are called with the new tuple on every change (an async callback is scheduled
    as a task); `wait_for` waits for a view that satisfies a predicate.

    An agent that comes back from an outage or a restart may answer before the services have
    re-registered (each `Registration` re-syncs within its interval, and a new check starts
    critical): an *empty* first answer after the query started over (`BlockingQuery.resets`:
    the agent was unreachable, or its index went backwards) does not replace a non-empty view at
    once. It is published after `resync_grace_s` unless a non-empty answer comes first, so a
    Consul restart does not take every replica away (`holding` is True meanwhile).
    """

    def __init__(
        self,
        config: ConsulConfig,
        service: str,
        tag: str | None = None,
        *,
        options: BlockingOptions | None = None,
        start_timeout_s: float = 5.0,
        resync_grace_s: float = 5.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self.tag = tag
        self.start_timeout_s = start_timeout_s
        self.resync_grace_s = resync_grace_s
        self._sleep = sleep
        self._held: asyncio.Task[None] | None = None  # publishes an empty view after the grace
        self._client = ConsulClient(config)
        self._query: BlockingQuery[tuple[Endpoint, ...]] = BlockingQuery(
            self._fetch,
            options,
            name=f"watch service {service!r}",
            clock=clock,
            sleep=sleep,
            rng=rng,
        )
        self._endpoints: tuple[Endpoint, ...] = ()
        self._loaded = False
        self._changed = asyncio.Condition()
        self._subscribers: list[Callback] = []
        self._task: asyncio.Task[None] | None = None
        self._callback_tasks: set[asyncio.Future[Any]] = set()

    @property
    def loaded(self) -> bool:
        """True once a first answer came from Consul."""
        return self._loaded

    @property
    def failures(self) -> int:
        """Failed queries so far (the view is then served from cache)."""
        return self._query.failures

    @property
    def last_success_at(self) -> float | None:
        """Clock time of the last good answer from Consul (None before the first)."""
        return self._query.last_success_at

    def endpoints(self) -> tuple[Endpoint, ...]:
        """The last good view of passing instances."""
        return self._endpoints

    @property
    def holding(self) -> bool:
        """True while an empty answer from a restarted agent waits out `resync_grace_s` (the
        view is then the one from before the restart)."""
        return self._held is not None

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call `callback(endpoints)` on every change; returns a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    async def start(self) -> None:
        """Start watching; waits up to `start_timeout_s` for a first answer (never raises for
        an unreachable Consul: the watch keeps retrying in the background)."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name=f"watch-{self.service}")
        try:
            await self.wait_for(lambda _: self._loaded, self.start_timeout_s)
        except DeadlineExceededError:
            log.warning(
                "no answer from Consul for service %r within %.1fs; watching in the background",
                self.service, self.start_timeout_s,
            )  # fmt: skip

    async def stop(self) -> None:
        """Stop watching and close the HTTP session (the last view stays readable)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        held, self._held = self._held, None
        if held is not None:
            held.cancel()
            await asyncio.gather(held, return_exceptions=True)
        for pending in list(self._callback_tasks):
            pending.cancel()
        await asyncio.gather(*self._callback_tasks, return_exceptions=True)
        await self._client.close()

    async def wait_for(
        self, predicate: Callable[[tuple[Endpoint, ...]], bool], timeout_s: float
    ) -> tuple[Endpoint, ...]:
        """Wait until `predicate(endpoints())` holds and return that view.

        Raises DeadlineExceededError naming the service and the last view after `timeout_s`.
        """
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: predicate(self._endpoints))
                return self._endpoints
        except TimeoutError:
            ids = [e.instance_id for e in self._endpoints]
            raise DeadlineExceededError(
                f"service {self.service!r}: endpoints {ids} did not reach the awaited state "
                f"within {timeout_s:.1f}s"
            ) from None

    async def _fetch(self, index: int, wait_s: float) -> tuple[int, tuple[Endpoint, ...]]:
        wait = duration(wait_s)
        returned, entries = await self._client.call(
            f"health query for service {self.service!r}",
            lambda c: c.health.service(
                self.service, index=index or None, wait=wait, passing=True, tag=self.tag
            ),
            timeout_s=self._client.blocking_timeout_s(wait_s),
        )
        endpoints = sorted(
            (Endpoint.from_health_entry(e) for e in entries or ()), key=lambda e: e.instance_id
        )
        return parse_index(returned), tuple(endpoints)

    async def _run(self) -> None:
        resets = self._query.resets
        async for endpoints in self._query:
            fresh, resets = self._query.resets != resets, self._query.resets
            if self._held is not None:
                self._held.cancel()
                self._held = None
            if fresh and not endpoints and self._endpoints and self.resync_grace_s > 0:
                log.warning(
                    "service %r: Consul started over and lists no passing instance; keeping the "
                    "last %d for up to %.1fs while registrations re-sync",
                    self.service, len(self._endpoints), self.resync_grace_s,
                )  # fmt: skip
                self._held = asyncio.create_task(
                    self._publish_later(endpoints), name=f"watch-{self.service}-grace"
                )
                continue
            await self._publish(endpoints)

    async def _publish_later(self, endpoints: tuple[Endpoint, ...]) -> None:
        await self._sleep(self.resync_grace_s)
        self._held = None
        await self._publish(endpoints)

    async def _publish(self, endpoints: tuple[Endpoint, ...]) -> None:
        first = not self._loaded
        async with self._changed:
            self._endpoints = endpoints
            self._loaded = True
            self._changed.notify_all()
        log.info(
            "service %r: %d passing endpoint(s)%s",
            self.service, len(endpoints), " (first view)" if first else "",
        )  # fmt: skip
        for callback in list(self._subscribers):
            self._notify(callback, endpoints)

    def _notify(self, callback: Callback, endpoints: tuple[Endpoint, ...]) -> None:
        try:
            result = callback(endpoints)
        except Exception:
            log.exception("endpoint subscriber %r failed", callback)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._callback_tasks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future[Any]) -> None:
        self._callback_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("endpoint subscriber failed", exc_info=task.exception())


async def list_services(config: ConsulConfig) -> dict[str, list[str]]:
    """Every service in the catalog with its tags (service name -> sorted tags)."""
    client = ConsulClient(config)
    try:
        _, services = await client.call("list services", lambda c: c.catalog.services())
    finally:
        await client.close()
    return {name: sorted(tags or []) for name, tags in sorted((services or {}).items())}
