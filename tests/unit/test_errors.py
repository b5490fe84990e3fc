"""The error tree: one class per status, the one table, context in place, and the round trip
server error -> gRPC status -> client error over a real grpc.aio server on port 0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from meshserve import errors
from meshserve.clients.sdk import MeshServeClient
from meshserve.errors import (
    ERROR_CLASSES,
    InternalError,
    InvalidInputError,
    MeshError,
    MeshServeError,
    OverloadedError,
    RequestCancelledError,
    UnavailableError,
    error_for_status,
)
from meshserve.grpc_errors import error_to_status, map_errors, map_stream_errors
from meshserve.registry.errors import KVIntegrityError, RegistryUnavailableError
from meshserve.v1 import orchestrator_pb2, orchestrator_pb2_grpc

FAILURES = [code for code in grpc.StatusCode if code != grpc.StatusCode.OK]


def test_the_table_maps_every_failure_code_to_its_own_class() -> None:
    assert set(ERROR_CLASSES) == set(FAILURES)
    assert len(set(ERROR_CLASSES.values())) == len(FAILURES)  # no class serves two codes
    for code, cls in ERROR_CLASSES.items():
        assert cls.code == code and issubclass(cls, MeshError)
        assert cls.__name__ in errors.__all__
        err = error_for_status(code, "detail")
        assert type(err) is cls and "code" not in vars(err)  # a class attribute, not patched
        assert (err.code, err.message, str(err)) == (code, "detail", "detail")
    assert ERROR_CLASSES[grpc.StatusCode.ABORTED].__name__ == "CheckAndSetError"
    assert ERROR_CLASSES[grpc.StatusCode.INVALID_ARGUMENT] is InvalidInputError
    assert RequestCancelledError.code == grpc.StatusCode.CANCELLED
    assert not issubclass(RequestCancelledError, asyncio.CancelledError)  # not shadowed


def test_one_root_with_the_old_client_name_as_an_alias() -> None:
    assert MeshServeError is MeshError
    assert issubclass(RegistryUnavailableError, UnavailableError)
    assert issubclass(KVIntegrityError, InternalError)
    with pytest.raises(MeshServeError):
        raise error_for_status(grpc.StatusCode.NOT_FOUND, "plan 'x' does not exist")


def test_reason_defaults_to_the_code_and_can_be_named() -> None:
    assert UnavailableError("down").reason == "unavailable"
    assert UnavailableError("broken", reason="stream_broken").reason == "stream_broken"


def test_context_is_added_in_place_and_fills_only_unset_fields() -> None:
    err = InvalidInputError("input 'x': bad dtype")
    assert err.add_context(model="mlp", replica="mlp-1") is err
    assert err.message == "model 'mlp' replica 'mlp-1': input 'x': bad dtype"
    err.add_context(model="other", replica="r2")  # an outer layer does not overwrite
    err.add_context(plan="digits", step="mlp").add_context(plan="digits")
    assert (err.plan, err.step, err.model, err.replica) == ("digits", "mlp", "mlp", "mlp-1")
    assert (
        err.message == "plan 'digits' step 'mlp' model 'mlp' replica 'mlp-1': input 'x': bad dtype"
    )
    assert err.detail == "input 'x': bad dtype"


def test_a_nested_plan_reads_outermost_first() -> None:
    err = UnavailableError("no ready replica").add_context(model="mlp")
    err.add_context(plan="inner", step="score")
    err.add_context(plan="inner")  # the branch that ran it
    err.add_context(plan="outer", step="sub")
    assert err.message == "plan 'outer' step 'sub' > plan 'inner' step 'score' model 'mlp': " + (
        "no ready replica"
    )
    assert (err.plan, err.step) == ("inner", "score")


def test_logic_functions_are_named_and_names_the_detail_has_are_not_repeated() -> None:
    err = InvalidInputError("amount < 0").add_context(logic="fraud.rules", plan="p", step="rules")
    assert err.message == "plan 'p' step 'rules' logic 'fraud.rules': amount < 0"
    again = UnavailableError("model 'mlp': no ready replica").add_context(model="mlp", plan="p")
    assert again.message == "plan 'p': model 'mlp': no ready replica"
    checked = InvalidInputError("plan 'p' input 'x' is missing").add_context(plan="p")
    assert checked.message == "plan 'p' input 'x' is missing"


def test_copy_is_independent() -> None:
    err = OverloadedError("queue full", retry_pushback_ms=20).add_context(model="m")
    twin = err.copy()
    twin.add_context(plan="a", step="s")
    assert type(twin) is OverloadedError and twin.retry_pushback_ms == 20
    assert (err.frames, twin.frames) == ((), (("a", "s"),))
    assert twin.message == "plan 'a' step 's' model 'm': queue full"


# ----- round trip over a real server ----------------------------------------------------------
PUSHBACK = {grpc.StatusCode.RESOURCE_EXHAUSTED: 250, grpc.StatusCode.UNAVAILABLE: 0}


def _server_error(plan: str) -> Exception:
    if plan == "crash":
        return KeyError("secret internals")
    code = grpc.StatusCode[plan]
    return error_for_status(
        code, f"{plan} detail", retry_pushback_ms=PUSHBACK.get(code)
    ).add_context(plan="p", step="s", model="m", replica="m-1")


class Failing(orchestrator_pb2_grpc.OrchestratorServicer):
    """Execute fails with the status named by the plan; ExecuteStream answers in-band."""

    @map_errors
    async def Execute(
        self, request: orchestrator_pb2.ExecuteRequest, context: object
    ) -> orchestrator_pb2.ExecuteResponse:
        raise _server_error(request.plan)

    @map_stream_errors
    async def ExecuteStream(
        self, requests: AsyncIterator[orchestrator_pb2.ExecuteRequest], context: object
    ) -> AsyncIterator[orchestrator_pb2.ExecuteResponse]:
        async for request in requests:
            status = error_to_status(_server_error(request.plan))
            yield orchestrator_pb2.ExecuteResponse(id=request.id, status=status)


@pytest.fixture
async def address() -> AsyncIterator[str]:
    server = grpc.aio.server()
    orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(Failing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


def _expected(code: grpc.StatusCode) -> tuple[type[MeshError], str, int | None]:
    return (
        ERROR_CLASSES[code],
        f"plan 'p' step 's' model 'm' replica 'm-1': {code.name} detail",
        PUSHBACK.get(code),
    )


async def test_server_error_comes_back_as_the_same_class(address: str) -> None:
    async with MeshServeClient(address, timeout_s=5) as client:
        for code in FAILURES:
            with pytest.raises(MeshError) as info:
                await client.execute(code.name, {})
            cls, message, pushback = _expected(code)
            got = info.value
            assert (type(got), got.code, got.message) == (cls, code, message), code
            assert got.retry_pushback_ms == pushback, code
        with pytest.raises(InternalError) as crash:
            await client.execute("crash", {})
        assert crash.value.message == "internal error (KeyError)"  # no traceback, no details


async def test_stream_item_errors_come_back_as_the_same_class(address: str) -> None:
    async def items() -> AsyncIterator[orchestrator_pb2.ExecuteRequest]:
        for code in FAILURES:
            yield MeshServeClient.request(code.name, code.name, {})

    async with MeshServeClient(address, timeout_s=5) as client:
        results = [r async for r in client.execute_stream(items())]
    assert len(results) == len(FAILURES)
    for got in results:
        assert isinstance(got, MeshError)
        code = grpc.StatusCode[got.request_id]
        cls, message, pushback = _expected(code)
        assert (type(got), got.code, got.message) == (cls, code, message), code
        assert got.retry_pushback_ms == (pushback or None), code
