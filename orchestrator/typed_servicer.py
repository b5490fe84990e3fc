"""The typed plan services (``meshserve.plans.<name>.v<schema>.<Name>``) over the engine.

``Execute`` / ``ExecuteStream`` of every active plan's contract (resolved per call from the live
`ContractSet`, see `meshserve.typed_rpc`): the request is decoded by the contract (INVALID_ARGUMENT
naming the field), run through the same engine as ``Orchestrator.Execute`` (the plan's active
version), and the outputs go back as typed fields with the request id, decisions, version and
trace id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import message

from meshserve.contracts import Contract
from meshserve.errors import InvalidInputError
from meshserve.limits import DEFAULT_LIMITS, Limits
from meshserve.orchestrator.converters import item_budget_s
from meshserve.orchestrator.engine import Engine, ExecuteCall
from meshserve.orchestrator.servicers import call_remaining_s
from meshserve.streams import fan_out
from meshserve.typed_rpc import stream_status

__all__ = ["TypedPlanServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class TypedPlanServicer:
    """`execute` / `execute_stream` for `meshserve.typed_rpc.add_typed_services`."""

    def __init__(
        self, engine: Engine, stream_max_in_flight: int = 256, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self.engine = engine
        self.stream_max_in_flight = stream_max_in_flight
        self.limits = limits

    async def run(
        self, contract: Contract, request: message.Message, call_timeout_s: float | None
    ) -> message.Message:
        """One typed execution: `request` (a ``contract.request_class`` message, e.g. parsed
        from proto3 JSON) -> the ``contract.response_class`` message. Raises the MeshError of
        the failure (InvalidInputError naming the field, NotFoundError, ...)."""
        typed = contract.decode_request(request, self.limits)
        result = await self.engine.execute(
            ExecuteCall(
                plan=contract.name,
                inputs=typed.arrays,
                request_id=typed.request_id,
                routing_key=typed.routing_key,
                attributes=typed.attributes,
                timeout_s=item_budget_s(call_timeout_s, typed.timeout_ms),
            )
        )
        return contract.encode_response(
            result.outputs,
            request_id=result.request_id,
            decisions=result.decisions,
            plan_version=result.plan_version,
            trace_id=result.trace_id,
        )

    async def execute(
        self, contract: Contract, request: message.Message, context: Context
    ) -> message.Message:
        return await self.run(contract, request, call_remaining_s(context))

    async def execute_stream(
        self,
        contract: Contract,
        request_iterator: AsyncIterator[message.Message],
        context: Context,
    ) -> AsyncIterator[message.Message]:
        """One plan run per item, concurrently (``meshserve.streams.fan_out``); a failed run is
        answered with the item's request_id and an in-band status."""

        async def one(request: message.Message) -> message.Message:
            if not getattr(request, "request_id", ""):
                raise InvalidInputError(
                    f"{contract.stream_method} items need a 'request_id' to correlate"
                )
            return await self.run(contract, request, call_remaining_s(context))

        def failed(request: message.Message, exc: Exception) -> message.Message:
            request_id = getattr(request, "request_id", "")
            return contract.encode_response({}, request_id=request_id, status=stream_status(exc))

        async for response in fan_out(
            request_iterator, one, max_in_flight=self.stream_max_in_flight, on_error=failed
        ):
            yield response
