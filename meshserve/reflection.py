"""gRPC server reflection in both versions clients speak: ``grpc.reflection.v1`` and ``v1alpha``.

grpcio-reflection implements only ``grpc.reflection.v1alpha.ServerReflection``; grpcurl, Postman
and newer grpc tooling ask for ``grpc.reflection.v1`` first. The two protocols are the same
messages under another package name (same fields, same numbers), so one servicer answers both:
both services are registered with the v1alpha message codecs, and the v1 file descriptor (derived
from the v1alpha one by renaming its package, never written by hand) is added to the default
descriptor pool so the v1 service itself can be listed and described.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

__all__ = [
    "HEALTH_SERVICE",
    "REFLECTION_SERVICES",
    "V1ALPHA_SERVICE",
    "V1_SERVICE",
    "enable_reflection",
]

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name  # grpc.health.v1.Health

V1ALPHA_SERVICE = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
REFLECTION_SERVICES = (V1_SERVICE, V1ALPHA_SERVICE)
_V1ALPHA_PACKAGE = ".grpc.reflection.v1alpha."
_V1_PACKAGE = ".grpc.reflection.v1."


def _add_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindServiceByName(V1_SERVICE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto.FromString(reflection_pb2.DESCRIPTOR.serialized_pb)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"
    proto.options.Clear()
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(_V1ALPHA_PACKAGE, _V1_PACKAGE)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(_V1ALPHA_PACKAGE, _V1_PACKAGE)
            method.output_type = method.output_type.replace(_V1ALPHA_PACKAGE, _V1_PACKAGE)
    pool.Add(proto)


def enable_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve reflection (v1 and v1alpha) on `server`, listing `service_names`, grpc.health.v1 and
    both reflection versions."""
    _add_v1_descriptor(descriptor_pool.Default())
    names = (*service_names, HEALTH_SERVICE, *REFLECTION_SERVICES)
    servicer = reflection.aio.ReflectionServicer(names)
    methods = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers(
        tuple(grpc.method_handlers_generic_handler(name, methods) for name in REFLECTION_SERVICES)
    )
