"""Server reflection answers both grpc.reflection.v1 and v1alpha; grpc.health.v1 answers for a
replica's model name and for the orchestrator's plan names (following applies and deletes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from meshserve.clients.sdk import MeshServeClient
from meshserve.v1 import plan_pb2
from tests.integration.orchestrator_helpers import PYTHON_MODULES, TOKEN, Procs

pytestmark = [pytest.mark.integration]

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
REFLECTION = {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}


def _v1alpha_services(address: str) -> set[str]:
    """grpcio-reflection's own client (v1alpha): list, then describe every service."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        names = set(database.get_services())
        for name in names:
            assert pool.FindServiceByName(name).full_name == name
    return names


async def _v1_services(address: str) -> set[str]:
    """The v1 method on the wire (same messages as v1alpha under another package)."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(
            V1_METHOD,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        request = reflection_pb2.ServerReflectionRequest(list_services="*")
        replies = [r async for r in call(iter([request]), timeout=10)]
    assert len(replies) == 1 and replies[0].HasField("list_services_response")
    return {s.name for s in replies[0].list_services_response.service}


async def _status(address: str, service: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def _watch_until(address: str, service: str, wanted: str) -> None:
    """Follow Health.Watch (event-driven, no polling) until `service` reports `wanted`."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stream = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=15)
        async for reply in stream:
            if health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status) == wanted:
                stream.cancel()
                return
    raise AssertionError(f"{service} never reported {wanted}")


def test_replica_reflection_v1_and_v1alpha_and_model_health(spawn, models_dir: Path) -> None:
    replica = spawn(
        "model", "serve", str(models_dir / "scaler.onnx"), "--name", "scaler", "--version", "1",
        "--no-register", "--metrics-port", "-1",
    )  # fmt: skip
    # the replica's own typed service (docs/TYPED.md) is listed next to the generic ones
    expected = {
        "meshserve.v1.ModelService", "inference.GRPCInferenceService", "grpc.health.v1.Health",
        "meshserve.models.scaler.v1.Scaler", *REFLECTION,
    }  # fmt: skip
    assert _v1alpha_services(replica.address) == expected
    assert asyncio.run(_v1_services(replica.address)) == expected
    assert asyncio.run(_status(replica.address, "scaler")) == "SERVING"
    assert asyncio.run(_status(replica.address, "no-such-model")) == "NOT_FOUND"


async def _plan_health_follows_the_store(address: str) -> None:
    assert await _status(address, "health-plan") == "NOT_FOUND"
    async with MeshServeClient(address, token=TOKEN) as client:
        plan = plan_pb2.Plan(name="health-plan", python="examples.programmatic:pipeline")
        await client.apply_plan(plan)
        await _watch_until(address, "health-plan", "SERVING")
        typed = "meshserve.plans.health_plan.v1.HealthPlan"
        assert typed in await _v1_services(address)  # reflection follows the plan store
        await client.delete_plan("health-plan")
        await _watch_until(address, "health-plan", "NOT_SERVING")
        assert typed not in await _v1_services(address)


def test_orchestrator_reflection_and_plan_health(consul_addr: str, tmp_path: Path) -> None:
    with Procs(tmp_path) as procs:
        orch = procs.orchestrator(
            consul_addr, "--no-learning", "--metrics-port", "-1", *PYTHON_MODULES
        )
        expected = {"meshserve.v1.Orchestrator", "meshserve.v1.Admin", "grpc.health.v1.Health"}
        assert _v1alpha_services(orch.address) == expected | REFLECTION
        assert asyncio.run(_v1_services(orch.address)) == expected | REFLECTION
        asyncio.run(_plan_health_follows_the_store(orch.address))
