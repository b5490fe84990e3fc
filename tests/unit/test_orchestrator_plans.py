# ruff: noqa: E501  (the table of invalid plans reads best one case per line)
"""Plan parsing, validation, the safe expression evaluator and the aggregation functions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshserve.errors import InvalidInputError, NotFoundError
from meshserve.orchestrator.comparison import Comparison, comparison_of
from meshserve.orchestrator.expr import compile_expression
from meshserve.orchestrator.plans.parse import loads_json, parse_plan_text, plan_to_json
from meshserve.orchestrator.plans.validate import ValidationContext, validate_plan
from meshserve.orchestrator.steps.aggregations import majority_vote, max_probability, weighted_mean
from meshserve.orchestrator.traffic import TrafficPolicy, TrafficTable, pick_weighted, stable_unit
from meshserve.v1 import model_pb2, plan_pb2, tensor_pb2

F32, F64, I64 = (
    tensor_pb2.DATA_TYPE_FLOAT32,
    tensor_pb2.DATA_TYPE_FLOAT64,
    tensor_pb2.DATA_TYPE_INT64,
)


def _spec(name, dtype, shape):
    return tensor_pb2.TensorSpec(name=name, dtype=dtype, shape=shape)


META = {
    "scaler": model_pb2.ModelMetadata(
        name="scaler",
        inputs=[_spec("input", F32, [-1, 64])],
        outputs=[_spec("scaled", F32, [-1, 64])],
    ),
    "mlp": model_pb2.ModelMetadata(
        name="mlp",
        inputs=[_spec("input", F32, [-1, 64])],
        outputs=[_spec("label", I64, [-1]), _spec("probabilities", F32, [-1, 10])],
    ),
    "wide": model_pb2.ModelMetadata(
        name="wide", inputs=[_spec("input", F64, [-1, 64])], outputs=[_spec("y", F64, [-1])]
    ),
}


async def _meta(model: str, version: str) -> model_pb2.ModelMetadata:
    if model not in META:
        raise NotFoundError(f"no replica of '{model}' is registered")
    return META[model]


CTX = ValidationContext(metadata=_meta, logic_exists=lambda name: name == "known")


async def _validate(text: str) -> None:
    await validate_plan(parse_plan_text(text), CTX)


def test_yaml_conveniences_and_json_round_trip():
    plan = parse_plan_text(
        """
name: p
inputs: [{name: input, dtype: float32, shape: [-1, 64]}]
steps:
  - {name: s, model: scaler, inputs: [input.input]}
  - name: e
    inputs: {input: s.scaled}
    ensemble:
      aggregation: majority_vote
      output: label
      members: [{model: mlp}, {model: {model: mlp, version: "2"}, weight: 2}]
outputs: {label: e.label}
"""
    )
    assert plan.inputs[0].dtype == F32
    assert plan.steps[0].model.model == "scaler" and dict(plan.steps[0].inputs) == {
        "input": "input.input"
    }
    members = plan.steps[1].ensemble.members
    assert [m.name for m in members] == ["mlp", "mlp@2"]
    assert plan.steps[1].ensemble.aggregation == plan_pb2.AGGREGATION_MAJORITY_VOTE
    assert loads_json(plan_to_json(plan).encode()) == plan


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: p\nsteps: [{name: a, model: mlp, inputs: {input: input.input}}]\noutputs: {x: a.nope}",
         "plan output 'x': wired to 'a.nope' but step 'a' has no output 'nope'"),
        ("name: p\nsteps: [{name: a, model: mlp, inputs: {input: b.x}}]\noutputs: {x: a.label}",
         "step 'a' input 'input': wired to 'b.x' but there is no step 'b'"),
        ("name: p\nsteps: [{name: a, model: mlp, inputs: {}}]\noutputs: {x: a.label}",
         "step 'a' input 'input': model 'mlp' needs input 'input' (float32 [-1,64]) but it is not wired"),
        ("name: p\nsteps: [{name: a, model: mlp, inputs: {input: input.input, extra: input.input}}]\n"
         "outputs: {x: a.label}", "step 'a' input 'extra': model 'mlp' has no input 'extra'"),
        ("name: p\nsteps: [{name: a, model: ghost, inputs: {input: input.input}}]\noutputs: {x: a.y}",
         "step 'a': unknown model 'ghost'"),
        ("name: p\nsteps: [{name: s, model: scaler, inputs: {input: input.input}},"
         " {name: w, model: wide, inputs: {input: s.scaled}}]\noutputs: {y: w.y}",
         "step 'w' input 'input': expects float64 [-1,64], wired to 's.scaled' float32 [-1,64]"),
        ("name: p\nsteps: [{name: a, model: scaler, inputs: {input: b.scaled}},"
         " {name: b, model: scaler, inputs: {input: a.scaled}}]\noutputs: {x: a.scaled}",
         "plan has a cycle: a -> b -> a"),
        ("name: p\nsteps: [{name: a, logic: unknown_fn, inputs: {}}]\noutputs: {x: a.y}",
         "step 'a' logic: no registered function 'unknown_fn'"),
        ("name: p\nsteps: [{name: a, inputs: {input: input.input}, select: {cases: "
         "[{when: \"inputs['input'].__class__\", branch: {model: mlp}}]}}]\noutputs: {x: a.label}",
         "step 'a' select cases[0] when: expression"),
        ("name: p\nsteps: [{name: a, inputs: {input: input.input}, ensemble: {output: label,"
         " members: [{model: mlp}]}}]\noutputs: {x: a.label}", "ensemble aggregation: required"),
        ("name: p\nsteps: [{name: a, inputs: {input: input.input}, ensemble: {output: label,"
         " aggregation: median, members: [{model: mlp}]}}]\noutputs: {x: a.label}",
         "step 'a' ensemble aggregation: unknown aggregation 'median' (known: 'custom', 'majority_vote', "),
        ("name: p\nsteps: [{name: a, inputs: {input: input.input}, ensemble: {output: probabilities,"
         " aggregation: weighted_mean, members: [{model: mlp}, {model: scaler}]}}]\noutputs: {x: a.probabilities}",
         "step 'a' ensemble output: members do not all have output 'probabilities'"),
        ("name: p\nsteps: [{name: a, inputs: {input: input.input}, ensemble: {output: probabilities,"
         " aggregation: weighted_mean, members: [{model: mlp}]}}]\noutputs: {x: a.probabilities}",
         "step 'a' ensemble: member weights must sum to more than 0"),
        ("name: p\nsteps: [{name: a, inputs: {input: input.input}, ensemble: {output: probabilities,"
         " aggregation: weighted_mean, members: [{model: mlp, weight: \"NaN\"}]}}]\noutputs: {x: a.probabilities}",
         "step 'a' ensemble: member weights must be finite and not negative (member 'mlp' has nan)"),
        ("name: p\nsteps: [{name: a, inputs: {input: input.input}, ensemble: {output: probabilities,"
         " aggregation: majority_vote, members: [{model: mlp}]}}]\noutputs: {x: a.probabilities}",
         "step 'a' ensemble output 'probabilities': majority_vote needs integer labels, members return float32"),
        ("name: p\nsteps: [{name: a, inputs: {input: input.input}, ensemble: {output: label,"
         " aggregation: max_probability, members: [{model: mlp}]}}]\noutputs: {x: a.label}",
         "step 'a' ensemble output 'label': max_probability needs [rows, classes] outputs"),
        ("name: p\nsteps: [{name: a, inputs: {input: input.input}, ensemble: {output: label,"
         " aggregation: custom, members: [{model: mlp}]}}]\noutputs: {x: a.label}",
         "step 'a' ensemble aggregator: required with aggregation custom"),
        ("name: p\nsteps: [{name: a, inputs: {input: input.input}, ensemble: {output: label,"
         " aggregation: custom, aggregator: nope, members: [{model: mlp}]}}]\noutputs: {x: a.label}",
         "step 'a' ensemble aggregator: no registered aggregation or logic function 'nope'"),
        ("name: p\nsteps: [{name: a, inputs: {input: input.input}, split: {branches:"
         " [{model: mlp, weight: 0}]}}]\noutputs: {x: a.label}", "branch weights must sum to more than 0"),
        ("name: p\nsteps: [{name: a, inputs: {input: input.input}, bandit: {arms: [{model: mlp}]}}]\n"
         "outputs: {x: a.label}", "bandit: needs at least 2 arms"),
        ("name: p\npython: mod:attr\nsteps: [{name: a, model: mlp}]", "'python' is set"),
        ("name: p\nsteps: [{name: a, model: mlp, inputs: {input: inputx}}]\noutputs: {x: a.label}",
         "reference 'inputx' must look like"),
    ],
)  # fmt: skip
async def test_invalid_plans_name_step_and_field(text, message):
    with pytest.raises(InvalidInputError) as err:
        await _validate(text)
    assert message in err.value.message


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os')",
        "attributes.get('x')",
        "inputs['x'].__class__",
        "(lambda: 1)()",
        "[a for a in inputs]",
        "open('/etc/passwd')",
        "2 ** 1000000",
        "x := 1",
    ],
)
def test_expression_whitelist_refuses(source):
    with pytest.raises(InvalidInputError):
        compile_expression(source, frozenset({"attributes", "inputs"}))


def test_expression_evaluates():
    names = frozenset({"attributes", "inputs"})
    bindings = {"attributes": {"tier": "gold"}, "inputs": {"x": np.zeros((9, 4))}}
    assert compile_expression(
        "inputs['x'].shape[0] > 8 and attributes['tier'] == 'gold'", names
    ).truth(bindings)
    assert compile_expression("max(len(inputs['x']), 3) == 9", names).truth(bindings)
    assert not compile_expression("'tier' not in attributes", names).truth(bindings)
    with pytest.raises(InvalidInputError, match="single truth value"):
        compile_expression("inputs['x'] > 0", names).truth(bindings)
    with pytest.raises(InvalidInputError, match="no such key"):
        compile_expression("attributes['missing'] == 1", names).truth(bindings)


def test_majority_vote_ties_go_to_smallest_label():
    a = np.array([3, 1, 2, 7])
    b = np.array([1, 1, 5, 7])
    c = np.array([2, 0, 9, 4])
    np.testing.assert_array_equal(majority_vote([a, b, c], [1, 1, 1]), [1, 1, 2, 7])
    np.testing.assert_array_equal(majority_vote([a, b, c], [1, 1, 3]), [2, 0, 9, 4])
    with pytest.raises(InvalidInputError, match="integer labels"):
        majority_vote([a.astype(float)], [1])


@settings(max_examples=300, deadline=None)
@given(
    members=st.integers(1, 4),
    shape=st.tuples(st.integers(0, 6), st.integers(1, 3)),
    scale=st.sampled_from([1, 10**12]),  # dense table, and labels too far apart for one
    data=st.data(),
)
def test_majority_vote_matches_a_per_label_count(
    members: int, shape: tuple[int, int], scale: int, data: st.DataObject
) -> None:
    labels = st.integers(-3, 4).map(lambda v: v * scale)
    arrays = [
        np.array(
            data.draw(st.lists(labels, min_size=shape[0] * shape[1], max_size=shape[0] * shape[1])),
            np.int64,
        ).reshape(shape)
        for _ in range(members)
    ]
    weights = data.draw(st.lists(st.floats(0.0, 5.0), min_size=members, max_size=members))
    expected = np.empty(shape, np.int64)
    present = {int(v) for array in arrays for v in array.ravel()}  # candidates everywhere
    for pos in np.ndindex(*shape):
        totals = dict.fromkeys(present, 0.0)
        for array, weight in zip(arrays, weights, strict=True):
            totals[int(array[pos])] += weight
        best = max(totals.values())
        expected[pos] = min(label for label, total in totals.items() if total == best)
    np.testing.assert_array_equal(majority_vote(arrays, weights), expected)


def test_max_probability_and_weighted_mean():
    p = np.array([[0.6, 0.4], [0.5, 0.5]], np.float32)
    q = np.array([[0.3, 0.7], [0.9, 0.1]], np.float32)
    np.testing.assert_array_equal(max_probability([p, q]), q)
    np.testing.assert_allclose(weighted_mean([p, q], [1, 3]), 0.25 * p + 0.75 * q, rtol=1e-6)
    assert weighted_mean([p, q], [1, 1]).dtype == np.float32
    label = Comparison(plan_pb2.SHADOW_COMPARISON_LABEL)
    assert label.compare(p, q).agreed.tolist() == [False, True]  # argmax 0 vs 1, 0 vs 0
    assert label.compare(np.array([1, 2, 3]), np.array([1, 2, 4])).agreed.tolist() == [
        True, True, False,
    ]  # fmt: skip


def test_shadow_comparisons_suit_the_output():
    p = np.array([[0.6, 0.4], [0.5, 0.5], [0.9, 0.1]])
    q = np.array([[0.55, 0.45], [0.1, 0.9], [0.9, 0.1]])
    probability = comparison_of(
        plan_pb2.ShadowStep(comparison=plan_pb2.SHADOW_COMPARISON_PROBABILITY)
    )
    assert probability.tolerance == 0.1
    rows = probability.compare(p, q)
    assert rows.agreed.tolist() == [True, False, True]
    np.testing.assert_allclose(rows.distance, [0.05, 0.4, 0.0])
    regression = comparison_of(
        plan_pb2.ShadowStep(comparison=plan_pb2.SHADOW_COMPARISON_REGRESSION, tolerance=0.5)
    )
    rows = regression.compare(np.array([1.0, 2.0, 3.0]), np.array([1.2, 2.0, 4.0]))
    assert rows.agreed.tolist() == [True, True, False]
    np.testing.assert_allclose(rows.distance, [0.2, 0.0, 1.0])
    assert comparison_of(plan_pb2.ShadowStep()).name == "label"
    mismatch = probability.compare(p, p[:, :1])
    assert mismatch.agreed.tolist() == [False] * 3 and np.isinf(mismatch.distance).all()


def test_traffic_and_stable_hash():
    assert stable_unit("a", "b") == stable_unit("a", "b") != stable_unit("a", "c")
    assert pick_weighted(["x", "y"], [1, 3], 0.2) == "x"
    assert pick_weighted(["x", "y"], [1, 3], 0.3) == "y"
    table = TrafficTable(rng=lambda: 0.99)
    table.set(TrafficPolicy("mlp", {"1": 0.5, "2": 0.5}, sticky=True))
    assert table.choose_version("other") == ""
    assert table.choose_version("mlp") == "2"
    picks = {table.choose_version("mlp", f"k{i}") for i in range(50)}
    assert picks == {"1", "2"}
    assert all(
        table.choose_version("mlp", f"k{i}") == table.choose_version("mlp", f"k{i}")
        for i in range(20)
    )
    with pytest.raises(InvalidInputError, match="weights must sum"):
        TrafficPolicy("mlp", {"1": 0.0}).validate()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: ../..\nsteps: [{name: a, model: scaler, inputs: [input.input]}]\noutputs: {x: a.s}",
         "plan name '../..': expected 1-128 characters"),
        ("name: p\nsteps: [{name: 'a b', model: scaler, inputs: [input.input]}]\noutputs: {x: a.s}",
         "steps[0] step name 'a b'"),
        ("name: p\nsteps: [{name: a, model: ../x, inputs: [input.input]}]\noutputs: {x: a.s}",
         "step 'a' model name '../x'"),
        ("name: p\nsteps: [{name: a, logic: 'x/y', inputs: {}}]\noutputs: {x: a.y}",
         "step 'a' logic function name 'x/y'"),
    ],
)  # fmt: skip
async def test_names_follow_the_grammar_at_every_entry_point(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        await _validate(text)
    assert message in err.value.message
