"""A bare grpc.aio echo server and client: the round-trip floor the mesh is compared with.

``python -m bench.echo [--port 0]`` serves ``/bench.Echo/Echo`` (bytes in, same bytes out, no
protobuf) and prints ``MESHSERVE_READY host:port`` like every meshserve server, so
``bench.common.ServerProcess``-style launchers work with it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import grpc

from bench.common import ServerProcess, serve_grpc_until_sigterm

__all__ = ["ECHO_METHOD", "echo_client", "echo_process", "serve"]

ECHO_METHOD = "/bench.Echo/Echo"


async def serve(host: str, port: int) -> None:
    """Serve the echo method until SIGTERM."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    await serve_grpc_until_sigterm(server, host, port)


def echo_client(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    """The echo method on `channel` (raw bytes both ways)."""
    return channel.unary_unary(ECHO_METHOD)


def echo_process(log_path: Path, ready_timeout_s: float = 30.0) -> ServerProcess:
    """The echo server in a child process (a context manager; stopped by PID on exit)."""
    root = str(Path(__file__).resolve().parent.parent)
    return ServerProcess(["--port", "0"], log_path, ready_timeout_s, module="bench.echo", cwd=root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
