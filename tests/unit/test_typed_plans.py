"""Plans' typed contracts: stamping, compatibility on apply, the live set, the wire form."""

from __future__ import annotations

import pytest

from meshserve.contracts import FieldSpec, build_contract
from meshserve.contracts.live import ContractSet
from meshserve.contracts.wire import contract_from_info, contract_to_info
from meshserve.errors import FailedPreconditionError, NotFoundError
from meshserve.orchestrator.typed_plans import follow_plan_contracts, plan_contract, stamp_plan
from meshserve.v1 import plan_pb2, tensor_pb2

F32, I64 = tensor_pb2.DATA_TYPE_FLOAT32, tensor_pb2.DATA_TYPE_INT64


def _spec(name: str, dtype: int, *shape: int) -> tensor_pb2.TensorSpec:
    return tensor_pb2.TensorSpec(name=name, dtype=dtype, shape=list(shape))


def _plan(version: int = 1) -> plan_pb2.Plan:
    return plan_pb2.Plan(name="p", version=version, inputs=[_spec("x", F32, -1, 4)])


OUTPUTS = {"y": _spec("label", I64, -1), "logic_out": None}


def test_stamp_sets_typed_and_notes_unknown_outputs():
    plan = _plan()
    typed = stamp_plan(plan, OUTPUTS, None, breaking_change=False)
    assert plan.typed.schema_version == 1 and plan.typed.fingerprint == typed.contract.fingerprint
    assert [o.name for o in plan.typed.outputs] == ["y"]  # renamed to the plan output's name
    assert "output 'logic_out' is left out" in typed.notes[0]
    assert plan_contract(plan).fingerprint == typed.contract.fingerprint  # rebuilt from the store


def test_compatible_change_keeps_the_schema_breaking_needs_the_flag():
    active = _plan()
    stamp_plan(active, OUTPUTS, None, breaking_change=False)
    more = _plan(2)
    assert stamp_plan(more, {**OUTPUTS, "z": _spec("z", F32, -1)}, active,
                      breaking_change=False).contract.schema_version == 1  # fmt: skip
    retyped = _plan(2)
    retyped.inputs[0].shape[:] = [-1, 5]
    with pytest.raises(FailedPreconditionError, match=r"input 'x': retyped .* breaking_change"):
        stamp_plan(retyped, OUTPUTS, active, breaking_change=False)
    typed = stamp_plan(retyped, OUTPUTS, active, breaking_change=True)
    assert typed.contract.schema_version == 2 and retyped.typed.schema_version == 2
    assert typed.contract.package == "meshserve.plans.p.v2"
    assert any("schema v1 -> v2" in n for n in typed.notes)


def test_a_plan_stored_before_typed_contracts_gets_its_declared_outputs():
    plan = _plan()
    plan.output_specs.append(_spec("y", I64, -1))
    contract = plan_contract(plan)
    assert [f.name for f in contract.outputs] == ["y"] and contract.schema_version == 1


def test_follow_plan_contracts_tracks_the_active_versions():
    plans = [_plan()]
    stamp_plan(plans[0], OUTPUTS, None, breaking_change=False)
    callbacks = []
    live = ContractSet()
    sync = follow_plan_contracts(lambda: plans, callbacks.append, live)
    assert live.services() == ["meshserve.plans.p.v1.P"]
    plans.clear()
    sync()
    assert live.services() == []


def test_contract_set_resolves_paths():
    live = ContractSet()
    c = build_contract("plan", "digits-pipeline", [FieldSpec("x", F32, (-1,))], [])
    live.put(c)
    assert live.resolve(c.method_path()).contract is c
    assert live.resolve(c.method_path(stream=True)).stream
    assert live.resolve("/meshserve.v1.Orchestrator/Execute") is None
    stale = live.resolve("/meshserve.plans.digits_pipeline.v7.DigitsPipeline/Execute")
    assert stale.error is not None and "schema v1" in stale.error.message
    missing = live.resolve("/meshserve.plans.other.v1.Other/Execute")
    assert isinstance(missing.error, NotFoundError)
    assert isinstance(live.resolve(c.service.join("//") + "Nope").error, NotFoundError)
    assert live.file_containing_symbol(c.package + ".ExecuteRequest") is c.file
    assert live.file_containing_symbol(c.package + ".Missing") is None
    assert live.file_by_name(c.file_name) is c.file
    live.remove("digits-pipeline")
    assert live.services() == []


def test_wire_round_trip_and_fingerprint_check():
    c = build_contract(
        "plan", "p", [FieldSpec("x", F32, None, optional=True)], [FieldSpec("y", I64, ())]
    )
    info = contract_to_info(c)
    assert contract_from_info(info).fingerprint == c.fingerprint
    assert info.proto_text.startswith("// Typed gRPC contract of plan 'p'")
    info.inputs[0].dtype = I64
    with pytest.raises(FailedPreconditionError, match="fingerprint"):
        contract_from_info(info)
