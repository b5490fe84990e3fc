"""A bare grpc.aio echo server and client: the round-trip floor the mesh is compared with.

``python -m bench.echo [--port 0]`` serves ``/bench.Echo/Echo`` (bytes in, same bytes out, no
protobuf) and prints ``MESHSERVE_READY host:port`` like every meshserve server, so
``bench.common.ServerProcess``-style launchers work with it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

__all__ = ["ECHO_METHOD", "EchoProcess", "echo_client", "serve"]

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
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"MESHSERVE_READY {host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def echo_client(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    """The echo method on `channel` (raw bytes both ways)."""
    return channel.unary_unary(ECHO_METHOD)


class EchoProcess:
    """The echo server in a child process; stopped by PID on exit."""

    def __init__(self, log_path: Path, ready_timeout_s: float = 30.0) -> None:
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    def __enter__(self) -> EchoProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        root = str(Path(__file__).resolve().parent.parent)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.echo", "--port", "0"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=root,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            match = re.search(r"MESHSERVE_READY (\S+)", self.log_path.read_text(errors="replace"))
            if match:
                self.address = match.group(1)
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"echo server exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        self.__exit__()
        raise TimeoutError("echo server not ready")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
