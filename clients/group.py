"""A group of orchestrators behind one client: balance across them, fail over when one dies.

Targets: ``"host:port"``, a comma-separated list ``"h1:p1,h2:p2"``, or
``"consul://HOST:PORT[/SERVICE]"`` (the passing instances of SERVICE, default
``meshserve-orchestrator``, re-read from Consul's health API every `refresh_s` and whenever
every known endpoint is down; while Consul is unreachable the last known set is kept).

Policy (`OrchestratorGroup.order`): round robin over the endpoints that are up; an endpoint whose
call failed with a connection-level status (UNAVAILABLE) is down for `down_s` and tried last, so
a call always has somewhere to go. A caller runs its attempts in that order inside one deadline
(`MeshServeClient._invoke`); which statuses are retried is the caller's choice per RPC (safe
ones only: see the SDK).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from meshserve.errors import InvalidInputError, MeshError, UnavailableError
from meshserve.tls import ClientTLS, open_channel
from meshserve.v1 import admin_pb2_grpc, orchestrator_pb2_grpc

__all__ = ["GroupEndpoint", "OrchestratorGroup", "parse_targets"]

log = logging.getLogger(__name__)

CONSUL_SCHEME = "consul://"
DEFAULT_SERVICE = "meshserve-orchestrator"


def parse_targets(target: str | Sequence[str]) -> tuple[tuple[str, ...], str, str]:
    """(static addresses, consul address, consul service) from a target (module docstring)."""
    items = [target] if isinstance(target, str) else list(target)
    addresses: list[str] = []
    consul, service = "", DEFAULT_SERVICE
    for item in items:
        for part in (p.strip() for p in item.split(",")):
            if not part:
                continue
            if part.startswith(CONSUL_SCHEME):
                consul, _, named = part[len(CONSUL_SCHEME) :].partition("/")
                service = named or DEFAULT_SERVICE
            else:
                addresses.append(part)
    if not addresses and not consul:
        raise InvalidInputError(
            f"orchestrator target {str(target)[:200]!r}: expected HOST:PORT, a comma-separated "
            "list of them, or consul://HOST:PORT[/SERVICE]"
        )
    return tuple(dict.fromkeys(addresses)), consul, service


@dataclass
class GroupEndpoint:
    """One orchestrator: its channel and stubs, and until when it counts as down."""

    target: str
    channel: grpc.aio.Channel
    orchestrator: orchestrator_pb2_grpc.OrchestratorAsyncStub
    admin: admin_pb2_grpc.AdminAsyncStub
    down_until: float = 0.0
    calls: int = field(default=0)


class OrchestratorGroup:
    """The orchestrators a client reaches (module docstring)."""

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        tls: ClientTLS | None = None,
        options: Sequence[tuple[str, Any]] = (),
        interceptors: Sequence[Any] = (),
        down_s: float = 5.0,
        refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.addresses, self.consul_address, self.service = parse_targets(target)
        self._tls = tls
        self._options = list(options)
        self._interceptors = list(interceptors)
        self.down_s = down_s
        self.refresh_s = refresh_s
        self._clock = clock
        self._endpoints: dict[str, GroupEndpoint] = {}
        self._next = 0
        self._refreshed_at: float | None = None
        for address in self.addresses:
            self._add(address)

    def _add(self, address: str) -> GroupEndpoint:
        endpoint = self._endpoints.get(address)
        if endpoint is None:
            channel = open_channel(
                address, self._tls, options=self._options, interceptors=self._interceptors
            )
            endpoint = GroupEndpoint(
                address,
                channel,
                orchestrator_pb2_grpc.OrchestratorStub(channel),
                admin_pb2_grpc.AdminStub(channel),
            )
            self._endpoints[address] = endpoint
        return endpoint

    @property
    def endpoints(self) -> list[GroupEndpoint]:
        return list(self._endpoints.values())

    async def order(self) -> list[GroupEndpoint]:
        """Every endpoint once, in the order to try them: up ones round robin, then down ones."""
        await self._maybe_refresh()
        endpoints = list(self._endpoints.values())
        if not endpoints:
            raise UnavailableError(
                f"no orchestrator of service {self.service!r} is passing its health check in "
                f"Consul at {self.consul_address}"
            )
        start = self._next % len(endpoints)
        self._next += 1
        rotated = endpoints[start:] + endpoints[:start]
        now = self._clock()
        return [e for e in rotated if e.down_until <= now] + sorted(
            (e for e in rotated if e.down_until > now), key=lambda e: e.down_until
        )

    def mark_down(self, endpoint: GroupEndpoint) -> None:
        endpoint.down_until = self._clock() + self.down_s

    def mark_up(self, endpoint: GroupEndpoint) -> None:
        endpoint.down_until = 0.0
        endpoint.calls += 1

    async def _maybe_refresh(self) -> None:
        if not self.consul_address:
            return
        now = self._clock()
        all_down = all(e.down_until > now for e in self._endpoints.values())
        due = self._refreshed_at is None or now - self._refreshed_at >= self.refresh_s
        if not (due or all_down):
            return
        self._refreshed_at = now
        try:
            found = await _passing_instances(self.consul_address, self.service)
        except MeshError as exc:  # Consul unreachable: keep using the endpoints we know
            if not self._endpoints:
                raise
            log.warning("orchestrator discovery in Consul failed, keeping %d: %s",
                        len(self._endpoints), exc)  # fmt: skip
            return
        for address in found:
            self._add(address)
        if found:  # keep the static ones and the last known set when Consul has none
            for address in [a for a in self._endpoints if a not in found]:
                if address not in self.addresses:
                    await self._endpoints.pop(address).channel.close()

    async def close(self) -> None:
        for endpoint in self._endpoints.values():
            await endpoint.channel.close()
        self._endpoints.clear()


async def _passing_instances(consul_address: str, service: str) -> list[str]:
    from meshserve.registry import ConsulConfig
    from meshserve.registry.client import ConsulClient
    from meshserve.registry.discovery import Endpoint

    config = ConsulConfig.from_env()
    client = ConsulClient(ConsulConfig(**{**config.__dict__, "address": consul_address}))
    try:
        _, entries = await client.call(
            f"health query for service {service!r}",
            lambda c: c.health.service(service, passing=True),
        )
    finally:
        await client.close()
    return sorted(Endpoint.from_health_entry(e).target for e in entries or ())
