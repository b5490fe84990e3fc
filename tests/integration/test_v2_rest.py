"""KServe V2 REST on a real replica process, called by an unmodified V2 HTTP client
(tritonclient.http), by plain JSON and with hostile bodies; answers equal V2 gRPC's."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest

from meshserve.v1 import grpc_predict_v2_pb2 as v2
from meshserve.v1 import grpc_predict_v2_pb2_grpc as v2_grpc
from tests.integration.http_helpers import http_address
from tests.reference import onnx_outputs

pytestmark = [pytest.mark.integration]

tritonclient_http = pytest.importorskip(
    "tritonclient.http", reason="tritonclient[http] is in the dev extra (pip install -e '.[dev]')"
)


@pytest.fixture
def replica(spawn, models_dir: Path) -> tuple[str, str]:
    """(gRPC address, HTTP host:port) of one unregistered mlp replica."""
    proc = spawn(
        "model", "serve", str(models_dir / "mlp.onnx"), "--name", "mlp", "--version", "3",
        "--no-register", "--threads", "1", "--port", "0", "--http-port", "0",
    )  # fmt: skip
    return proc.address, http_address(proc)


def test_unmodified_tritonclient_http_calls_a_replica(replica, models_dir):
    _, http = replica
    client = tritonclient_http.InferenceServerClient(http)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "3")
        assert not client.is_model_ready("mlp", "4")
        meta = client.get_model_metadata("mlp")
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
        assert {o["name"] for o in meta["outputs"]} == {"label", "probabilities"}
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        x = np.load(models_dir / "digits_test.npz")["X"][:5].astype(np.float32)
        expected = onnx_outputs(models_dir, "mlp", x)
        for binary_in in (True, False):
            for binary_out in (True, False):
                tensor = tritonclient_http.InferInput("input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x, binary_data=binary_in)
                outputs = [
                    tritonclient_http.InferRequestedOutput(name, binary_data=binary_out)
                    for name in ("label", "probabilities")
                ]
                result = client.infer("mlp", [tensor], outputs=outputs, request_id="r1")
                assert np.array_equal(result.as_numpy("label"), expected["label"])
                assert np.allclose(result.as_numpy("probabilities"), expected["probabilities"])
                assert result.get_response()["id"] == "r1"
        with pytest.raises(tritonclient_http.InferenceServerException) as err:
            client.infer("resnet", [tensor])
        assert "not served here" in str(err.value.message())
        bad = tritonclient_http.InferInput("input", [5, 63], "FP32")
        bad.set_data_from_numpy(x[:, :63], binary_data=True)
        with pytest.raises(tritonclient_http.InferenceServerException) as err:
            client.infer("mlp", [bad])
        assert "input" in str(err.value.message())
    finally:
        client.close()


async def test_rest_json_equals_v2_grpc_and_hostile_bodies_get_4xx(replica, models_dir):
    grpc_address, http = replica
    x = np.load(models_dir / "digits_test.npz")["X"][:3].astype(np.float32)
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        request = v2.ModelInferRequest(model_name="mlp")
        request.inputs.add(name="input", datatype="FP32", shape=[3, 64])
        request.inputs[0].contents.fp32_contents.extend(x.ravel().tolist())
        grpc_reply = await stub.ModelInfer(request, timeout=20)
    grpc_label = list(grpc_reply.outputs[0].contents.int64_contents)
    url = f"http://{http}/v2/models/mlp/infer"
    body = {"id": "j1", "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 64],
                                    "data": x.tolist()}]}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=body) as response:
            assert response.status == 200
            reply = await response.json()
        outputs = {o["name"]: o for o in reply["outputs"]}
        assert outputs["label"]["data"] == grpc_label and reply["id"] == "j1"
        assert outputs["probabilities"]["shape"] == [3, 10]
        cases = [
            (b"{not json", "application/json", 400, "not JSON"),
            (b'{"inputs": 5}', "application/json", 400, "inputs"),
            (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 64],
                                     "data": ["a"] * 192}]}).encode(), "application/json", 400,
             "float32"),
            (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 64],
                                     "data": [1.0] * 5}]}).encode(), "application/json", 400,
             "192"),
            (json.dumps({"inputs": [{"name": "input", "datatype": "STRING", "shape": [1],
                                     "data": [1]}]}).encode(), "application/json", 400, "datatype"),
            (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "depth"),
            (b"{}", "text/csv", 415, "application/json"),
        ]  # fmt: skip
        for data, content_type, status, words in cases:
            async with session.post(url, data=data, headers={"Content-Type": content_type}) as r:
                text = await r.text()
                assert r.status == status, (data[:60], r.status, text)
                assert words in json.loads(text)["error"], (data[:60], text)
        # binary extension with a wrong length header
        async with session.post(
            url, data=b"{}", headers={"Inference-Header-Content-Length": "99"}
        ) as r:
            assert r.status == 400 and "Inference-Header-Content-Length" in await r.text()
        async with session.get(f"http://{http}/v2/health/ready") as r:
            assert r.status == 200 and (await r.json())["ready"] is True
