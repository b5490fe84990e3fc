"""meshserve.contracts: descriptors, numbering, converters, compatibility, .proto rendering."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, json_format

from meshserve.contracts import (
    FieldSpec,
    StreamStatus,
    breaking_changes,
    build_contract,
    specs_from_proto,
)
from meshserve.contracts.naming import field_names, field_numbers, package_segment, service_name
from meshserve.errors import InternalError, InvalidInputError
from meshserve.limits import LimitExceededError, Limits
from meshserve.v1 import tensor_pb2 as t
from tests.wire import varint

F32, I64, I8, STR, BYT = (
    t.DATA_TYPE_FLOAT32,
    t.DATA_TYPE_INT64,
    t.DATA_TYPE_INT8,
    t.DATA_TYPE_STRING,
    t.DATA_TYPE_BYTES,
)


def mlp(**kw):
    return build_contract(
        "model",
        "mlp",
        [FieldSpec("input", F32, (-1, 64))],
        [FieldSpec("label", I64, (-1,)), FieldSpec("probabilities", F32, (-1, 10))],
        **kw,
    )


def test_mlp_contract_names_and_layout():
    c = mlp()
    assert c.package == "meshserve.models.mlp.v1"
    assert c.service == "meshserve.models.mlp.v1.Mlp"
    assert c.method_path() == "/meshserve.models.mlp.v1.Mlp/Predict"
    assert c.method_path(stream=True) == "/meshserve.models.mlp.v1.Mlp/PredictStream"
    assert c.file_name == "meshserve/models/mlp/v1/mlp.proto"
    fields = {f.name: f.type for f in c.request_class.DESCRIPTOR.fields}
    assert fields["input"] == descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT
    assert {"request_id", "timeout_ms", "input"} == set(fields)
    out = {f.name for f in c.response_class.DESCRIPTOR.fields}
    assert out == {"request_id", "status", "label", "probabilities"}
    assert not c.file.dependency  # self-contained: compiles alone
    stream = c.file.service[0].method[1]
    assert stream.client_streaming and stream.server_streaming


def test_plan_contract_fixed_fields():
    c = build_contract("plan", "digits-pipeline", [FieldSpec("image", F32, (-1, 64))], [])
    assert c.package == "meshserve.plans.digits_pipeline.v1"
    assert c.service.endswith(".DigitsPipeline")
    req = {f.name: f.number for f in c.request_class.DESCRIPTOR.fields}
    assert req["request_id"] == 1 and req["routing_key"] == 2 and req["attributes"] == 3
    resp = {f.name: f.number for f in c.response_class.DESCRIPTOR.fields}
    assert resp["decisions"] == 3 and resp["plan_version"] == 4 and resp["trace_id"] == 5


def test_deterministic_and_order_independent():
    a = mlp()
    b = build_contract(
        "model",
        "mlp",
        [FieldSpec("input", F32, (-1, 64))],
        [FieldSpec("probabilities", F32, (-1, 10)), FieldSpec("label", I64, (-1,))],
    )
    assert a.fingerprint == b.fingerprint
    assert a.file.SerializeToString(deterministic=True) == b.file.SerializeToString(
        deterministic=True
    )
    assert mlp(schema_version=2).fingerprint != a.fingerprint
    assert mlp(schema_version=2).package == "meshserve.models.mlp.v2"


def test_field_numbers_do_not_depend_on_other_fields():
    alone = field_numbers(["label"])
    many = field_numbers(["label", "probabilities", "aaa", "zzz", "input:0"])
    assert alone["label"] == many["label"]
    assert all(n >= 16 and not 19000 <= n < 20000 and n < 2**29 for n in many.values())
    assert len(set(many.values())) == len(many)


def test_field_numbers_in_a_fresh_process_are_the_same():
    code = (
        "from meshserve.contracts.naming import field_numbers;"
        "print(field_numbers(['input', 'label'])['input'])"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert int(out.stdout) == field_numbers(["input"])["input"]


@pytest.mark.parametrize(
    ("tensor", "field"),
    [
        ("input", "input"),
        ("input:0", "input_0"),
        ("dense/BiasAdd:0", "dense_bias_add_0"),
        ("inputIds", "input_ids"),
        ("3d", "t_3d"),
        ("class", "class_tensor"),
        ("string", "string_tensor"),
        ("---", "tensor"),
        ("request_id", "request_id_2"),
    ],
)
def test_field_names(tensor, field):
    assert field_names([tensor], ["request_id", "status"])[tensor] == field


def test_field_name_collisions_get_suffixes():
    names = field_names(["a-b", "a.b", "A_B"])
    assert sorted(names.values()) == ["a_b", "a_b_2", "a_b_3"]


def test_package_and_service_names():
    assert package_segment("Wide_MLP.v2") == "wide_mlp_v2"
    assert package_segment("3d-net") == "n_3d_net"
    assert service_name("digits-pipeline") == "DigitsPipeline"
    assert service_name("3d-net") == "N3dNet"


def test_round_trip_every_dtype():
    specs = [FieldSpec(f"t{d}", d, (-1, 2)) for d in sorted(set(range(1, 15)) - {STR, BYT})] + [
        FieldSpec("s", STR, (-1,)),
        FieldSpec("b", BYT, (-1, 2)),
    ]
    c = build_contract("model", "all", specs, specs)
    arrays = {}
    for spec in specs:
        if spec.dtype == STR:
            arrays[spec.name] = np.array(["héllo", ""], dtype=object)
        elif spec.dtype == BYT:
            arrays[spec.name] = np.array([[b"\x00\xff", b""], [b"x", b"yz"]], dtype=object)
        else:
            arrays[spec.name] = np.arange(4).reshape(2, 2).astype(spec.scalar.numpy)
    wire = c.encode_request(arrays, request_id="r").SerializeToString()
    decoded = c.decode_request(c.request_class.FromString(wire))
    assert decoded.request_id == "r"
    for name, arr in arrays.items():
        got = decoded.arrays[name]
        assert got.dtype == arr.dtype and got.shape == arr.shape, name
        assert got.tolist() == arr.tolist(), name
    back = c.decode_response(c.encode_response(decoded.arrays, request_id="r"))
    assert back.arrays["b"].tolist() == arrays["b"].tolist()


def test_nested_form_for_unfixed_rows():
    c = build_contract(
        "model",
        "text",
        [FieldSpec("tokens", I64, (-1, -1)), FieldSpec("anything", F32, None)],
        [FieldSpec("y", F32, (-1,))],
    )
    assert c.input("tokens").nested and c.input("anything").nested
    msg = c.encode_request(
        {"tokens": np.arange(6).reshape(2, 3), "anything": np.zeros((1, 2, 3), np.float32)}
    )
    as_json = json_format.MessageToDict(msg)
    assert as_json["tokens"]["shape"] == ["2", "3"]
    got = c.decode_request(msg).arrays
    assert got["tokens"].shape == (2, 3) and got["anything"].shape == (1, 2, 3)
    bad = c.request_class()
    bad.tokens.values.extend([1, 2, 3])
    bad.tokens.shape.extend([2, 2])
    bad.anything.values.append(1.0)
    with pytest.raises(InvalidInputError, match="3 values do not fill shape"):
        c.decode_request(bad)
    rank = c.request_class()
    rank.tokens.values.extend([1, 2])
    rank.tokens.shape.extend([2])
    rank.anything.values.append(1.0)
    with pytest.raises(InvalidInputError, match=r"shape \[2\] does not match \[-1, -1\]"):
        c.decode_request(rank)


def test_scalar_and_static_batch_shapes():
    c = build_contract("plan", "p", [FieldSpec("k", F32, ()), FieldSpec("fixed", F32, (2, 3))], [])
    got = c.decode_request(c.encode_request({"k": 1.5, "fixed": np.ones((2, 3))})).arrays
    assert got["k"].shape == () and got["fixed"].shape == (2, 3)
    msg = c.request_class()
    msg.k.extend([1.0, 2.0])
    msg.fixed.extend([0.0] * 6)
    with pytest.raises(InvalidInputError, match="exactly one float32 value"):
        c.decode_request(msg)


def test_bad_input_names_the_field_and_what_was_expected():
    c = mlp()
    msg = c.request_class()
    msg.input.extend([0.0] * 63)
    with pytest.raises(InvalidInputError) as info:
        c.decode_request(msg)
    assert "field 'input'" in info.value.message and "got 63 values" in info.value.message
    assert "64 values per row" in info.value.message
    with pytest.raises(InvalidInputError, match="field 'input' is required"):
        c.decode_request(c.request_class())
    with pytest.raises(InvalidInputError, match="float64 values cannot be sent as"):
        build_contract("model", "m", [FieldSpec("x", I64, (-1,))], []).encode_request(
            {"x": np.array([1.5])}
        )
    with pytest.raises(InvalidInputError, match="has no input 'inputs'"):
        c.encode_request({"inputs": np.zeros((1, 64))})
    with pytest.raises(InvalidInputError, match=r"array of shape \[1, 63\]"):
        c.encode_request({"input": np.zeros((1, 63))})


def test_wrong_wire_type_is_named():
    c = mlp()
    number = c.input("input").number
    wire = varint(number << 3) + varint(7)  # a varint where packed floats are expected
    with pytest.raises(InvalidInputError, match="wrong wire type"):
        c.decode_request(c.request_class.FromString(wire))


def test_names_differing_from_tensor_are_both_quoted():
    c = build_contract("model", "m", [FieldSpec("input:0", F32, (-1, 2))], [])
    with pytest.raises(InvalidInputError, match=r"field 'input_0' \(tensor 'input:0'\)"):
        c.decode_request(c.request_class())
    assert set(c.decode_request(c.encode_request({"input:0": np.ones((1, 2))})).arrays) == {
        "input:0"
    }


def test_int8_range_is_checked():
    c = build_contract("model", "m", [FieldSpec("x", I8, (-1,))], [])
    msg = c.request_class()
    msg.x.extend([1, 300])
    with pytest.raises(InvalidInputError, match=r"value 300 is out of range for int8"):
        c.decode_request(msg)


def test_limits_checked_before_arrays_are_built():
    c = mlp()
    msg = c.request_class()
    msg.input.extend([0.0] * 128)
    with pytest.raises(LimitExceededError, match="max_elements"):
        c.decode_request(msg, Limits(max_elements=100))
    with pytest.raises(LimitExceededError, match="max_string_chars"):
        c.decode_request(c.request_class(request_id="x" * 2000))


def test_optional_inputs():
    c = build_contract(
        "plan", "p", [FieldSpec("x", F32, (-1,)), FieldSpec("hint", F32, (-1,), optional=True)], []
    )
    assert set(c.decode_request(c.encode_request({"x": [1.0]})).arrays) == {"x"}
    with pytest.raises(InvalidInputError, match="cannot be optional"):
        build_contract("plan", "p", [], [FieldSpec("y", F32, (-1,), optional=True)])


def test_response_fixed_fields_and_status():
    c = build_contract("plan", "p", [], [FieldSpec("y", F32, (-1,))])
    msg = c.encode_response(
        {"y": np.ones(2, np.float32), "extra": np.ones(1)},
        request_id="r",
        decisions={"pick": "a"},
        plan_version=3,
    )
    r = c.decode_response(msg)
    assert r.decisions == {"pick": "a"} and r.plan_version == 3 and r.status is None
    failed = c.decode_response(c.encode_response({}, request_id="r", status=StreamStatus(3, "bad")))
    assert failed.status == StreamStatus(3, "bad") and not failed.arrays
    with pytest.raises(InternalError, match="output field 'y' is required"):
        c.encode_response({})


def test_json_names_are_protocs_and_both_forms_parse():
    c = build_contract("plan", "p", [FieldSpec("inputIds", I64, (-1,))], [])
    msg = c.encode_request({"inputIds": [1, 2]}, routing_key="u1", attributes={"tier": "gold"})
    body = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    assert body == {"routing_key": "u1", "attributes": {"tier": "gold"}, "input_ids": ["1", "2"]}
    assert json_format.MessageToDict(msg)["routingKey"] == "u1"
    for form in (body, json_format.MessageToDict(msg)):
        parsed = json_format.ParseDict(form, c.request_class())
        assert c.decode_request(parsed).attributes == {"tier": "gold"}


def test_breaking_changes():
    base = build_contract("plan", "p", [FieldSpec("x", F32, (-1, 4))], [FieldSpec("y", I64, (-1,))])

    def changed(inputs, outputs):
        return [
            str(b) for b in breaking_changes(base, build_contract("plan", "p", inputs, outputs))
        ]

    same_out = [FieldSpec("y", I64, (-1,))]
    assert changed([FieldSpec("x", F32, (-1, 4))], [*same_out, FieldSpec("z", F32, (-1,))]) == []
    assert changed([FieldSpec("x", F32, (-1, 4)), FieldSpec("o", F32, (-1,), True)], same_out) == []
    assert changed([FieldSpec("x", F32, (-1, 4), True)], same_out) == []
    assert changed([FieldSpec("x", F32, (-1, 5))], same_out) == [
        "input 'x': retyped from float32 [-1, 4] to float32 [-1, 5]"
    ]
    assert changed([FieldSpec("x", F32, (-1, 4))], []) == ["output 'y': removed (was int64 [-1])"]
    assert (
        "added as a required input"
        in changed([FieldSpec("x", F32, (-1, 4)), FieldSpec("w", F32, (-1,))], same_out)[0]
    )
    opt = build_contract("plan", "p", [FieldSpec("x", F32, (-1, 4), True)], same_out)
    assert "made required" in str(breaking_changes(opt, base)[0])
    other = build_contract("model", "p", [], [])
    assert "replaced by" in str(breaking_changes(base, other)[0])


def test_specs_from_proto():
    specs = specs_from_proto([t.TensorSpec(name="x", dtype=F32, shape=[-1, 3])], optional=["x"])
    assert specs == (FieldSpec("x", F32, (-1, 3), optional=True),)


def test_bad_specs_are_refused():
    with pytest.raises(InvalidInputError, match="no typed mapping"):
        FieldSpec("x", 99, (-1,))
    with pytest.raises(InvalidInputError, match="appear twice"):
        build_contract("model", "m", [FieldSpec("x", F32, (-1,))] * 2, [])
    with pytest.raises(InvalidInputError, match="model name"):
        build_contract("model", "bad name", [], [])


def _contract_for_protoc():
    return build_contract(
        "plan",
        "digits-pipeline",
        [FieldSpec("image", F32, (-1, 64)), FieldSpec("tokens", STR, (-1, -1), optional=True)],
        [FieldSpec("label", I64, (-1,)), FieldSpec("dense/BiasAdd:0", I8, (-1, 2))],
    )


def test_protoc_compiles_the_rendered_text_to_the_same_descriptor(tmp_path: Path):
    grpc_tools = pytest.importorskip("grpc_tools")
    c = _contract_for_protoc()
    path = tmp_path / c.file_name
    path.parent.mkdir(parents=True)
    path.write_text(c.proto_text())
    out = tmp_path / "set.pb"
    include = Path(grpc_tools.__file__).parent / "_proto"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{tmp_path}",
            f"-I{include}",
            f"--descriptor_set_out={out}",
            c.file_name,
        ],
        check=True,
    )
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    assert compiled == c.file


@pytest.mark.skipif(
    shutil.which("protoc") is None,
    reason="protoc not installed (deploy/bootstrap.sh installs Debian's protobuf-compiler)",
)
def test_system_protoc_generates_cpp_and_java(tmp_path: Path):
    c = _contract_for_protoc()
    (tmp_path / c.file_name).parent.mkdir(parents=True)
    (tmp_path / c.file_name).write_text(c.proto_text())
    for lang in ("cpp", "java"):
        (tmp_path / lang).mkdir()
    subprocess.run(
        [
            "protoc",
            f"-I{tmp_path}",
            f"--cpp_out={tmp_path / 'cpp'}",
            f"--java_out={tmp_path / 'java'}",
            c.file_name,
        ],
        check=True,
    )
    assert (tmp_path / "cpp" / c.file_name.replace(".proto", ".pb.h")).exists()
    assert list((tmp_path / "java").rglob("*.java"))
