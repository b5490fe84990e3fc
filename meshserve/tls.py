"""TLS settings shared by every meshserve server and client (model service, orchestrator, SDK,
the orchestrator's channels to model replicas)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from meshserve.errors import InvalidInputError

__all__ = ["ClientTLS", "ServerTLS", "bind", "open_channel"]


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{what} {path!r} cannot be read: {exc.strerror}") from None


@dataclass(frozen=True)
class ServerTLS:
    """Serve TLS with `cert_file`/`key_file` (PEM); with `client_ca_file`, require client certs."""

    cert_file: str
    key_file: str
    client_ca_file: str = ""

    def __post_init__(self) -> None:
        if not (self.cert_file and self.key_file):
            raise InvalidInputError(
                "TLS needs both a certificate and a key (--tls-cert and --tls-key)"
            )

    def credentials(self) -> grpc.ServerCredentials:
        pair = [(_read(self.key_file, "TLS key"), _read(self.cert_file, "TLS certificate"))]
        if self.client_ca_file:
            return grpc.ssl_server_credentials(
                pair,
                root_certificates=_read(self.client_ca_file, "client CA"),
                require_client_auth=True,
            )
        return grpc.ssl_server_credentials(pair)


@dataclass(frozen=True)
class ClientTLS:
    """Dial with TLS, trusting `ca_file` (system roots when empty); client cert for mTLS."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""  # overrides the name checked against the server certificate

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "TLS CA") if self.ca_file else None,
            private_key=_read(self.key_file, "TLS client key") if self.key_file else None,
            certificate_chain=_read(self.cert_file, "TLS client cert") if self.cert_file else None,
        )


def bind(server: grpc.aio.Server, address: str, tls: ServerTLS | None) -> int:
    """Add a plaintext or TLS port; returns the bound port (raises OSError when it cannot bind)."""
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.credentials())
    if port == 0:
        raise OSError(f"cannot bind {address}")
    return int(port)


def open_channel(
    target: str,
    tls: ClientTLS | None = None,
    *,
    options: Sequence[tuple[str, Any]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target`, plaintext or TLS."""
    opts = list(options)
    if tls is None:
        return grpc.aio.insecure_channel(target, options=opts, interceptors=interceptors)
    if tls.server_name:
        opts.append(("grpc.ssl_target_name_override", tls.server_name))
    creds = tls.credentials()
    return grpc.aio.secure_channel(target, creds, options=opts, interceptors=interceptors)
