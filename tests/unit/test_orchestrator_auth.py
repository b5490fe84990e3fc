"""The Admin bearer-token interceptor on a real grpc.aio server (port 0, loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from meshserve.orchestrator.auth import BearerTokenInterceptor

TOKEN = "s3cret-token"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


def _handlers() -> grpc.GenericRpcHandler:
    method = grpc.unary_unary_rpc_method_handler(_echo)
    return grpc.method_handlers_generic_handler("meshserve.v1.Admin", {"Ping": method})


def _other() -> grpc.GenericRpcHandler:
    method = grpc.unary_unary_rpc_method_handler(_echo)
    return grpc.method_handlers_generic_handler("meshserve.v1.Orchestrator", {"Ping": method})


async def _server(token: str) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server(interceptors=[BearerTokenInterceptor(token)])
    server.add_generic_rpc_handlers((_handlers(), _other()))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def address() -> AsyncIterator[str]:
    server, addr = await _server(TOKEN)
    yield addr
    await server.stop(None)


async def _call(address: str, metadata: tuple[tuple[str, str], ...], service: str = "Admin") -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        ping = channel.unary_unary(f"/meshserve.v1.{service}/Ping")
        try:
            await ping(b"x", metadata=metadata, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    return "OK"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((("authorization", f"Bearer {TOKEN}"),), "OK"),
        ((), "UNAUTHENTICATED: missing 'authorization: Bearer <token>' metadata"),
        ((("authorization", "Bearer wrong"),), "UNAUTHENTICATED: wrong admin token"),
        ((("authorization", TOKEN),), "UNAUTHENTICATED: wrong admin token"),
        (
            (("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer wrong")),
            "UNAUTHENTICATED: 2 'authorization' headers: send exactly one",
        ),
        (
            (("authorization", "Bearer wrong"), ("authorization", f"Bearer {TOKEN}")),
            "UNAUTHENTICATED: 2 'authorization' headers: send exactly one",
        ),
    ],
)
async def test_admin_calls_need_exactly_one_right_token(
    address: str, metadata: tuple[tuple[str, str], ...], expected: str
) -> None:
    answer = await _call(address, metadata)
    assert answer.startswith(expected), answer
    assert TOKEN not in answer.replace(f"Bearer {TOKEN}", "")


async def test_other_services_pass_without_a_token(address: str) -> None:
    assert await _call(address, (), service="Orchestrator") == "OK"


async def test_no_configured_token_refuses_every_admin_call() -> None:
    server, addr = await _server("")
    try:
        answer = await _call(addr, (("authorization", "Bearer "),))
        assert answer.startswith("UNAUTHENTICATED: admin calls are disabled")
    finally:
        await server.stop(None)
