"""Data-plane tokens: the file format, scopes, refusals counted, tokens never echoed; the gRPC
interceptor on a real grpc.aio server (loopback, port 0)."""

from __future__ import annotations

import grpc
import pytest

from meshserve.errors import PermissionDeniedError, UnauthenticatedError
from meshserve.orchestrator.auth import BearerTokenInterceptor, DataPlaneAuth
from meshserve.orchestrator.metrics import AUTH_REFUSED

ALL = "all-plans-0123456789abcdef"
ONE = "pipeline-0123456789abcdef"
TOKENS = f"# comment\n{ALL} *\n\n{ONE} digits-pipeline, other  # trailing comment\n"


def _count(code: str, surface: str = "http") -> float:
    return AUTH_REFUSED.labels(surface, "data", code)._value.get()


def test_file_format_and_scopes():
    auth = DataPlaneAuth.parse(TOKENS)
    assert auth.authenticate([f"Bearer {ALL}"], "http").plans is None
    one = auth.authenticate([f"Bearer {ONE}"], "http")
    assert one.plans == frozenset({"digits-pipeline", "other"})
    auth.authorize(one, "digits-pipeline", "http")
    before = _count("PERMISSION_DENIED")
    with pytest.raises(PermissionDeniedError) as err:
        auth.authorize(one, "digits-ensemble", "http")
    assert ONE not in err.value.message and "token#2" in err.value.message
    assert _count("PERMISSION_DENIED") == before + 1


@pytest.mark.parametrize(
    "values", [[], ["Bearer nope-nope-nope-nope"], [ALL], [f"Bearer {ALL}", f"Bearer {ALL}"]]
)
def test_refusals_are_unauthenticated_and_counted(values):
    auth = DataPlaneAuth.parse(TOKENS)
    before = _count("UNAUTHENTICATED")
    with pytest.raises(UnauthenticatedError) as err:
        auth.authenticate(values, "http")
    assert ALL not in err.value.message
    assert _count("UNAUTHENTICATED") == before + 1


@pytest.mark.parametrize(
    ("text", "words"),
    [("short *", "shorter"), (f"{ALL}\n{ALL} x", "twice"), ("", "no data-plane tokens")],
)
def test_bad_token_files_are_refused(text, words):
    with pytest.raises(ValueError, match=words):
        DataPlaneAuth.parse(text)


def test_a_data_token_cannot_be_the_admin_token():
    with pytest.raises(ValueError, match="admin token"):
        DataPlaneAuth.parse(f"{ALL} *", admin_token=ALL)


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def test_interceptor_guards_every_non_public_method_but_not_health():
    handlers = [
        grpc.method_handlers_generic_handler(
            service, {"Ping": grpc.unary_unary_rpc_method_handler(_echo)}
        )
        for service in (
            "meshserve.v1.Orchestrator",
            "meshserve.plans.p.v1.P",
            "grpc.health.v1.Health",
        )
    ]
    auth = DataPlaneAuth.parse(TOKENS)
    server = grpc.aio.server(interceptors=[BearerTokenInterceptor("admin", data_plane=auth)])
    server.add_generic_rpc_handlers(handlers)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for service in ("meshserve.v1.Orchestrator", "meshserve.plans.p.v1.P"):
                ping = channel.unary_unary(f"/{service}/Ping")
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await ping(b"x", timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                md = (("authorization", f"Bearer {ONE}"),)
                assert await ping(b"x", metadata=md, timeout=5) == b"x"
            health = channel.unary_unary("/grpc.health.v1.Health/Ping")
            assert await health(b"x", timeout=5) == b"x"
    finally:
        await server.stop(None)
