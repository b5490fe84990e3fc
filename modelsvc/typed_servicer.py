"""The replica's own typed service (``meshserve.models.<name>.v<schema>.<Name>``).

Built once from the served signature (the model's plus its handler's ``extra_outputs``): fields
named after the tensors (`meshserve.contracts`). ``Predict`` and ``PredictStream`` take the same
path as ``ModelService.Infer`` / ``InferStream``: admission before decoding, the same core,
batcher and validation (NaN policy included), the same metrics under their own method names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf import message
from opentelemetry import trace

from meshserve.contracts import Contract
from meshserve.limits import Limits
from meshserve.modelsvc.servicers import OverCore, StreamItem
from meshserve.typed_rpc import stream_status

__all__ = ["TypedModelServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class TypedModelServicer(OverCore):
    """Predict / PredictStream of the replica's contract over its ModelCore."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = Limits(max_elements=self._max_elements)

    async def _predict(
        self,
        contract: Contract,
        request: message.Message,
        timeout_s: float | None,
        caller_links: Sequence[trace.Link] = (),
    ) -> message.Message:
        typed = contract.decode_request(request, self._limits)
        if typed.timeout_ms:
            item = typed.timeout_ms / 1000.0
            timeout_s = item if timeout_s is None else min(timeout_s, item)
        result = await self._core.infer(
            typed.arrays, (), timeout_s=timeout_s, caller_links=caller_links
        )
        return contract.encode_response(result.outputs, request_id=typed.request_id)

    async def predict(
        self, contract: Contract, request: message.Message, context: Context
    ) -> message.Message:
        return await self._admitted(
            contract.unary_method,
            context,
            lambda: contract.rows_of(request),
            lambda timeout_s: self._predict(contract, request, timeout_s),
        )

    async def predict_stream(
        self,
        contract: Contract,
        request_iterator: AsyncIterator[message.Message],
        context: Context,
    ) -> AsyncIterator[message.Message]:
        def failed(request: message.Message, exc: Exception) -> message.Message:
            r: Any = request
            return contract.encode_response({}, request_id=r.request_id, status=stream_status(exc))

        async def run(
            request: message.Message, timeout_s: float | None, links: Sequence[trace.Link]
        ) -> message.Message:
            return await self._predict(contract, request, timeout_s, links)

        item: StreamItem[message.Message, message.Message] = StreamItem(
            rows_of=contract.rows_of,
            id_of=lambda r: str(getattr(r, "request_id", "")),
            id_field="request_id",
            traceparents=lambda r: (),
            run=run,
            failed=failed,
        )
        async for response in self._stream(contract.stream_method, request_iterator, context, item):
            yield response
