"""Helpers for the HTTP integration tests: where a process serves HTTP, curl, raw sockets."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import time
from typing import Any

from tests.procs import ChildProcess

HTTP_PATTERN = re.compile(r"MESHSERVE_HTTP (\S+)")
METRICS_PATTERN = re.compile(r"metrics on (http://\S+/metrics)")


def http_address(child: ChildProcess) -> str:
    """host:port of the HTTP door a server printed before its ready line."""
    match = HTTP_PATTERN.search(child.log_path.read_text(errors="replace"))
    assert match, f"no MESHSERVE_HTTP line in {child.log_path}"
    return match.group(1)


def metrics_url(child: ChildProcess) -> str:
    match = METRICS_PATTERN.search(child.log_path.read_text(errors="replace"))
    assert match, f"no metrics line in {child.log_path}"
    return match.group(1)


async def curl(
    url: str, body: Any = None, *, token: str = "", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """(status, JSON reply) of ``curl -X POST`` (GET without a body), the real binary."""
    assert shutil.which("curl"), "curl is needed (Debian package curl)"
    args = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "60"]
    if body is not None:
        args += ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@-"]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    proc = await asyncio.create_subprocess_exec(
        *args, url, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    data = json.dumps(body).encode() if body is not None else b""
    out, _ = await proc.communicate(data)
    text, _, status = out.decode().rpartition("\n")
    return int(status), json.loads(text) if text else {}


def raw_exchange(
    address: str, chunks: list[bytes], pause_s: float = 0.0, timeout_s: float = 30.0
) -> tuple[bytes, float]:
    """Send `chunks` on a fresh connection (sleeping `pause_s` between them, as a slow client
    would), then read until the server closes or answers; (reply bytes, seconds taken)."""
    host, _, port = address.rpartition(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server gave up on us: read its answer
            if pause_s:
                sock.settimeout(pause_s)
                try:
                    early = sock.recv(65536)
                except TimeoutError:
                    early = b""
                sock.settimeout(timeout_s)
                if early:
                    return _read_rest(sock, early), time.monotonic() - started
        return _read_rest(sock), time.monotonic() - started


def _read_rest(sock: socket.socket, first: bytes = b"") -> bytes:
    parts = [first] if first else []
    if first and _complete(first):
        return first
    while True:
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        parts.append(data)
        if b"\r\n\r\n" in b"".join(parts) and _complete(b"".join(parts)):
            break
    return b"".join(parts)


def _complete(reply: bytes) -> bool:
    head, _, body = reply.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)content-length: (\d+)", head)
    return match is not None and len(body) >= int(match.group(1))


def status_of(reply: bytes) -> int:
    """The status code of a raw HTTP/1.1 reply (0 when there is none)."""
    match = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return int(match.group(1)) if match else 0
