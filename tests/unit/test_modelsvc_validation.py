"""Request validation, V2 conversions, handler loading and settings merging (no processes)."""

from __future__ import annotations

import numpy as np
import pytest

from examples.handlers import DigitsHandler
from meshserve.errors import InvalidInputError
from meshserve.limits import LimitExceededError
from meshserve.modelsvc import converters
from meshserve.modelsvc.backend import Signature, TensorSpec
from meshserve.modelsvc.batcher import BatchStats
from meshserve.modelsvc.cli import load_settings
from meshserve.modelsvc.config import (
    auto_concurrent_batches,
    auto_intra_op_threads,
    config_from_mapping,
)
from meshserve.modelsvc.core import InferOutput
from meshserve.modelsvc.handler import IdentityHandler, load_handler
from meshserve.modelsvc.validation import RequestValidator, validate_request
from meshserve.v1 import grpc_predict_v2_pb2 as v2

F32 = np.dtype(np.float32)
SIG = Signature(
    inputs=(TensorSpec("a", F32, (-1, 4)), TensorSpec("b", np.dtype(np.int64), (-1,))),
    outputs=(TensorSpec("y", F32, (-1, 2)),),
)


def good(n: int = 3) -> dict[str, np.ndarray]:
    return {"a": np.zeros((n, 4), np.float32), "b": np.zeros(n, np.int64)}


@pytest.mark.parametrize(
    ("inputs", "outputs", "finite", "expected"),
    [
        ({**good(), "c": np.zeros(3)}, (), True, "unknown input 'c' (model inputs: ['a', 'b'])"),
        ({"a": good()["a"]}, (), True, "missing input 'b' (expected int64[-1])"),
        (
            {**good(), "a": np.zeros((3, 4), np.float64)},
            (),
            True,
            "input 'a': dtype float64 received, expected float32",
        ),
        ({**good(), "a": np.zeros(12, np.float32)}, (), True, "has rank 1, expected rank 2"),
        ({**good(), "a": np.zeros((3, 5), np.float32)}, (), True, "dimension 1 is 5, expected 4"),
        (good(0), (), True, "batch dimension is 0"),
        ({**good(), "b": np.zeros(2, np.int64)}, (), True, "'a' has 3, 'b' has 2 rows"),
        (
            {**good(), "a": np.full((3, 4), np.nan, np.float32)},
            (),
            False,
            "input 'a': 12 non-finite values",
        ),
        (good(), ("z",), True, "unknown output 'z' requested (model outputs: ['y'])"),
    ],
)
def test_bad_requests_are_named_precisely(inputs, outputs, finite, expected) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_request(SIG, inputs, outputs, allow_non_finite=finite)
    assert expected in info.value.message
    with pytest.raises(InvalidInputError) as compiled:
        RequestValidator(SIG, allow_non_finite=finite)(inputs, outputs)
    assert compiled.value.message == info.value.message


def test_valid_request_returns_rows_and_allows_nan_by_default() -> None:
    inputs = {**good(5), "a": np.full((5, 4), np.inf, np.float32)}
    assert validate_request(SIG, inputs, ("y",)) == 5
    assert RequestValidator(SIG)(inputs, ("y",)) == 5
    assert RequestValidator(SIG, allow_non_finite=False)(good(2), ()) == 2
    unbatched = Signature(
        inputs=(TensorSpec("a", F32, (2, 4)),), outputs=(TensorSpec("y", F32, (2,)),)
    )
    assert RequestValidator(unbatched)({"a": np.zeros((2, 4), np.float32)}) == 1


def test_v2_typed_and_raw_contents_decode_the_same() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    typed = v2.ModelInferRequest(model_name="m")
    t = typed.inputs.add(name="a", datatype="FP32", shape=[2, 4])
    t.contents.fp32_contents.extend(x.ravel().tolist())
    raw = v2.ModelInferRequest(model_name="m", raw_input_contents=[x.tobytes()])
    raw.inputs.add(name="a", datatype="FP32", shape=[2, 4])
    a1, _, raw1 = converters.v2_request_from_proto(typed, 1000)
    a2, _, raw2 = converters.v2_request_from_proto(raw, 1000)
    np.testing.assert_array_equal(a1["a"], x)
    np.testing.assert_array_equal(a2["a"], x)
    assert (raw1, raw2) == (False, True)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda r: r.inputs.add(name="a", datatype="FLOAT", shape=[1]), "datatype 'FLOAT'"),
        (
            lambda r: r.inputs.add(
                name="a", datatype="FP32", shape=[2]
            ).contents.fp32_contents.extend([1.0]),
            "1 values in contents.fp32_contents do not match shape [2]",
        ),
        (
            lambda r: r.inputs.add(
                name="a", datatype="INT8", shape=[1]
            ).contents.int_contents.extend([300]),
            "outside the INT8 range",
        ),
        (
            lambda r: r.inputs.add(
                name="a", datatype="FP32", shape=[1]
            ).contents.int64_contents.extend([1]),
            "belong in contents.fp32_contents",
        ),
        (lambda r: r.inputs.add(name="a", datatype="FP32", shape=[1 << 20, 1 << 20]), "limit"),
        (lambda r: r.inputs.add(name="a", datatype="FP32", shape=[-1]), "negative dimension"),
    ],
)
def test_v2_bad_inputs(build, expected) -> None:
    request = v2.ModelInferRequest(model_name="m")
    build(request)
    with pytest.raises((InvalidInputError, LimitExceededError)) as info:
        converters.v2_request_from_proto(request, 1 << 20)
    assert expected in info.value.message


def test_v2_raw_byte_length_and_count_mismatch() -> None:
    request = v2.ModelInferRequest(model_name="m", raw_input_contents=[b"\0" * 7])
    request.inputs.add(name="a", datatype="FP32", shape=[2])
    with pytest.raises(InvalidInputError, match=r"7 bytes .* \(8 bytes expected\)"):
        converters.v2_request_from_proto(request, 100)
    request.raw_input_contents.append(b"")
    with pytest.raises(InvalidInputError, match="2 entries for 1 inputs"):
        converters.v2_request_from_proto(request, 100)


def test_v2_response_typed_and_raw() -> None:
    from meshserve.modelsvc.config import BatchingConfig
    from meshserve.modelsvc.core import ModelInfo, model_contract

    info = ModelInfo(
        "m", "1", "onnx", SIG, "s", "h", "i", BatchingConfig(), model_contract("m", SIG)
    )
    out = InferOutput(
        {"y": np.ones((2, 2), np.float32), "l": np.array([1, 2], np.int64)},
        BatchStats(4, 2, 10, 20),
    )
    request = v2.ModelInferRequest(model_name="m", id="r1")
    typed = converters.v2_response_to_proto(request, info, out, raw_outputs=False)
    assert list(typed.outputs[0].contents.fp32_contents) == [1.0] * 4
    assert list(typed.outputs[1].contents.int64_contents) == [1, 2]
    assert typed.outputs[1].datatype == "INT64" and typed.id == "r1"
    raw = converters.v2_response_to_proto(request, info, out, raw_outputs=True)
    assert np.frombuffer(raw.raw_output_contents[1], np.int64).tolist() == [1, 2]


def test_handler_loading_and_example_handler() -> None:
    assert isinstance(load_handler(""), IdentityHandler)
    handler = load_handler("examples.handlers:DigitsHandler")
    assert handler.allow_non_finite is False
    x = {"input": np.array([[-3.0, 5.0, 40.0]], np.float32)}
    np.testing.assert_array_equal(handler.preprocess(x)["input"], [[0.0, 5.0, 16.0]])
    probs = handler.postprocess({"probabilities": np.array([[1.0, 3.0]], np.float32)})
    np.testing.assert_allclose(probs["probabilities"], [[0.25, 0.75]])
    assert isinstance(DigitsHandler(), DigitsHandler)
    for spec, expected in (("nocolon", "module:Class"), ("no_such_mod:X", "cannot be imported")):
        with pytest.raises(InvalidInputError, match=expected):
            load_handler(spec)
    with pytest.raises(InvalidInputError, match="no attribute 'Nope'"):
        load_handler("examples.handlers:Nope")


def test_settings_file_and_flags_merge() -> None:
    file_values = {
        "model": "m.onnx",
        "name": "n",
        "batch_max": 8,
        "session": {"inter_op_threads": 2},
    }
    flags = {"batch_max": 16, "threads": 3, "name": None}
    config = config_from_mapping(load_settings(file_values, flags))
    assert config.model_path == "m.onnx" and config.name == "n"
    assert config.batching.max_batch_rows == 16  # the flag wins
    assert config.session.intra_op_threads == 3 and config.session.inter_op_threads == 2
    with pytest.raises(InvalidInputError, match="unknown setting 'bogus'"):
        config_from_mapping(load_settings({"bogus": 1, "model": "m", "name": "n"}, {}))
    with pytest.raises(InvalidInputError, match="batch_max must be >= 1"):
        config_from_mapping(load_settings({"model": "m", "name": "n", "batch_max": 0}, {}))


@pytest.mark.parametrize(
    ("cpus", "batches", "threads"), [(1, 1, 1), (2, 1, 1), (4, 2, 1), (16, 2, 7)]
)
def test_auto_sizing_leaves_a_core_for_the_event_loop(
    cpus: int, batches: int, threads: int
) -> None:
    assert auto_concurrent_batches(cpus) == batches
    assert auto_intra_op_threads(cpus, batches) == threads
    assert batches * threads <= max(1, cpus - 1)  # compute never oversubscribes the cores
    with pytest.raises(InvalidInputError, match="max_concurrent_batches must be >= 0"):
        config_from_mapping(
            load_settings({"model": "m", "name": "n", "max_concurrent_batches": -1}, {})
        )
