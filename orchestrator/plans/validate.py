"""Validation of a plan before it is stored or run.

Checks, in order: names and wiring (via PlanGraph: unknown references, cycles), then each step in
topological order: its wires name outputs the upstream steps have, and its kind (looked up in
``meshserve.orchestrator.steps.STEP_KINDS``; an unknown kind fails here) checks its own fields
through ``StepKind.validate`` (models and their metadata, registered logic/aggregations/routers,
select expressions, ...) with the shared checks of ``PlanCheck`` (dtype/shape compatibility of
every wire with the input it feeds); finally the plan outputs. Errors are InvalidInputError
naming the step and field, e.g.
"step 'mlp' input 'input': expects float32 [-1,64], wired to 'scaler.scaled' float64 [-1,64]".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from google.protobuf import json_format

from meshserve.errors import InvalidInputError
from meshserve.limits import (
    DEFAULT_LIMITS,
    Limits,
    check_count,
    check_nesting,
    check_string,
    check_strings,
)
from meshserve.names import check_name, quote
from meshserve.orchestrator.plans.graph import PlanGraph, Ref
from meshserve.orchestrator.steps.registry import kind_of
from meshserve.tensors import DTYPE_NAMES, dtype_name
from meshserve.v1 import model_pb2, plan_pb2, tensor_pb2

__all__ = [
    "MetadataLookup",
    "PlanCheck",
    "StepOutputs",
    "ValidationContext",
    "check_plan_limits",
    "format_spec",
    "validate_plan",
    "validate_plan_outputs",
]

MetadataLookup = Callable[[str, str], Awaitable[model_pb2.ModelMetadata]]
# A step's outputs as validation knows them: name -> spec (None: type unknown); None: unknown.
StepOutputs = dict[str, tensor_pb2.TensorSpec | None] | None


@dataclass(frozen=True)
class ValidationContext:
    """What validation may consult: model metadata, known plans and registered functions."""

    metadata: MetadataLookup
    plan_exists: Callable[[str], bool] = lambda name: True
    logic_exists: Callable[[str], bool] = lambda name: True
    limits: Limits = DEFAULT_LIMITS


def format_spec(spec: tensor_pb2.TensorSpec) -> str:
    """ "float32 [-1,64]"."""
    return f"{dtype_name(spec.dtype)} [{','.join(str(d) for d in spec.shape)}]"


def _compatible(expected: tensor_pb2.TensorSpec, actual: tensor_pb2.TensorSpec) -> bool:
    if expected.dtype != actual.dtype:
        return False
    if not expected.shape or not actual.shape:
        return True
    if len(expected.shape) != len(actual.shape):
        return False
    return all(a == b or a < 0 or b < 0 for a, b in zip(expected.shape, actual.shape, strict=True))


def check_plan_limits(plan: plan_pb2.Plan, limits: Limits) -> None:
    """A plan proto (from text, gRPC or KV) within ``max_plan_bytes``, ``max_plan_steps``,
    ``max_inputs``, names within ``max_name_chars`` and wires within ``max_string_chars`` and,
    for registered kinds' params, ``max_nesting_depth``: checked before any other work."""
    check_count("plan size in bytes", plan.ByteSize(), limits, "max_plan_bytes")
    check_count("plan steps", len(plan.steps), limits, "max_plan_steps")
    check_count("plan inputs", len(plan.inputs), limits, "max_inputs")
    check_strings("plan input name", (s.name for s in plan.inputs), limits, "max_name_chars")
    check_strings("plan output name", plan.outputs, limits, "max_name_chars")
    check_strings("plan output wire", plan.outputs.values(), limits, "max_string_chars")
    check_count("plan output_specs", len(plan.output_specs), limits, "max_inputs")
    check_strings(
        "plan output_specs name", (s.name for s in plan.output_specs), limits, "max_name_chars"
    )
    for step in plan.steps:
        check_string("step name", step.name, limits, "max_name_chars")
        check_strings("step input name", step.inputs, limits, "max_name_chars")
        check_strings("step input wire", step.inputs.values(), limits, "max_string_chars")
        if step.WhichOneof("kind") == "custom":
            params = json_format.MessageToDict(step.custom.params)
            check_nesting(f"step {quote(step.name)} custom params", params, limits)


async def validate_plan(plan: plan_pb2.Plan, ctx: ValidationContext) -> PlanGraph | None:
    """Validate `plan`; returns its graph (None for a python plan). Raises InvalidInputError
    (LimitExceededError for a plan over `ctx.limits`)."""
    graph, _ = await validate_plan_outputs(plan, ctx)
    return graph


async def validate_plan_outputs(
    plan: plan_pb2.Plan, ctx: ValidationContext
) -> tuple[PlanGraph | None, dict[str, tensor_pb2.TensorSpec | None]]:
    """`validate_plan`, plus the spec of each plan output: the declared ``output_specs`` entry,
    else what validation inferred (None: not known). A declared spec must name a plan output
    (any name for a python plan) and agree with the inferred one."""
    check_plan_limits(plan, ctx.limits)
    check_name("plan", plan.name)
    declared = _declared_output_specs(plan)
    if plan.python:
        if plan.steps or plan.outputs:
            raise InvalidInputError(
                f"plan '{plan.name}': 'python' is set, so 'steps' and 'outputs' must be empty"
            )
        if ":" not in plan.python:
            raise InvalidInputError(
                f"plan '{plan.name}' python: {quote(plan.python)} must look like "
                "'package.module:attr'"
            )
        return None, dict(declared)
    if not plan.steps:
        raise InvalidInputError(f"plan '{plan.name}': needs at least one step (or 'python')")
    if not plan.outputs:
        raise InvalidInputError(f"plan '{plan.name}': 'outputs' must name at least one output")
    for name in declared:
        if name not in plan.outputs:
            raise InvalidInputError(
                f"plan '{plan.name}' output_specs {quote(name)}: not a plan output (outputs: "
                f"{sorted(plan.outputs)})"
            )
    graph = PlanGraph(plan)
    check = PlanCheck(plan, graph, ctx)
    for name in graph.order:
        await check.step(graph.steps[name])
    specs: dict[str, tensor_pb2.TensorSpec | None] = {}
    for key, ref in graph.outputs.items():
        check.check_output_exists(ref, f"plan output '{key}'")
        inferred = check.spec_of(ref)
        spec = declared.get(key)
        if spec is not None and inferred is not None and not _compatible(spec, inferred):
            raise InvalidInputError(
                f"plan '{plan.name}' output_specs '{key}': declared {format_spec(spec)} but "
                f"'{ref}' is {format_spec(inferred)}"
            )
        specs[key] = spec if spec is not None else inferred
    return graph, specs


def _declared_output_specs(plan: plan_pb2.Plan) -> dict[str, tensor_pb2.TensorSpec]:
    declared: dict[str, tensor_pb2.TensorSpec] = {}
    for spec in plan.output_specs:
        where = f"plan '{plan.name}' output_specs {quote(spec.name)}"
        if not spec.name or spec.name in declared:
            raise InvalidInputError(f"{where}: every entry needs a name of its own")
        if spec.dtype not in DTYPE_NAMES:
            raise InvalidInputError(f"{where}: dtype {spec.dtype} is not a known DataType")
        declared[spec.name] = spec
    return declared


class PlanCheck:
    """One plan under validation, as ``StepKind.validate`` sees it.

    `context` answers what exists (model metadata, plans, logic functions); `graph` holds the
    wiring. `outputs` fills in as steps pass: step -> what its kind's validate returned.
    """

    def __init__(self, plan: plan_pb2.Plan, graph: PlanGraph, context: ValidationContext) -> None:
        self.plan = plan
        self.graph = graph
        self.context = context
        self.input_specs = {s.name: s for s in plan.inputs}
        self.outputs: dict[str, StepOutputs] = {}

    def wiring(self, step: plan_pb2.Step) -> dict[str, Ref]:
        """The step's input name -> the reference it is wired to."""
        return self.graph.inputs[step.name]

    def spec_of(self, ref: Ref) -> tensor_pb2.TensorSpec | None:
        """The spec behind a reference, None when its type is not known."""
        if ref.is_input:
            return self.input_specs.get(ref.name)
        outs = self.outputs.get(ref.source)
        return None if outs is None else outs.get(ref.name)

    def check_output_exists(self, ref: Ref, where: str) -> None:
        """`ref` names an output its step has (when that step's outputs are known)."""
        if ref.is_input:
            return
        outs = self.outputs.get(ref.source)
        if outs is not None and ref.name not in outs:
            raise InvalidInputError(
                f"{where}: wired to '{ref}' but step '{ref.source}' has no output '{ref.name}' "
                f"(outputs: {sorted(outs)})"
            )

    def check_wiring(
        self,
        step: plan_pb2.Step,
        expected: Mapping[str, tensor_pb2.TensorSpec],
        owner: str,
        where: str,
    ) -> None:
        """The step wires exactly the inputs `owner` (e.g. "model 'mlp'") expects, each from a
        compatible dtype and shape."""
        wired = self.wiring(step)
        for name, spec in expected.items():
            if name not in wired:
                raise InvalidInputError(
                    f"{where} input '{name}': {owner} needs input '{name}' "
                    f"({format_spec(spec)}) but it is not wired (step inputs: {sorted(wired)})"
                )
        for name, ref in wired.items():
            if name not in expected:
                raise InvalidInputError(
                    f"{where} input '{name}': {owner} has no input '{name}' "
                    f"(inputs: {sorted(expected)})"
                )
            actual = self.spec_of(ref)
            if actual is not None and not _compatible(expected[name], actual):
                raise InvalidInputError(
                    f"{where} input '{name}': expects {format_spec(expected[name])}, "
                    f"wired to '{ref}' {format_spec(actual)}"
                )

    async def step(self, step: plan_pb2.Step) -> None:
        """Validate one step: its wires, then its kind's own checks."""
        where = f"step '{step.name}'"
        for key, ref in self.graph.inputs[step.name].items():
            self.check_output_exists(ref, f"{where} input '{key}'")
        self.outputs[step.name] = await kind_of(step).validate(step, self)
