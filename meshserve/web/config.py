"""Limits of an HTTP door (frozen; flags are read only at the process edge)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HttpConfig"]


@dataclass(frozen=True)
class HttpConfig:
    """Where an HTTP door listens and the bounds a caller can hit (units in the names).

    port: -1 = off, 0 = any free port.
    max_body_bytes: a request body (Content-Length checked before reading; 413 past it).
    body_timeout_s: reading the whole body (a slowloris-style trickle gets 408).
    max_json_depth: nesting of objects/arrays in a JSON body (400 past it).
    max_header_bytes: one header line (aiohttp refuses longer ones with 400).
    keepalive_timeout_s: an idle keep-alive connection is closed after this long.
    reuse_port: bind with SO_REUSEPORT (orchestrator workers serving one port).
    """

    host: str = "127.0.0.1"
    port: int = -1
    max_body_bytes: int = 64 * 1024 * 1024
    body_timeout_s: float = 10.0
    max_json_depth: int = 40
    max_header_bytes: int = 8190
    keepalive_timeout_s: float = 75.0
    # Share the port with other processes of this user (the workers of `--workers N`).
    reuse_port: bool = False

    def __post_init__(self) -> None:
        if self.port < -1 or self.port > 65535:
            raise ValueError(f"http port {self.port}: expected -1 (off), 0 (any) or 1..65535")
        if self.max_body_bytes <= 0 or self.body_timeout_s <= 0 or self.max_json_depth <= 0:
            raise ValueError("http limits must be positive")

    @property
    def enabled(self) -> bool:
        return self.port >= 0
