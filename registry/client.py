"""One asyncio Consul HTTP client per component, with errors mapped onto meshserve's tree.

py-consul's ``consul.aio.Consul`` does the HTTP work. This wrapper creates it lazily inside the
running loop, pins the ACL token to the config (py-consul would prefer $CONSUL_HTTP_TOKEN),
bounds every call with a timeout and turns library/transport errors into
`RegistryUnavailableError`, `PermissionDeniedError` or `InvalidInputError`.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import consul
import consul.aio

from meshserve.errors import InvalidInputError, MeshError, NotFoundError, PermissionDeniedError
from meshserve.registry.config import ConsulConfig
from meshserve.registry.errors import RegistryUnavailableError

__all__ = ["ConsulClient", "duration", "parse_index"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def duration(seconds: float) -> str:
    """A Consul duration string (``"1500ms"``) for a number of seconds."""
    return f"{max(0, round(seconds * 1000))}ms"


class ConsulClient:
    """A lazily created ``consul.aio.Consul`` for `config`; call `close()` when done."""

    def __init__(self, config: ConsulConfig) -> None:
        self.config = config
        self._consul: consul.aio.Consul | None = None

    def _client(self) -> consul.aio.Consul:
        if self._consul is None:
            cfg = self.config
            host, port = cfg.host_port()
            verify: bool | str = cfg.ca_file if (cfg.verify and cfg.ca_file) else cfg.verify
            cert: tuple[str, str] | str | None = None
            if cfg.cert_file:
                cert = (cfg.cert_file, cfg.key_file) if cfg.key_file else cfg.cert_file
            with warnings.catch_warnings():
                # py-consul still passes aiohttp's deprecated ssl_context/verify_ssl arguments.
                warnings.filterwarnings("ignore", "ssl_context is deprecated", DeprecationWarning)
                warnings.filterwarnings("ignore", "verify_ssl is deprecated", DeprecationWarning)
                client = consul.aio.Consul(
                    host=host,
                    port=port,
                    scheme=cfg.scheme,
                    dc=cfg.datacenter or None,
                    verify=verify,
                    cert=cert,
                )
            client.token = cfg.token or None  # the config wins over $CONSUL_HTTP_TOKEN
            self._consul = client
        return self._consul

    def blocking_timeout_s(self, wait_s: float) -> float:
        """Time limit of a blocking query held up to `wait_s` (the agent adds up to wait/16)."""
        return self.config.request_timeout_s + wait_s * 1.1

    async def call(
        self,
        what: str,
        fn: Callable[[consul.aio.Consul], Awaitable[T]],
        *,
        timeout_s: float | None = None,
    ) -> T:
        """Run ``fn(client)`` within `timeout_s` (default: the config's request timeout).

        `what` names the operation in error messages, e.g. ``"get key meshserve/plans/x"``.
        """
        limit = self.config.request_timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(limit):
                return await fn(self._client())
        except MeshError:
            raise
        except consul.ACLPermissionDenied as exc:
            raise PermissionDeniedError(
                f"Consul denied {what}: {_short(exc)} (check the ACL token, CONSUL_HTTP_TOKEN)"
            ) from exc
        except consul.ACLDisabled as exc:
            raise PermissionDeniedError(f"Consul refused {what}: {_short(exc)}") from exc
        except consul.NotFound as exc:
            raise NotFoundError(f"Consul found nothing for {what}: {_short(exc)}") from exc
        except consul.ConsulException as exc:
            text = _short(exc)
            if text.startswith("400") or text.startswith("413"):
                raise InvalidInputError(f"Consul rejected {what}: {text}") from exc
            raise RegistryUnavailableError(
                f"Consul at {self.config.address} failed {what}: {text}"
            ) from exc
        except TimeoutError as exc:
            raise RegistryUnavailableError(
                f"Consul at {self.config.address} did not answer {what} within {limit:.1f}s"
            ) from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise RegistryUnavailableError(
                f"Consul at {self.config.address} unreachable for {what}: {_short(exc)}"
            ) from exc

    async def __aenter__(self) -> ConsulClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        client, self._consul = self._consul, None
        if client is not None:
            try:
                await client.close()
            except Exception:  # closing must never fail a shutdown
                log.debug("closing Consul client failed", exc_info=True)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def parse_index(raw: Any) -> int:
    """The integer value of an X-Consul-Index header (0 when missing or malformed)."""
    try:
        return int(raw)
    except (TypeError, ValueError):
        return 0
