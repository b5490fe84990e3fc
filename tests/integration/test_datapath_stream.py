"""StreamSession over a real grpc.aio InferStream on loopback (a scripted servicer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from meshserve.errors import DeadlineExceededError, InvalidInputError, UnavailableError
from meshserve.orchestrator.datapath.stream import StreamSession
from meshserve.v1 import model_pb2, model_pb2_grpc, tensor_pb2

pytestmark = pytest.mark.integration


class Scripted(model_pb2_grpc.ModelServiceServicer):
    """Answers ids in reverse order of arrival per pair; "bad*" ids get an in-band status;
    "die" ends the stream with UNAVAILABLE; "hold*" ids wait for `release`; `received(id)` waits
    until a request arrived."""

    def __init__(self) -> None:
        self.streams = 0
        self.max_outstanding = 0
        self.release = asyncio.Event()
        self._seen: set[str] = set()
        self._arrived = asyncio.Condition()

    async def received(self, request_id: str) -> None:
        async with self._arrived:
            await self._arrived.wait_for(lambda: request_id in self._seen)

    async def InferStream(
        self,
        request_iterator: AsyncIterator[model_pb2.InferRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[model_pb2.InferResponse]:
        self.streams += 1
        held: list[model_pb2.InferRequest] = []
        async for req in request_iterator:
            async with self._arrived:
                self._seen.add(req.id)
                self._arrived.notify_all()
            if req.id == "die":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "server going away")
            if req.id.startswith("bad"):
                yield model_pb2.InferResponse(
                    id=req.id, status=tensor_pb2.Status(code=3, message="input 'x': bad")
                )
                continue
            if req.id.startswith("hold"):
                held.append(req)
                self.max_outstanding = max(self.max_outstanding, len(held))
                if len(held) < 2:
                    continue
                await self.release.wait()
                for h in reversed(held):
                    yield model_pb2.InferResponse(id=h.id, instance_id="s")
                held.clear()
                continue
            yield model_pb2.InferResponse(id=req.id, instance_id="s")


@pytest.fixture
async def server() -> AsyncIterator[tuple[Scripted, str]]:
    servicer = Scripted()
    srv = grpc.aio.server()
    model_pb2_grpc.add_ModelServiceServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield servicer, f"127.0.0.1:{port}"
    await srv.stop(0)


async def test_answers_are_matched_by_id_and_item_errors_stay_in_band(
    server: tuple[Scripted, str],
) -> None:
    servicer, target = server
    async with grpc.aio.insecure_channel(target) as channel:
        session = StreamSession(model_pb2_grpc.ModelServiceStub(channel), target, 8)
        servicer.release.set()
        a, b = await asyncio.gather(
            session.infer(model_pb2.InferRequest(id="hold-a"), 5),
            session.infer(model_pb2.InferRequest(id="hold-b"), 5),
        )
        assert (a.id, b.id) == ("hold-a", "hold-b")  # answered in reverse, matched by id
        with pytest.raises(InvalidInputError) as info:
            await session.infer(model_pb2.InferRequest(id="bad-1"), 5)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert (await session.infer(model_pb2.InferRequest(id="ok-1"), 5)).id == "ok-1"
        assert servicer.streams == 1
        await session.close()


async def test_broken_stream_fails_outstanding_items_and_reopens(
    server: tuple[Scripted, str],
) -> None:
    servicer, target = server
    async with grpc.aio.insecure_channel(target) as channel:
        session = StreamSession(model_pb2_grpc.ModelServiceStub(channel), target, 8)
        waiting = asyncio.ensure_future(session.infer(model_pb2.InferRequest(id="hold-x"), 5))
        await servicer.received("hold-x")
        with pytest.raises(UnavailableError) as died:
            await session.infer(model_pb2.InferRequest(id="die"), 5)
        with pytest.raises(UnavailableError) as lost:
            await waiting
        for err in (died.value, lost.value):
            assert err.code == grpc.StatusCode.UNAVAILABLE and err.reason == "stream_broken"
        assert (await session.infer(model_pb2.InferRequest(id="ok-2"), 5)).id == "ok-2"
        assert servicer.streams == 2
        await session.close()


async def test_in_flight_is_bounded_and_a_late_answer_times_out(
    server: tuple[Scripted, str],
) -> None:
    servicer, target = server
    async with grpc.aio.insecure_channel(target) as channel:
        session = StreamSession(model_pb2_grpc.ModelServiceStub(channel), target, 1)
        first = asyncio.ensure_future(session.infer(model_pb2.InferRequest(id="hold-1"), 5))
        await servicer.received("hold-1")
        # The only slot is taken by hold-1, so hold-2 waits for it and gives up in time.
        with pytest.raises(DeadlineExceededError) as info:
            await session.infer(model_pb2.InferRequest(id="hold-2"), 0.1)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert servicer.max_outstanding == 1
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await session.close()
