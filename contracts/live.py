"""`ContractSet`: the typed contracts a server serves right now, looked up per call.

A server puts and removes contracts as models load and plans change; every typed call and every
reflection request resolves against the set as it is at that moment, so a new plan version is
served (and reflected) without a restart. Pure data: no grpc.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import descriptor_pb2

from meshserve.contracts.contract import Contract
from meshserve.contracts.naming import package_segment
from meshserve.errors import FailedPreconditionError, MeshError, NotFoundError
from meshserve.names import quote

__all__ = ["ContractSet", "Resolved"]

_GROUPS = {"models": "model", "plans": "plan"}


@dataclass(frozen=True)
class Resolved:
    """What a method path resolves to: a contract and whether it is the stream method, or the
    error a call to it must fail with (NOT_FOUND: no such model/plan here; FAILED_PRECONDITION:
    another schema version is served)."""

    contract: Contract | None = None
    stream: bool = False
    error: MeshError | None = None


class ContractSet:
    """Contracts by model/plan name; at most one (the live schema version) per name."""

    def __init__(self) -> None:
        self._by_name: dict[str, Contract] = {}
        self._by_service: dict[str, Contract] = {}
        self._by_segment: dict[tuple[str, str], Contract] = {}

    def put(self, contract: Contract) -> None:
        """Serve `contract` (replacing the one of the same name)."""
        self.remove(contract.name)
        self._by_name[contract.name] = contract
        self._by_service[contract.service] = contract
        self._by_segment[(contract.kind, package_segment(contract.name))] = contract

    def remove(self, name: str) -> None:
        old = self._by_name.pop(name, None)
        if old is not None:
            self._by_service.pop(old.service, None)
            self._by_segment.pop((old.kind, package_segment(old.name)), None)

    def get(self, name: str) -> Contract | None:
        return self._by_name.get(name)

    def contracts(self) -> list[Contract]:
        return [self._by_name[n] for n in sorted(self._by_name)]

    def services(self) -> list[str]:
        """Fully qualified names of the typed services served now."""
        return sorted(self._by_service)

    def resolve(self, method_path: str) -> Resolved | None:
        """The contract of ``/<package>.<Service>/<Method>``; None when the path is not in a
        ``meshserve.models.``/``meshserve.plans.`` package at all."""
        service, _, method = method_path.lstrip("/").partition("/")
        contract = self._by_service.get(service)
        if contract is not None:
            if method == contract.unary_method:
                return Resolved(contract, stream=False)
            if method == contract.stream_method:
                return Resolved(contract, stream=True)
            return Resolved(
                error=NotFoundError(
                    f"{contract.kind} {contract.name!r} has no method {quote(method)} (its "
                    f"methods: {contract.unary_method}, {contract.stream_method})"
                )
            )
        parts = service.split(".")
        if len(parts) < 3 or parts[0] != "meshserve" or parts[1] not in _GROUPS:
            return None
        kind, segment = _GROUPS[parts[1]], parts[2]
        live = self._by_segment.get((kind, segment))
        if live is not None:
            return Resolved(
                error=FailedPreconditionError(
                    f"{kind} {live.name!r} now serves schema v{live.schema_version} (package "
                    f"{live.package}); {quote(service)} is not served: regenerate the stubs "
                    f"(meshserve proto export --{kind} {live.name})"
                )
            )
        return Resolved(error=NotFoundError(f"{kind} {quote(segment)} is not served here"))

    def file_by_name(self, file_name: str) -> descriptor_pb2.FileDescriptorProto | None:
        for contract in self._by_name.values():
            if contract.file_name == file_name:
                return contract.file
        return None

    def file_containing_symbol(self, symbol: str) -> descriptor_pb2.FileDescriptorProto | None:
        """The file of a package-qualified service, method, message or field name."""
        for contract in self._by_name.values():
            if symbol.startswith(contract.package + "."):
                try:
                    contract.pool.FindFileContainingSymbol(symbol)
                except KeyError:
                    return None
                return contract.file
        return None
