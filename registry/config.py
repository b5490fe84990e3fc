"""Where Consul is and how to talk to it: address, ACL token, TLS, datacenter."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from meshserve.errors import InvalidInputError

__all__ = ["ConsulConfig", "join_host_port"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ConsulConfig:
    """How to reach a Consul agent over its HTTP API.

    `address` is ``host:port`` (a ``http://`` or ``https://`` prefix also sets `scheme`).
    `token` is sent as the ``X-Consul-Token`` header when not empty. `ca_file` / `cert_file` /
    `key_file` / `verify` are handed to the TLS layer unchanged. `datacenter` empty means the
    agent's own. `request_timeout_s` bounds every non-blocking call; blocking queries get their
    wait time on top of it.
    """

    address: str = "127.0.0.1:8500"
    scheme: str = "http"
    token: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    verify: bool = True
    datacenter: str = ""
    request_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if "://" in self.address:
            scheme, _, rest = self.address.partition("://")
            object.__setattr__(self, "scheme", scheme)
            object.__setattr__(self, "address", rest.rstrip("/"))
        if self.scheme not in ("http", "https"):
            raise InvalidInputError(f"Consul scheme {self.scheme!r}: expected 'http' or 'https'")
        self.host_port()  # validate early
        if self.request_timeout_s <= 0:
            raise InvalidInputError(
                f"Consul request_timeout_s={self.request_timeout_s}: expected a positive number"
            )

    def host_port(self) -> tuple[str, int]:
        """(host, port) of `address`; brackets around an IPv6 host are removed."""
        host, sep, port = self.address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidInputError(
                f"Consul address {self.address!r}: expected host:port (e.g. 127.0.0.1:8500)"
            )
        return host.strip("[]"), int(port)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConsulConfig:
        """Config from the standard Consul variables (call this only at the process edge).

        Reads CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_SSL, CONSUL_CACERT,
        CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_HTTP_SSL_VERIFY and CONSUL_DATACENTER.
        """
        env = os.environ if environ is None else environ
        address = env.get("CONSUL_HTTP_ADDR", "") or cls.address
        scheme = "https" if _flag(env, "CONSUL_HTTP_SSL", default=False) else "http"
        return cls(
            address=address,
            scheme=scheme,
            token=env.get("CONSUL_HTTP_TOKEN", ""),
            ca_file=env.get("CONSUL_CACERT", ""),
            cert_file=env.get("CONSUL_CLIENT_CERT", ""),
            key_file=env.get("CONSUL_CLIENT_KEY", ""),
            verify=_flag(env, "CONSUL_HTTP_SSL_VERIFY", default=True),
            datacenter=env.get("CONSUL_DATACENTER", ""),
        )


def join_host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets (the inverse of `ConsulConfig.host_port`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise InvalidInputError(f"{name}={raw!r}: expected true or false")
