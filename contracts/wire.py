"""A contract as a message (``meshserve.v1.ContractInfo``) and back, fingerprint checked.

Clients (SDK typed calls, ``meshserve proto export``) rebuild the very contract a server serves
from its ContractInfo: `contract_from_info` builds it from the tensors and schema number and
refuses one whose fingerprint differs from the server's.
"""

from __future__ import annotations

from meshserve.contracts.contract import Contract, build_contract
from meshserve.contracts.specs import FieldSpec
from meshserve.errors import FailedPreconditionError, InvalidInputError
from meshserve.v1 import model_pb2, orchestrator_pb2

__all__ = ["contract_from_info", "contract_to_info", "model_contract_from_metadata"]


def _tensor(spec: FieldSpec) -> orchestrator_pb2.ContractTensor:
    return orchestrator_pb2.ContractTensor(
        name=spec.name,
        dtype=spec.dtype,  # type: ignore[arg-type]
        shape=list(spec.shape or ()),
        any_shape=spec.shape is None,
        optional=spec.optional,
    )


def _spec(t: orchestrator_pb2.ContractTensor) -> FieldSpec:
    shape = None if t.any_shape else tuple(int(d) for d in t.shape)
    return FieldSpec(t.name, int(t.dtype), shape, t.optional)


def contract_to_info(contract: Contract) -> orchestrator_pb2.ContractInfo:
    """Everything a client needs to rebuild `contract`, and its `.proto` text."""
    return orchestrator_pb2.ContractInfo(
        kind=contract.kind,
        name=contract.name,
        schema_version=contract.schema_version,
        inputs=[_tensor(f.spec) for f in contract.inputs],
        outputs=[_tensor(f.spec) for f in contract.outputs],
        fingerprint=contract.fingerprint,
        service=contract.service,
        file_name=contract.file_name,
        proto_text=contract.proto_text(),
    )


def _check_fingerprint(contract: Contract, kind: str, name: str, fingerprint: str) -> Contract:
    if fingerprint and contract.fingerprint != fingerprint:
        raise FailedPreconditionError(
            f"{kind} {name!r}: the contract rebuilt here has fingerprint "
            f"{contract.fingerprint[:16]}..., the server's is {fingerprint[:16]}... "
            "(meshserve versions differ: upgrade the older side)"
        )
    return contract


def model_contract_from_metadata(metadata: model_pb2.ModelMetadata) -> Contract:
    """The typed contract a replica serves, from its GetMetadata answer (fingerprint checked)."""
    contract = build_contract(
        "model",
        metadata.name,
        [FieldSpec(s.name, int(s.dtype), tuple(s.shape)) for s in metadata.inputs],
        [FieldSpec(s.name, int(s.dtype), tuple(s.shape)) for s in metadata.outputs],
        schema_version=metadata.schema_version or 1,
    )
    return _check_fingerprint(contract, "model", metadata.name, metadata.contract_fingerprint)


def contract_from_info(info: orchestrator_pb2.ContractInfo) -> Contract:
    """The contract `info` describes; FailedPreconditionError when its fingerprint is not the
    server's (client and server map tensors differently: upgrade the older side)."""
    if info.kind not in ("model", "plan"):
        raise InvalidInputError(f"ContractInfo kind {info.kind!r}: expected 'model' or 'plan'")
    contract = build_contract(
        "model" if info.kind == "model" else "plan",
        info.name,
        [_spec(t) for t in info.inputs],
        [_spec(t) for t in info.outputs],
        schema_version=info.schema_version or 1,
    )
    return _check_fingerprint(contract, info.kind, info.name, info.fingerprint)
