"""Serving typed contracts on a grpc.aio server: one generic handler that resolves every call
against a live `ContractSet` (so a new plan version is served without a restart).

`add_typed_services(server, contracts, unary=, stream=)` registers it. A call to
``/<package>.<Service>/<Method>`` of a served contract runs `unary(contract, request, context)`
or `stream(contract, request_iterator, context)` with requests already decoded by the
contract's own message class; undecodable unary bytes are INVALID_ARGUMENT
(`meshserve.decoding`), errors map through `meshserve.grpc_errors`. A path in a
``meshserve.models.``/``meshserve.plans.`` package that is not served fails with the
ContractSet's answer (NOT_FOUND for an unknown plan, FAILED_PRECONDITION for a stale schema);
other paths fall through to the server's other handlers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message

from meshserve.contracts import Contract, StreamStatus
from meshserve.contracts.live import ContractSet
from meshserve.decoding import tolerant_handler
from meshserve.errors import MeshError
from meshserve.grpc_errors import abort_with, map_errors, map_stream_errors, status_from_exception

__all__ = ["StreamCall", "TypedRpcHandler", "UnaryCall", "add_typed_services", "stream_status"]

Context = grpc.aio.ServicerContext[Any, Any]
UnaryCall = Callable[[Contract, message.Message, Context], Awaitable[message.Message]]
StreamCall = Callable[
    [Contract, AsyncIterator[message.Message], Context], AsyncIterator[message.Message]
]

_CACHE_MAX = 256  # method handlers kept (two per contract version served)


def stream_status(exc: BaseException) -> StreamStatus:
    """The in-band status of a failed typed stream item (same mapping as a call's status)."""
    code, text, pushback = status_from_exception(exc)
    return StreamStatus(code.value[0], text, pushback or 0)


def _identity(data: bytes) -> bytes:
    return data


def _failing(error: MeshError) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler answering every call with `error` (works for unary and streaming callers)."""

    async def fail(request_iterator: Any, context: Context) -> AsyncIterator[bytes]:
        await abort_with(context, error.copy())
        yield b""  # pragma: no cover - abort raises

    return grpc.stream_stream_rpc_method_handler(
        fail, request_deserializer=_identity, response_serializer=_identity
    )


class TypedRpcHandler(grpc.GenericRpcHandler):
    """See the module docstring; method handlers are cached per contract version."""

    def __init__(self, contracts: ContractSet, unary: UnaryCall, stream: StreamCall) -> None:
        self._contracts = contracts
        self._unary = unary
        self._stream = stream
        self._cache: dict[tuple[int, bool], tuple[Contract, Any]] = {}

    def _handler(self, contract: Contract, stream: bool) -> Any:
        key = (id(contract), stream)
        found = self._cache.get(key)
        if found is not None and found[0] is contract:
            return found[1]
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        deserialize = contract.request_class.FromString
        serialize = contract.response_class.SerializeToString
        handler: Any
        if stream:
            call_stream = self._stream

            @map_stream_errors
            async def streamed(_: Any, requests: Any, context: Context) -> AsyncIterator[Any]:
                async for response in call_stream(contract, requests, context):
                    yield response

            async def run_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
                async for response in streamed(None, requests, context):
                    yield response

            handler = grpc.stream_stream_rpc_method_handler(
                run_stream, request_deserializer=deserialize, response_serializer=serialize
            )
        else:
            call_unary = self._unary

            @map_errors
            async def unary(_: Any, request: Any, context: Context) -> Any:
                return await call_unary(contract, request, context)

            async def run_unary(request: Any, context: Context) -> Any:
                return await unary(None, request, context)

            handler = tolerant_handler(
                grpc.unary_unary_rpc_method_handler(
                    run_unary, request_deserializer=deserialize, response_serializer=serialize
                )
            )
        self._cache[key] = (contract, handler)
        return handler

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        resolved = self._contracts.resolve(handler_call_details.method)
        if resolved is None:
            return None
        if resolved.error is not None:
            return _failing(resolved.error)
        assert resolved.contract is not None
        return self._handler(resolved.contract, resolved.stream)


def add_typed_services(
    server: grpc.aio.Server, contracts: ContractSet, *, unary: UnaryCall, stream: StreamCall
) -> TypedRpcHandler:
    """Serve the typed services of `contracts` on `server` (see the module docstring)."""
    handler = TypedRpcHandler(contracts, unary, stream)
    server.add_generic_rpc_handlers((handler,))
    return handler
