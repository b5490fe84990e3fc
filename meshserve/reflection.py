"""gRPC server reflection in both versions clients speak: ``grpc.reflection.v1`` and ``v1alpha``.

grpcio-reflection implements only ``grpc.reflection.v1alpha.ServerReflection``; grpcurl, Postman
and newer grpc tooling ask for ``grpc.reflection.v1`` first. The two protocols are the same
messages under another package name (same fields, same numbers), so one servicer answers both:
both services are registered with the v1alpha message codecs, and the v1 file descriptor (derived
from the v1alpha one by renaming its package, never written by hand) is added to the default
descriptor pool so the v1 service itself can be listed and described.

Typed services (`meshserve.contracts`) are listed and described live: `enable_reflection(...,
live=contracts)` answers from the `ContractSet` as it is at each request (a new plan version is
reflected at once), then from the default pool for everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from meshserve.contracts.live import ContractSet

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


def _method_to_service(symbol: str) -> str:
    """`symbol`, or its service when it names a method of a service in the default pool."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileContainingSymbol(symbol)
        return symbol
    except KeyError:
        pass
    parent = symbol.rpartition(".")[0]
    try:
        pool.FindServiceByName(parent)
    except KeyError:
        return symbol
    return parent


class _LiveReflectionServicer(reflection.aio.ReflectionServicer):
    """The grpc_reflection servicer, with the typed services of a ContractSet added live."""

    def __init__(self, service_names: Sequence[str], live: ContractSet | None) -> None:
        super().__init__(service_names)
        self._static = tuple(service_names)
        self._live = live

    def _list_services(self, request: Any) -> Any:
        if self._live is not None:
            self._service_names = tuple(sorted((*self._static, *self._live.services())))
        return super()._list_services(request)  # type: ignore[misc]

    @staticmethod
    def _file_response(request: Any, file: descriptor_pb2.FileDescriptorProto) -> Any:
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=[file.SerializeToString(deterministic=True)]
            ),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        file = self._live.file_by_name(filename) if self._live is not None else None
        if file is not None:
            return self._file_response(request, file)
        return super()._file_by_filename(request, filename)  # type: ignore[misc]

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        # A method ("pkg.Service.Method") is not a symbol protobuf's pools look up: its
        # service's file is the answer (grpcurl describes methods that way).
        parent = fully_qualified_name.rpartition(".")[0]
        live = self._live
        for symbol in (fully_qualified_name, parent):
            file = live.file_containing_symbol(symbol) if live is not None and symbol else None
            if file is not None:
                return self._file_response(request, file)
        fully_qualified_name = _method_to_service(fully_qualified_name)
        return super()._file_containing_symbol(request, fully_qualified_name)  # type: ignore[misc]


def enable_reflection(
    server: grpc.aio.Server, service_names: Sequence[str], live: ContractSet | None = None
) -> None:
    """Serve reflection (v1 and v1alpha) on `server`, listing `service_names`, grpc.health.v1,
    both reflection versions and, at each request, the typed services in `live`."""
    _add_v1_descriptor(descriptor_pool.Default())
    names = (*service_names, HEALTH_SERVICE, *REFLECTION_SERVICES)
    servicer = _LiveReflectionServicer(names, live)
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
