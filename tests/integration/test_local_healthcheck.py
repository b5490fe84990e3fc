"""``python -m meshserve.clients.healthcheck`` against a real grpc.health.v1 server."""

from __future__ import annotations

import asyncio
import socket

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshserve.clients.healthcheck import check_health, main


async def test_healthcheck_follows_the_serving_status() -> None:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    try:
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert await check_health(address) == "SERVING"
        assert await asyncio.to_thread(main, [address]) == 0
        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert await check_health(address) == "NOT_SERVING"
        assert await asyncio.to_thread(main, [address]) == 1
        assert await check_health(address, "no.such.Service") == "SERVICE_UNKNOWN"
    finally:
        await server.stop(None)


async def test_healthcheck_of_a_closed_port_fails_fast() -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound but never listening
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        assert await check_health(address, timeout_s=1.0) == "UNREACHABLE"
        assert await asyncio.to_thread(main, [address, "--timeout-s", "1"]) == 1
