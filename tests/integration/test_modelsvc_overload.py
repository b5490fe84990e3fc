"""A real replica with small admission limits under a burst of concurrent calls: refusals are
RESOURCE_EXHAUSTED with a retry pushback (trailer on unary calls, in-band on stream items),
nothing else fails, and the replica serves normally afterwards. Not timed."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from meshserve import tensors
from meshserve.grpc_errors import RETRY_PUSHBACK_KEY
from meshserve.v1 import grpc_predict_v2_pb2 as v2
from meshserve.v1 import grpc_predict_v2_pb2_grpc as v2_grpc
from meshserve.v1 import model_pb2, model_pb2_grpc

pytestmark = pytest.mark.integration

BURST = 64
PUSHBACK_MS = 35


def infer_request(x: np.ndarray, rid: str = "") -> model_pb2.InferRequest:
    return model_pb2.InferRequest(id=rid, inputs={"input": tensors.from_numpy(x)})


async def outcome(call) -> tuple[str, str | None]:
    """("OK", None) or (code name, the pushback trailer)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        trailers = dict(exc.trailing_metadata() or ())
        return exc.code().name, trailers.get(RETRY_PUSHBACK_KEY)
    return "OK", None


async def test_overload_is_refused_with_pushback_and_the_replica_keeps_serving(
    spawn, models_dir
) -> None:
    proc = spawn(
        "model", "serve", str(models_dir / "wide_mlp.onnx"), "--name", "overload",
        "--no-register", "--metrics-port", "-1", "--batch-max", "1",
        "--max-in-flight-requests", "4", "--overload-pushback-ms", str(PUSHBACK_MS),
    )  # fmt: skip
    x = np.random.default_rng(3).standard_normal((64, 64)).astype(np.float32)
    async with grpc.aio.insecure_channel(proc.address) as channel:
        stub = model_pb2_grpc.ModelServiceStub(channel)
        v2_stub = v2_grpc.GRPCInferenceServiceStub(channel)
        v2_request = v2.ModelInferRequest(
            model_name="overload",
            inputs=[v2.ModelInferRequest.InferInputTensor(
                name="input", datatype="FP32", shape=[64, 64]
            )],
            raw_input_contents=[x.tobytes()],
        )  # fmt: skip

        unary = [stub.Infer(infer_request(x), timeout=30) for _ in range(BURST)]
        unary += [v2_stub.ModelInfer(v2_request, timeout=30) for _ in range(BURST)]
        results = await asyncio.gather(*(outcome(call) for call in unary))
        codes = {code for code, _ in results}
        assert codes == {"OK", "RESOURCE_EXHAUSTED"}, results
        assert {p for code, p in results if code != "OK"} == {str(PUSHBACK_MS)}

        # A stream of items sent at once: refusals travel in-band, with the pushback.
        async def items():
            for i in range(BURST):
                yield infer_request(x, rid=f"item-{i}")

        replies = [reply async for reply in stub.InferStream(items(), timeout=30)]
        assert sorted(r.id for r in replies) == sorted(f"item-{i}" for i in range(BURST))
        refused = [r for r in replies if r.status.code]
        assert refused, "a burst of 64 items against 4 slots was never refused"
        assert {r.status.code for r in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}
        assert {r.status.retry_pushback_ms for r in refused} == {PUSHBACK_MS}
        assert "max_in_flight_requests" in refused[0].status.message

        # Still serving: calls within the limit all succeed.
        for _ in range(3):
            reply = await stub.Infer(infer_request(x[:2]), timeout=10)
            assert tensors.to_numpy(next(iter(reply.outputs.values()))).shape[0] == 2
