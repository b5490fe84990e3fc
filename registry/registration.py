"""Service registration as reconciliation: the desired registration is kept here and re-synced.

Like Consul's own anti-entropy (``agent/local/state.go``), `Registration` holds the instance it
wants registered and periodically checks that the agent still has it, registering it again when
not (a restarted dev agent forgets everything). Syncs are rate-limited, errors back off with
jitter, and nothing here ever raises into the host process after `start()`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshserve.errors import InvalidInputError, MeshError
from meshserve.registry.blocking import Backoff, Clock, RateLimiter, Sleep
from meshserve.registry.client import ConsulClient, duration
from meshserve.registry.config import ConsulConfig, join_host_port

__all__ = ["ReconcileOptions", "Registration", "ServiceInstance"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceInstance:
    """What to register: one instance of a service with a gRPC health check.

    The check is ``GRPC: <address>:<port>/<grpc_health_service>`` (the whole server when
    `grpc_health_service` is empty), run every `check_interval_s` with `check_timeout_s`;
    Consul drops the instance after `deregister_critical_after_s` of failing checks.
    """

    name: str
    instance_id: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict, hash=False)
    grpc_health_service: str = ""
    check_interval_s: float = 1.0
    check_timeout_s: float = 1.0
    deregister_critical_after_s: float = 60.0  # Consul enforces a 1 minute minimum
    # The instance serves TLS: Consul's check dials with TLS (verified against the agent's CA
    # unless `tls_skip_verify`).
    grpc_use_tls: bool = False
    tls_skip_verify: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.instance_id:
            raise InvalidInputError(
                f"service instance needs a name and an instance_id, got "
                f"name={self.name!r} instance_id={self.instance_id!r}"
            )
        if not 0 < self.port < 65536:
            raise InvalidInputError(
                f"service {self.name!r}: port {self.port} is not a bound port (expected 1-65535)"
            )
        if self.check_interval_s <= 0 or self.check_timeout_s <= 0:
            raise InvalidInputError(
                f"service {self.name!r}: check_interval_s and check_timeout_s must be > 0"
            )

    @property
    def grpc_target(self) -> str:
        """What Consul's gRPC check dials: ``host:port[/service]``."""
        target = join_host_port(self.address, self.port)
        return f"{target}/{self.grpc_health_service}" if self.grpc_health_service else target

    def check(self) -> dict[str, Any]:
        """The check definition sent to ``/v1/agent/service/register``."""
        return {
            "CheckID": f"service:{self.instance_id}",
            "Name": f"gRPC health of {self.name}",
            "GRPC": self.grpc_target,
            "Interval": duration(self.check_interval_s),
            "Timeout": duration(self.check_timeout_s),
            "DeregisterCriticalServiceAfter": duration(self.deregister_critical_after_s),
            "GRPCUseTLS": self.grpc_use_tls,
            "TLSSkipVerify": self.tls_skip_verify,
        }


@dataclass(frozen=True)
class ReconcileOptions:
    """`sync_interval_s`: time between checks that the agent still has the registration.
    `backoff_initial_s` / `backoff_max_s`: retry delays while Consul fails."""

    sync_interval_s: float = 2.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0


class Registration:
    """Keeps `instance` registered in the local Consul agent until `stop()`."""

    def __init__(
        self,
        config: ConsulConfig,
        instance: ServiceInstance,
        *,
        options: ReconcileOptions | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.instance = instance
        self.options = options or ReconcileOptions()
        self._client = ConsulClient(config)
        self._sleep = sleep
        self._limiter = RateLimiter(self.options.sync_interval_s, clock)
        self._backoff = Backoff(self.options.backoff_initial_s, self.options.backoff_max_s, rng=rng)
        self._task: asyncio.Task[None] | None = None
        self.registered = False
        self.registrations = 0  # how many times the instance was (re-)registered

    async def start(self) -> None:
        """Register now and keep it reconciled in the background.

        Raises InvalidInputError when Consul rejects the definition itself; an unreachable
        Consul is only logged (the background loop keeps trying).
        """
        if self._task is not None:
            return
        try:
            await self._register()
        except InvalidInputError:
            await self._client.close()
            raise
        except MeshError as exc:
            log.warning("registering %s failed, will retry: %s", self.instance.instance_id, exc)
        self._task = asyncio.create_task(
            self._reconcile_forever(), name=f"register-{self.instance.instance_id}"
        )

    async def stop(self, deregister: bool = True) -> None:
        """Stop reconciling and (by default) deregister; never raises for Consul errors."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if deregister:
            iid = self.instance.instance_id
            try:
                await self._client.call(
                    f"deregister service {iid!r}", lambda c: c.agent.service.deregister(iid)
                )
                self.registered = False
                log.info("deregistered %s", iid)
            except MeshError as exc:
                log.warning("deregistering %s failed: %s", iid, exc)
        await self._client.close()

    async def wait_passing(self, timeout_s: float, poll_s: float = 0.1) -> bool:
        """Wait until the catalog lists the instance as passing; False on timeout.

        Asks the health endpoint that discovery uses (not the agent's local check state, which
        reaches the catalog a moment later), so "ready" means "discoverable".
        """
        name, iid = self.instance.name, self.instance.instance_id
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                _, entries = await self._client.call(
                    f"read passing instances of {name!r}",
                    lambda c: c.health.service(name, passing=True),
                )
                if any(e.get("Service", {}).get("ID") == iid for e in entries or ()):
                    return True
            except MeshError as exc:
                log.debug("waiting for %s to pass: %s", iid, exc)
            await asyncio.sleep(poll_s)
        return False

    async def sync_once(self) -> bool:
        """Re-register when the agent lost the instance; True when it had to."""
        iid = self.instance.instance_id
        services = await self._client.call(
            f"read agent services (looking for {iid!r})", lambda c: c.agent.services()
        )
        if iid in (services or {}):
            self.registered = True
            return False
        log.warning("Consul agent lost registration %s; registering again", iid)
        await self._register()
        return True

    async def _register(self) -> None:
        inst = self.instance
        await self._client.call(
            f"register service {inst.name!r} id {inst.instance_id!r}",
            lambda c: c.agent.service.register(
                inst.name,
                service_id=inst.instance_id,
                address=inst.address,
                port=inst.port,
                tags=list(inst.tags),
                meta=dict(inst.meta),
                check=inst.check(),
                replace_existing_checks=True,
            ),
        )
        self.registered = True
        self.registrations += 1
        log.info(
            "registered %s (%s at %s:%d)", inst.instance_id, inst.name, inst.address, inst.port
        )

    async def _reconcile_forever(self) -> None:
        await self._limiter.acquire(self._sleep)
        while True:
            await self._limiter.acquire(self._sleep)
            try:
                await self.sync_once()
            except MeshError as exc:
                self.registered = False
                delay = self._backoff.next_delay_s()
                log.warning(
                    "reconciling %s failed (%d in a row), retrying in %.2fs: %s",
                    self.instance.instance_id, self._backoff.failures, delay, exc,
                )  # fmt: skip
                await self._sleep(delay)
                continue
            except Exception:  # a bug must not kill the host process's registration
                log.exception("reconciling %s crashed; continuing", self.instance.instance_id)
                await self._sleep(self._backoff.next_delay_s())
                continue
            self._backoff.reset()
