"""A real model replica process, a real Consul agent, real onnxruntime as the reference."""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from meshserve import tensors
from meshserve.v1 import grpc_predict_v2_pb2 as v2
from meshserve.v1 import grpc_predict_v2_pb2_grpc as v2_grpc
from meshserve.v1 import model_pb2, model_pb2_grpc, tensor_pb2
from tests.waiting import wait_until, wait_until_sync

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_MESSAGE_BYTES = 1 << 20


def consul_get(consul_addr: str, path: str):
    with urllib.request.urlopen(f"http://{consul_addr}{path}", timeout=5) as reply:
        return json.loads(reply.read())


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


def metric(url: str, name: str, model: str) -> float:
    """The value of sample `name` of `model` on the metrics page at `url` (0 when absent)."""
    for family in text_string_to_metric_families(http_text(url)):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("model") == model:
                return float(sample.value)
    return 0.0


def passing(consul_addr: str, service: str):
    return consul_get(consul_addr, f"/v1/health/service/{service}?passing=true")


@functools.lru_cache(maxsize=4)
def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def reference(models_dir: Path, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    session = _session(models_dir / name)  # one load per model (wide_mlp is 68 MB)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": x}), strict=True))


def request(x: np.ndarray, rid: str = "", **kw) -> model_pb2.InferRequest:
    return model_pb2.InferRequest(id=rid, inputs={"input": tensors.from_numpy(x)}, **kw)


async def expect_status(call, code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    for fragment in fragments:
        assert fragment in (info.value.details() or ""), info.value.details()
    return info.value.details() or ""


async def test_replica_serves_registers_batches_and_rejects_bad_input(
    spawn, consul_addr, models_dir
) -> None:
    proc = spawn(
        "model", "serve", str(models_dir / "wide_mlp.onnx"), "--name", "wide-it",
        "--version", "7", "--consul", consul_addr, "--batch-max", "64",
        "--batch-wait-us", "5000", "--max-message-bytes", str(MAX_MESSAGE_BYTES),
    )  # fmt: skip
    entries = wait_until_sync(lambda: passing(consul_addr, "wide-it"), 20, "a passing Consul check")
    service = entries[0]["Service"]
    host, port = proc.address.rsplit(":", 1)
    assert service["ID"] == f"wide-it-{host}-{port}"
    assert set(service["Tags"]) == {"meshserve-model", "version=7"}
    assert service["Meta"]["batch_max"] == "64"
    assert int(service["Meta"]["metrics_port"]) > 0
    rng = np.random.default_rng(42)

    async with grpc.aio.insecure_channel(proc.address) as channel:
        stub = model_pb2_grpc.ModelServiceStub(channel)
        meta = await stub.GetMetadata(model_pb2.GetMetadataRequest())
        assert meta.version == "7" and meta.instance_id == service["ID"]
        assert service["Meta"]["signature_sha256"] == meta.signature_sha256

        # Unary: equal to a direct onnxruntime call.
        x = rng.standard_normal((5, 64)).astype(np.float32)
        reply = await stub.Infer(request(x), timeout=10)
        got = tensors.to_numpy(reply.outputs["probabilities"])
        np.testing.assert_allclose(got, reference(models_dir, "wide_mlp.onnx", x)["probabilities"],
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
        assert reply.instance_id == service["ID"]

        # Many concurrent callers with random payloads are batched and get their own rows back.
        payloads = [rng.standard_normal((int(rng.integers(1, 4)), 64)).astype(np.float32)
                    for _ in range(48)]  # fmt: skip
        replies = await asyncio.gather(*(stub.Infer(request(p), timeout=20) for p in payloads))
        assert max(r.stats.batch_size for r in replies) > 1
        assert max(r.stats.batch_requests for r in replies) > 1
        expected = reference(models_dir, "wide_mlp.onnx", np.concatenate(payloads))["probabilities"]
        offset = 0
        for p, r in zip(payloads, replies, strict=True):
            mine = tensors.to_numpy(r.outputs["probabilities"])
            np.testing.assert_allclose(
                mine, expected[offset : offset + len(p)], rtol=1e-5, atol=1e-6
            )
            offset += len(p)

        # InferStream: many in flight, answers echo ids (any order), each equals its input's rows.
        stream_payloads = {f"s{i}": rng.standard_normal((int(rng.integers(1, 6)), 64)).astype(
            np.float32) for i in range(64)}  # fmt: skip

        async def items():
            for rid, p in stream_payloads.items():
                yield request(p, rid)
            yield model_pb2.InferRequest(id="bad", inputs={"nope": tensors.from_numpy(x)})

        answers = {}
        async for answer in stub.InferStream(items(), timeout=30):
            answers[answer.id] = answer
        assert set(answers) == {*stream_payloads, "bad"}
        assert answers["bad"].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "unknown input 'nope'" in answers["bad"].status.message
        for rid, p in stream_payloads.items():
            assert answers[rid].status.code == 0
            np.testing.assert_allclose(
                tensors.to_numpy(answers[rid].outputs["probabilities"]),
                reference(models_dir, "wide_mlp.onnx", p)["probabilities"], rtol=1e-5, atol=1e-6,
            )  # fmt: skip

        # Open Inference Protocol: typed contents and raw contents.
        v2stub = v2_grpc.GRPCInferenceServiceStub(channel)
        assert (await v2stub.ServerLive(v2.ServerLiveRequest())).live
        assert (await v2stub.ServerReady(v2.ServerReadyRequest())).ready
        assert (await v2stub.ModelReady(v2.ModelReadyRequest(name="wide-it"))).ready
        md = await v2stub.ModelMetadata(v2.ModelMetadataRequest(name="wide-it"))
        assert md.inputs[0].datatype == "FP32" and list(md.inputs[0].shape) == [-1, 64]
        want = reference(models_dir, "wide_mlp.onnx", x)["probabilities"]
        typed = v2.ModelInferRequest(model_name="wide-it", id="t")
        t = typed.inputs.add(name="input", datatype="FP32", shape=[5, 64])
        t.contents.fp32_contents.extend(x.ravel().tolist())
        out = await v2stub.ModelInfer(typed, timeout=10)
        assert out.outputs[0].datatype == "FP32" and list(out.outputs[0].shape) == [5, 10]
        np.testing.assert_allclose(np.array(out.outputs[0].contents.fp32_contents).reshape(5, 10),
                                   want, rtol=1e-5, atol=1e-6)  # fmt: skip
        raw = v2.ModelInferRequest(model_name="wide-it", raw_input_contents=[x.tobytes()])
        raw.inputs.add(name="input", datatype="FP32", shape=[5, 64])
        out = await v2stub.ModelInfer(raw, timeout=10)
        got = np.frombuffer(out.raw_output_contents[0], np.float32).reshape(5, 10)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        await expect_status(v2stub.ModelInfer(v2.ModelInferRequest(model_name="other")),
                            grpc.StatusCode.NOT_FOUND, "'other' is not served here")  # fmt: skip

        # Every validation case gets INVALID_ARGUMENT naming what was wrong.
        bad_cases = [
            (model_pb2.InferRequest(inputs={"input": tensors.from_numpy(x),
                                            "extra": tensors.from_numpy(x)}),
             "unknown input 'extra'"),
            (model_pb2.InferRequest(), "missing input 'input'"),
            (request(x.astype(np.float64)), "dtype float64 received, expected float32"),
            (request(x.ravel()), "rank 1, expected rank 2"),
            (request(x[:, :10]), "dimension 1 is 10, expected 64"),
            (model_pb2.InferRequest(inputs={"input": tensor_pb2.Tensor(
                dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=[2, 64], data=b"\0" * 100)}),
             "100 bytes do not match shape [2, 64]"),
            (model_pb2.InferRequest(inputs={"input": tensor_pb2.Tensor(
                dtype=99, shape=[1, 64], data=b"")}), "dtype 99 is not a known DataType"),
            (request(x, output_names=["logits"]), "unknown output 'logits'"),
        ]  # fmt: skip
        for bad, fragment in bad_cases:
            await expect_status(stub.Infer(bad, timeout=5), grpc.StatusCode.INVALID_ARGUMENT,
                                fragment)  # fmt: skip
        huge = rng.standard_normal((MAX_MESSAGE_BYTES // 256 + 8, 64)).astype(np.float32)
        await expect_status(
            stub.Infer(request(huge), timeout=5), grpc.StatusCode.RESOURCE_EXHAUSTED
        )

        # Still healthy after all of it; reflection lists the services.
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "meshserve.v1.ModelService", "inference.GRPCInferenceService"):
            status = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def list_services():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for answer in refl.ServerReflectionInfo(list_services()):
            names = {s.name for s in answer.list_services_response.service}
        assert {"meshserve.v1.ModelService", "inference.GRPCInferenceService",
                "grpc.health.v1.Health"} <= names  # fmt: skip

    metrics_port = service["Meta"]["metrics_port"]
    text = await asyncio.to_thread(http_text, f"http://127.0.0.1:{metrics_port}/metrics")
    assert 'meshserve_modelsvc_requests_total{code="INVALID_ARGUMENT",method="Infer"' in text
    assert "meshserve_modelsvc_batch_rows_bucket" in text


async def test_sigterm_drains_in_flight_requests_and_deregisters(spawn, consul_addr, models_dir):
    # One long batch runs (a 4096-row request, about a second of compute) when SIGTERM arrives,
    # and the small requests sent after it are queued behind it (one batch at a time, and a long
    # batch window, so they only start once the model is idle).
    proc = spawn(
        "model", "serve", str(models_dir / "wide_mlp.onnx"), "--name", "wide-drain",
        "--consul", consul_addr, "--batch-max", "256", "--batch-wait-us", "400000",
        "--max-concurrent-batches", "1", "--metrics-port", "0", "--grace-s", "10",
    )  # fmt: skip
    (entry,) = wait_until_sync(
        lambda: passing(consul_addr, "wide-drain"), 20, "a passing Consul check"
    )
    metrics = f"http://127.0.0.1:{entry['Service']['Meta']['metrics_port']}/metrics"

    def batcher(name: str) -> float:
        return metric(metrics, f"meshserve_modelsvc_{name}", "wide-drain")

    rng = np.random.default_rng(3)
    payloads = [rng.standard_normal((4096, 64)).astype(np.float32)]
    payloads += [rng.standard_normal((2, 64)).astype(np.float32) for _ in range(40)]
    async with grpc.aio.insecure_channel(proc.address) as channel:
        stub = model_pb2_grpc.ModelServiceStub(channel)
        await channel.channel_ready()
        calls = [asyncio.ensure_future(stub.Infer(request(payloads[0]), timeout=20))]
        await wait_until(  # the long batch left the queue: it is running
            lambda: asyncio.to_thread(batcher, "queue_wait_seconds_count"),
            10,
            "the long batch",
            0.02,
        )
        calls += [asyncio.ensure_future(stub.Infer(request(p), timeout=20)) for p in payloads[1:]]
        await wait_until(  # the small requests are queued behind it
            lambda: asyncio.to_thread(lambda: batcher("queue_depth") == len(payloads) - 1),
            10,
            "the small requests queued",
            0.02,
        )
        assert not any(c.done() for c in calls)
        proc.signal(signal.SIGTERM)
        replies = await asyncio.gather(*calls)  # none may fail
    for p, r in zip(payloads, replies, strict=True):
        np.testing.assert_allclose(tensors.to_numpy(r.outputs["probabilities"]),
                                   reference(models_dir, "wide_mlp.onnx", p)["probabilities"],
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
    assert await asyncio.to_thread(proc.wait, 15) == 0
    services = consul_get(consul_addr, "/v1/agent/services")
    assert not any(s["Service"] == "wide-drain" for s in services.values())


async def test_handler_preprocesses_and_rejects_non_finite(spawn, models_dir) -> None:
    proc = spawn(
        "model", "serve", str(models_dir / "logreg.onnx"), "--name", "digits",
        "--handler", "examples.handlers:DigitsHandler", "--no-register", "--metrics-port", "-1",
        env={"PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    x = np.random.default_rng(5).uniform(-20, 40, (6, 64)).astype(np.float32)
    async with grpc.aio.insecure_channel(proc.address) as channel:
        stub = model_pb2_grpc.ModelServiceStub(channel)
        reply = await stub.Infer(request(x), timeout=10)
        want = reference(models_dir, "logreg.onnx", np.clip(x, 0, 16))
        np.testing.assert_array_equal(tensors.to_numpy(reply.outputs["label"]), want["label"])
        np.testing.assert_allclose(tensors.to_numpy(reply.outputs["probabilities"]),
                                   want["probabilities"], rtol=1e-5, atol=1e-6)  # fmt: skip
        bad = x.copy()
        bad[2, 3] = np.nan
        await expect_status(
            stub.Infer(request(bad), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input 'input': 1 non-finite",
        )
        sha = await stub.GetMetadata(model_pb2.GetMetadataRequest())
        assert len(sha.model_sha256) == 64
