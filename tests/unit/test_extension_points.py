"""The step-kind and aggregation tables: they match the proto, and their doors open.

A test-only step kind and a test-only aggregation are added through the public registries only
(``register_step_kind``, ``register_aggregation``), then parsed from YAML, validated (passing and
failing) and executed by the real Engine over the example ONNX models.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meshserve.errors import InvalidInputError
from meshserve.orchestrator.engine import Engine, ExecuteCall
from meshserve.orchestrator.inprocess import InProcessCaller
from meshserve.orchestrator.plans.parse import loads_json, parse_plan_text, plan_to_json
from meshserve.orchestrator.plans.validate import (
    PlanCheck,
    StepOutputs,
    ValidationContext,
    validate_plan,
)
from meshserve.orchestrator.steps import (
    AGGREGATIONS,
    STEP_KINDS,
    Aggregation,
    StepKind,
    custom_params,
    register_aggregation,
    register_step_kind,
    unregister_aggregation,
    unregister_step_kind,
)
from meshserve.orchestrator.steps.base import Outputs, StepContext
from meshserve.v1 import plan_pb2, tensor_pb2
from tests.unit.test_orchestrator_engine import DictPlans

FLOATS = (tensor_pb2.DATA_TYPE_FLOAT32, tensor_pb2.DATA_TYPE_FLOAT64)


# ---- the tables match the proto ---------------------------------------------------------------
def test_step_kinds_cover_the_step_oneof() -> None:
    members = {f.name for f in plan_pb2.Step.DESCRIPTOR.oneofs_by_name["kind"].fields}
    assert "custom" in members  # the door for registered kinds outside the oneof
    assert set(STEP_KINDS) == members - {"custom"}
    assert all(kind.name == name for name, kind in STEP_KINDS.items())


def test_aggregations_cover_the_aggregation_enum() -> None:
    names = {
        v.name.removeprefix("AGGREGATION_").lower()
        for v in plan_pb2.Aggregation.DESCRIPTOR.values
        if v.number != plan_pb2.AGGREGATION_UNSPECIFIED
    }
    assert set(AGGREGATIONS) == names


# ---- unknown kinds fail at parsing and validation, never per request ----------------------------
KNOWN = "known kinds: 'bandit', 'ensemble', 'logic', 'model', 'select', 'shadow' or 'split'"
ONE_STEP = "name: p\nsteps: [{name: a, %s, inputs: {input: input.input}}]\noutputs: {x: a.y}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("nope: {x: 1}", f"step 'a': unknown step kind 'nope' ({KNOWN})"),
        ("custom: {kind: nope}", f"step 'a': unknown step kind 'nope' ({KNOWN})"),
        ("custom: {kind: model}", "step 'a': kind 'model' is built in; write it as 'model'"),
        ("model: mlp, logic: fn", "step 'a': sets more than one kind (model, logic)"),
    ],
)
def test_unknown_kind_fails_parsing(body: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_plan_text(ONE_STEP % body)
    assert message in err.value.message


def _proto_plan(custom_kind: str) -> plan_pb2.Plan:
    step = plan_pb2.Step(name="a", custom=plan_pb2.CustomStep(kind=custom_kind))
    return plan_pb2.Plan(name="p", version=1, steps=[step], outputs={"x": "a.y"})


@pytest.mark.parametrize(
    ("custom_kind", "message"),
    [
        ("nope", f"step 'a': unknown step kind 'nope' ({KNOWN})"),
        ("", f"step 'a': no kind set (expected one of {KNOWN.removeprefix('known kinds: ')})"),
        ("split", "step 'a': kind 'split' is built in"),
    ],
)
async def test_unknown_kind_fails_validation_and_requests(
    caller: InProcessCaller, custom_kind: str, message: str
) -> None:
    plan = _proto_plan(custom_kind)
    with pytest.raises(InvalidInputError) as err:
        await validate_plan(plan, ValidationContext(metadata=caller.metadata))
    assert message in err.value.message
    # A plan that skipped validation fails the same way per request (INVALID_ARGUMENT, no
    # KeyError/INTERNAL).
    engine = Engine(caller, DictPlans(plan))
    with pytest.raises(InvalidInputError) as err:
        await engine.execute(ExecuteCall("p", {"input": np.zeros((1, 64), np.float32)}))
    assert message in err.value.message


# ---- a test-only step kind ---------------------------------------------------------------------
class ScaleKind(StepKind):
    """Test-only: ``test_scale: 2.0`` (or ``{factor: 2.0}``) multiplies its one input ``x``
    by a positive factor; its output ``y`` has the input's dtype and shape."""

    name = "test_scale"

    def parse(self, body: Any, where: str) -> Any:
        return {"factor": body} if isinstance(body, int | float) else body

    async def validate(self, step: plan_pb2.Step, check: PlanCheck) -> StepOutputs:
        where = f"step '{step.name}' test_scale"
        factor = custom_params(step).get("factor")
        if not isinstance(factor, int | float) or not math.isfinite(factor) or factor <= 0:
            raise InvalidInputError(f"{where} factor: {factor!r} must be a positive number")
        wiring = check.wiring(step)
        if list(wiring) != ["x"]:
            raise InvalidInputError(f"{where}: wire one input 'x' (inputs: {sorted(wiring)})")
        return {"y": check.spec_of(wiring["x"])}

    def compile(self, step: plan_pb2.Step) -> float:
        return float(custom_params(step)["factor"])

    async def execute(self, ctx: StepContext, inputs: Mapping[str, np.ndarray]) -> Outputs:
        x = inputs["x"]
        return {"y": (x * ctx.plan.prepared[ctx.step.name]).astype(x.dtype)}


@pytest.fixture(scope="module")
def caller(models_dir: Path) -> InProcessCaller:
    return InProcessCaller.from_dir(models_dir)


@pytest.fixture(scope="module")
def digits(models_dir: Path) -> np.ndarray:
    x: np.ndarray = np.load(models_dir / "digits_test.npz")["X"][:16].astype(np.float32)
    return x


@pytest.fixture
def scale_kind() -> Iterator[StepKind]:
    kind = register_step_kind(ScaleKind())
    yield kind
    unregister_step_kind(kind.name)


SCALED = """
name: scaled
inputs: [{name: input, dtype: %s, shape: [-1, 64]}]
steps:
  - {name: double, test_scale: %s, inputs: {%s}}
  - {name: scaler, model: scaler, inputs: {input: double.y}}
  - {name: mlp, model: mlp, inputs: {input: scaler.scaled}}
outputs: {label: mlp.label, y: double.y}
"""


async def test_custom_kind_parsed_validated_executed(
    scale_kind: StepKind, caller: InProcessCaller, digits: np.ndarray
) -> None:
    plan = parse_plan_text(SCALED % ("float32", "2.0", "x: input.input"))
    step = plan.steps[0]
    assert step.WhichOneof("kind") == "custom" and step.custom.kind == "test_scale"
    assert custom_params(step) == {"factor": 2.0}
    assert loads_json(plan_to_json(plan).encode()) == plan
    assert parse_plan_text(plan_to_json(plan)) == plan  # the `custom:` form parses too
    await validate_plan(plan, ValidationContext(metadata=caller.metadata))

    result = await Engine(caller, DictPlans(plan)).execute(ExecuteCall("scaled", {"input": digits}))
    np.testing.assert_array_equal(result.outputs["y"], digits * 2)
    scaled = (await caller.infer("scaler", {"input": digits * 2}))["scaled"]
    want = await caller.infer("mlp", {"input": scaled})
    np.testing.assert_array_equal(result.outputs["label"], want["label"])


@pytest.mark.parametrize(
    ("dtype", "factor", "wire", "message"),
    [
        ("float32", "-1", "x: input.input", "step 'double' test_scale factor: -1.0 must be"),
        ("float32", "{}", "x: input.input", "step 'double' test_scale factor: None must be"),
        ("float32", "2", "x: input.input, z: input.input",
         "step 'double' test_scale: wire one input 'x' (inputs: ['x', 'z'])"),
        # The kind's output spec feeds the shared dtype check of the model wired to it.
        ("float64", "2", "x: input.input", "step 'scaler' input 'input': expects float32 [-1,64], "
         "wired to 'double.y' float64 [-1,64]"),
    ],
)  # fmt: skip
async def test_custom_kind_validation_fails(
    scale_kind: StepKind, caller: InProcessCaller, dtype: str, factor: str, wire: str, message: str
) -> None:
    plan = parse_plan_text(SCALED % (dtype, factor, wire))
    with pytest.raises(InvalidInputError) as err:
        await validate_plan(plan, ValidationContext(metadata=caller.metadata))
    assert message in err.value.message


def test_step_kind_registration_rules(scale_kind: StepKind) -> None:
    with pytest.raises(InvalidInputError, match="already registered"):
        register_step_kind(ScaleKind())
    with pytest.raises(InvalidInputError, match="built in"):
        unregister_step_kind("model")
    with pytest.raises(InvalidInputError, match="other than 'custom'"):
        register_step_kind(type("Custom", (ScaleKind,), {"name": "custom"})())


# ---- a test-only aggregation -------------------------------------------------------------------
def _median(
    ctx: StepContext, members: Sequence[plan_pb2.Branch], arrays: list[np.ndarray]
) -> np.ndarray:
    median: np.ndarray = np.median(np.stack(arrays), axis=0).astype(arrays[0].dtype)
    return median


def _check_median(
    ens: plan_pb2.EnsembleStep,
    spec: tensor_pb2.TensorSpec | None,
    where: str,
    context: ValidationContext,
) -> tensor_pb2.TensorSpec | None:
    if len(ens.members) < 3:
        raise InvalidInputError(f"{where}: test_median needs 3 members or more")
    if spec is not None and spec.dtype not in FLOATS:
        raise InvalidInputError(f"{where} output '{ens.output}': test_median needs floats")
    return spec


@pytest.fixture
def median() -> Iterator[Aggregation]:
    aggregation = register_aggregation(Aggregation("test_median", _median, _check_median))
    yield aggregation
    unregister_aggregation(aggregation.name)


MEDIAN = """
name: median
inputs: [{name: input, dtype: float32, shape: [-1, 64]}]
steps:
  - {name: scaler, model: scaler, inputs: [input.input]}
  - name: ens
    inputs: {input: scaler.scaled}
    ensemble:
      aggregation: test_median
      output: %s
      members: [%s]
outputs: {out: ens.%s}
"""


async def test_custom_aggregation_in_an_ensemble(
    median: Aggregation, caller: InProcessCaller, digits: np.ndarray
) -> None:
    plan = parse_plan_text(
        MEDIAN
        % ("probabilities", "{model: logreg}, {model: mlp}, {model: forest}", "probabilities")
    )
    ens = plan.steps[1].ensemble
    assert (ens.aggregation, ens.aggregator) == (plan_pb2.AGGREGATION_CUSTOM, "test_median")
    await validate_plan(plan, ValidationContext(metadata=caller.metadata))

    result = await Engine(caller, DictPlans(plan)).execute(ExecuteCall("median", {"input": digits}))
    scaled = (await caller.infer("scaler", {"input": digits}))["scaled"]
    members = [
        (await caller.infer(m, {"input": scaled}))["probabilities"]
        for m in ("logreg", "mlp", "forest")
    ]
    np.testing.assert_allclose(
        result.outputs["out"], np.median(np.stack(members), axis=0), rtol=1e-6
    )


@pytest.mark.parametrize(
    ("output", "members", "message"),
    [
        ("probabilities", "{model: logreg}, {model: mlp}",
         "step 'ens' ensemble: test_median needs 3 members or more"),
        ("label", "{model: logreg}, {model: mlp}, {model: forest}",
         "step 'ens' ensemble output 'label': test_median needs floats"),
    ],
)  # fmt: skip
async def test_custom_aggregation_rule_rejects_plan(
    median: Aggregation, caller: InProcessCaller, output: str, members: str, message: str
) -> None:
    plan = parse_plan_text(MEDIAN % (output, members, output))
    with pytest.raises(InvalidInputError) as err:
        await validate_plan(plan, ValidationContext(metadata=caller.metadata))
    assert message in err.value.message


def test_unknown_aggregation_fails_parsing() -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_plan_text(MEDIAN % ("probabilities", "{model: mlp}", "probabilities"))
    assert "step 'ens' ensemble aggregation: unknown aggregation 'test_median' (known: " in (
        err.value.message
    )


def test_aggregation_registration_rules(median: Aggregation) -> None:
    with pytest.raises(InvalidInputError, match="already registered"):
        register_aggregation(Aggregation("test_median", _median))
    with pytest.raises(InvalidInputError, match="built-in"):
        register_aggregation(Aggregation("mean", _median))
    with pytest.raises(InvalidInputError, match="built in"):
        unregister_aggregation("majority_vote")
