"""Random tensors, shapes, bytes and dtypes against a real replica: every case gets a clean status
(OK, INVALID_ARGUMENT or RESOURCE_EXHAUSTED, never INTERNAL/UNKNOWN) and the server stays up."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshserve.v1 import grpc_predict_v2_pb2 as v2
from meshserve.v1 import grpc_predict_v2_pb2_grpc as v2_grpc
from meshserve.v1 import model_pb2, model_pb2_grpc, tensor_pb2

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLEAN = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.NOT_FOUND,
}
V2_TYPES = ["FP32", "FP64", "FP16", "INT8", "INT32", "INT64", "UINT8", "BOOL", "BYTES", "X"]

names = st.sampled_from(["input", "input", "input", "other", ""])
shapes = st.lists(st.integers(min_value=-2, max_value=70), min_size=0, max_size=4)
data = st.one_of(
    st.binary(max_size=2048),
    st.integers(min_value=0, max_value=8).map(lambda rows: b"\x00\x00\x80\x7f" * 64 * rows),
)
v1_tensor = st.builds(
    lambda dtype, shape, raw: tensor_pb2.Tensor(dtype=dtype, shape=shape, data=raw),
    st.integers(min_value=0, max_value=14),
    shapes,
    data,
)
v1_request = st.builds(
    lambda inputs, outs, timeout: model_pb2.InferRequest(
        inputs=inputs, output_names=outs, timeout_ms=timeout
    ),
    st.dictionaries(names, v1_tensor, max_size=3),
    st.lists(st.sampled_from(["probabilities", "nope"]), max_size=2),
    st.integers(min_value=0, max_value=2000),
)


@st.composite
def v2_request(draw):
    request = v2.ModelInferRequest(model_name=draw(st.sampled_from(["fuzz", "fuzz", "x"])))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        tensor = request.inputs.add(
            name=draw(names), datatype=draw(st.sampled_from(V2_TYPES)), shape=draw(shapes)
        )
        if raw:
            request.raw_input_contents.append(draw(data))
        else:
            tensor.contents.fp32_contents.extend(
                draw(st.lists(st.floats(width=32, allow_nan=True), max_size=200))
            )
    if raw and draw(st.booleans()):
        request.raw_input_contents.append(b"extra")
    return request


def test_random_requests_get_clean_statuses(spawn, models_dir) -> None:
    proc = spawn(
        "model", "serve", str(models_dir / "wide_mlp.onnx"), "--name", "fuzz",
        "--no-register", "--metrics-port", "-1", "--batch-wait-us", "500",
        "--max-elements", "100000", "--max-message-bytes", "65536",
    )  # fmt: skip
    channel = grpc.insecure_channel(proc.address)
    stub = model_pb2_grpc.ModelServiceStub(channel)
    v2stub = v2_grpc.GRPCInferenceServiceStub(channel)
    seen: set[grpc.StatusCode] = set()

    def check(call) -> None:
        try:
            call()
            code = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            code = exc.code()
            assert code in CLEAN, f"{code}: {exc.details()}"
            assert exc.details(), "error statuses must carry a message"
        seen.add(code)

    @settings(
        max_examples=120,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.one_of(v1_request, v2_request()))
    def fuzz(message) -> None:
        if isinstance(message, model_pb2.InferRequest):
            check(lambda: stub.Infer(message, timeout=10))
        else:
            check(lambda: v2stub.ModelInfer(message, timeout=10))

    try:
        fuzz()
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="meshserve.v1.ModelService"), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert grpc.StatusCode.INVALID_ARGUMENT in seen
    finally:
        channel.close()
    assert proc.process is not None and proc.process.poll() is None
