"""Validation of a plan before it is stored or run.

Checks, in order: names and wiring (via PlanGraph: unknown references, cycles), each step's
kind-specific fields, the existence of models (their metadata from the ModelCaller), registered
logic/aggregators/routers, select expressions (parsed by the safe evaluator), and dtype/shape
compatibility between every wire and the model input it feeds. Errors are InvalidInputError
naming the step and field, e.g.
"step 'mlp' input 'input': expects float32 [-1,64], wired to 'scaler.scaled' float64 [-1,64]".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from meshserve.errors import InvalidInputError, MeshError, NotFoundError, UnavailableError
from meshserve.names import check_name
from meshserve.orchestrator.expr import compile_expression
from meshserve.orchestrator.plans.graph import PlanGraph, Ref, step_kind
from meshserve.tensors import dtype_name
from meshserve.v1 import model_pb2, plan_pb2, tensor_pb2

__all__ = ["SELECT_NAMES", "MetadataLookup", "ValidationContext", "format_spec", "validate_plan"]

MetadataLookup = Callable[[str, str], Awaitable[model_pb2.ModelMetadata]]
SELECT_NAMES = frozenset({"attributes", "inputs", "steps", "routing_key"})


@dataclass(frozen=True)
class ValidationContext:
    """What validation may consult: model metadata, known plans and registered functions."""

    metadata: MetadataLookup
    plan_exists: Callable[[str], bool] = lambda name: True
    logic_exists: Callable[[str], bool] = lambda name: True


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


async def validate_plan(plan: plan_pb2.Plan, ctx: ValidationContext) -> PlanGraph | None:
    """Validate `plan`; returns its graph (None for a python plan). Raises InvalidInputError."""
    check_name("plan", plan.name)
    if plan.python:
        if plan.steps or plan.outputs:
            raise InvalidInputError(
                f"plan '{plan.name}': 'python' is set, so 'steps' and 'outputs' must be empty"
            )
        if ":" not in plan.python:
            raise InvalidInputError(
                f"plan '{plan.name}' python: '{plan.python}' must look like 'package.module:attr'"
            )
        return None
    if not plan.steps:
        raise InvalidInputError(f"plan '{plan.name}': needs at least one step (or 'python')")
    if not plan.outputs:
        raise InvalidInputError(f"plan '{plan.name}': 'outputs' must name at least one output")
    graph = PlanGraph(plan)
    v = _Validator(plan, graph, ctx)
    for name in graph.order:
        await v.step(graph.steps[name])
    for key, ref in graph.outputs.items():
        v.check_output_exists(ref, f"plan output '{key}'")
    return graph


class _Validator:
    def __init__(self, plan: plan_pb2.Plan, graph: PlanGraph, ctx: ValidationContext) -> None:
        self.plan = plan
        self.graph = graph
        self.ctx = ctx
        self.input_specs = {s.name: s for s in plan.inputs}
        # step -> output name -> spec (None: output known, type unknown); step absent: unknown.
        self.outputs: dict[str, dict[str, tensor_pb2.TensorSpec | None] | None] = {}

    def spec_of(self, ref: Ref) -> tensor_pb2.TensorSpec | None:
        if ref.is_input:
            return self.input_specs.get(ref.name)
        outs = self.outputs.get(ref.source)
        return None if outs is None else outs.get(ref.name)

    def check_output_exists(self, ref: Ref, where: str) -> None:
        if ref.is_input:
            return
        outs = self.outputs.get(ref.source)
        if outs is not None and ref.name not in outs:
            raise InvalidInputError(
                f"{where}: wired to '{ref}' but step '{ref.source}' has no output '{ref.name}' "
                f"(outputs: {sorted(outs)})"
            )

    async def step(self, step: plan_pb2.Step) -> None:
        where = f"step '{step.name}'"
        for key, ref in self.graph.inputs[step.name].items():
            self.check_output_exists(ref, f"{where} input '{key}'")
        kind = step_kind(step)
        if not kind:
            raise InvalidInputError(
                f"{where}: no kind set (expected one of model, logic, ensemble, select, split, "
                "shadow, bandit)"
            )
        if kind == "model":
            self.outputs[step.name] = await self.model(step, step.model, where)
        elif kind == "logic":
            self.logic(step.logic, where)
            self.outputs[step.name] = None
        elif kind == "ensemble":
            await self.ensemble(step, where)
        elif kind == "select":
            await self.select(step, where)
        elif kind == "split":
            await self.branches(step, list(step.split.branches), where + " split", weights=True)
        elif kind == "shadow":
            await self.shadow(step, where)
        elif kind == "bandit":
            if len(step.bandit.arms) < 2:
                raise InvalidInputError(f"{where} bandit: needs at least 2 arms")
            if not 0.0 <= step.bandit.epsilon <= 1.0:
                raise InvalidInputError(
                    f"{where} bandit epsilon: {step.bandit.epsilon} is outside [0, 1]"
                )
            await self.branches(step, list(step.bandit.arms), where + " bandit")

    async def model(
        self, step: plan_pb2.Step, model: plan_pb2.ModelStep, where: str
    ) -> dict[str, tensor_pb2.TensorSpec | None]:
        if not model.model:
            raise InvalidInputError(f"{where} model: 'model' (the Consul service name) is required")
        try:
            meta = await self.ctx.metadata(model.model, model.version)
        except (NotFoundError, UnavailableError) as exc:
            pinned = f" version '{model.version}'" if model.version else ""
            raise InvalidInputError(
                f"{where}: unknown model '{model.model}'{pinned} ({exc.message})"
            ) from None
        except MeshError as exc:
            raise InvalidInputError(
                f"{where}: cannot read metadata of model '{model.model}': {exc.message}"
            ) from None
        wired = self.graph.inputs[step.name]
        expected = {s.name: s for s in meta.inputs}
        for name, spec in expected.items():
            if name not in wired:
                raise InvalidInputError(
                    f"{where} input '{name}': model '{model.model}' needs input '{name}' "
                    f"({format_spec(spec)}) but it is not wired (step inputs: {sorted(wired)})"
                )
        for name, ref in wired.items():
            if name not in expected:
                raise InvalidInputError(
                    f"{where} input '{name}': model '{model.model}' has no input '{name}' "
                    f"(inputs: {sorted(expected)})"
                )
            actual = self.spec_of(ref)
            if actual is not None and not _compatible(expected[name], actual):
                raise InvalidInputError(
                    f"{where} input '{name}': expects {format_spec(expected[name])}, "
                    f"wired to '{ref}' {format_spec(actual)}"
                )
        return {s.name: s for s in meta.outputs}

    def logic(self, logic: plan_pb2.LogicStep, where: str) -> None:
        if not logic.function:
            raise InvalidInputError(f"{where} logic: 'function' is required")
        if not self.ctx.logic_exists(logic.function):
            raise InvalidInputError(
                f"{where} logic: no registered function '{logic.function}' (register it with "
                "@logic in a module the orchestrator imports)"
            )

    async def target(
        self, step: plan_pb2.Step, branch: plan_pb2.Branch, where: str
    ) -> dict[str, tensor_pb2.TensorSpec | None] | None:
        where = f"{where} branch '{branch.name}'"
        kind = branch.target.WhichOneof("kind")
        if kind == "model":
            return await self.model(step, branch.target.model, where)
        if kind == "logic":
            self.logic(branch.target.logic, where)
            return None
        if kind == "plan":
            if branch.target.plan == self.plan.name:
                raise InvalidInputError(f"{where}: a plan cannot call itself")
            if not self.ctx.plan_exists(branch.target.plan):
                raise InvalidInputError(f"{where}: unknown plan '{branch.target.plan}'")
            return None
        raise InvalidInputError(f"{where}: 'target' must set one of model, logic, plan")

    async def branches(
        self,
        step: plan_pb2.Step,
        branches: list[plan_pb2.Branch],
        where: str,
        weights: bool = False,
    ) -> None:
        if not branches:
            raise InvalidInputError(f"{where}: needs at least one branch")
        names: set[str] = set()
        common: dict[str, tensor_pb2.TensorSpec | None] | None = None
        for index, branch in enumerate(branches):
            if not branch.name:
                raise InvalidInputError(f"{where} branches[{index}]: 'name' is required")
            if branch.name in names:
                raise InvalidInputError(f"{where}: branch name '{branch.name}' is used twice")
            names.add(branch.name)
            if weights and branch.weight < 0:
                raise InvalidInputError(
                    f"{where} branch '{branch.name}' weight: {branch.weight} is negative"
                )
            outs = await self.target(step, branch, where)
            if outs is not None:
                common = (
                    dict(outs) if common is None else {k: v for k, v in common.items() if k in outs}
                )
        if weights and sum(b.weight for b in branches) <= 0:
            raise InvalidInputError(f"{where}: branch weights must sum to more than 0")
        all_known = all(b.target.WhichOneof("kind") == "model" for b in branches)
        self.outputs[step.name] = common if all_known else None

    async def ensemble(self, step: plan_pb2.Step, where: str) -> None:
        ens = step.ensemble
        where += " ensemble"
        if not ens.output:
            raise InvalidInputError(f"{where} output: name the members' output to aggregate")
        if ens.aggregation == plan_pb2.AGGREGATION_UNSPECIFIED:
            raise InvalidInputError(
                f"{where} aggregation: required (mean, weighted_mean, majority_vote, "
                "max_probability, custom)"
            )
        if ens.aggregation == plan_pb2.AGGREGATION_CUSTOM and not ens.aggregator:
            raise InvalidInputError(f"{where} aggregator: required with aggregation custom")
        if ens.aggregator and not self.ctx.logic_exists(ens.aggregator):
            raise InvalidInputError(
                f"{where} aggregator: no registered function '{ens.aggregator}'"
            )
        await self.branches(step, list(ens.members), where)
        outs = self.outputs.get(step.name)
        if outs is not None and ens.output not in outs:
            raise InvalidInputError(
                f"{where} output: members do not all have output '{ens.output}' "
                f"(common outputs: {sorted(outs)})"
            )
        spec = outs.get(ens.output) if outs is not None else None
        if (
            spec is not None
            and ens.aggregation == plan_pb2.AGGREGATION_MAJORITY_VOTE
            and spec.dtype in (tensor_pb2.DATA_TYPE_FLOAT32, tensor_pb2.DATA_TYPE_FLOAT64)
        ):
            raise InvalidInputError(
                f"{where} output '{ens.output}': majority_vote needs integer labels, "
                f"members return {format_spec(spec)}"
            )
        if spec is not None and ens.aggregation in (
            plan_pb2.AGGREGATION_MEAN,
            plan_pb2.AGGREGATION_WEIGHTED_MEAN,
        ):
            spec = tensor_pb2.TensorSpec(
                name=spec.name,
                dtype=spec.dtype
                if spec.dtype in (tensor_pb2.DATA_TYPE_FLOAT32, tensor_pb2.DATA_TYPE_FLOAT64)
                else tensor_pb2.DATA_TYPE_FLOAT64,
                shape=spec.shape,
            )
        if ens.aggregation == plan_pb2.AGGREGATION_WEIGHTED_MEAN and any(
            m.weight < 0 for m in ens.members
        ):
            raise InvalidInputError(f"{where}: member weights must not be negative")
        self.outputs[step.name] = {ens.output: spec}

    async def select(self, step: plan_pb2.Step, where: str) -> None:
        sel = step.select
        where += " select"
        if sel.router:
            if not self.ctx.logic_exists(sel.router):
                raise InvalidInputError(f"{where} router: no registered function '{sel.router}'")
            branches = list(sel.branches)
        else:
            if not sel.cases:
                raise InvalidInputError(f"{where}: needs 'cases' (or a 'router' with 'branches')")
            for index, case in enumerate(sel.cases):
                try:
                    compile_expression(case.when, SELECT_NAMES)
                except InvalidInputError as exc:
                    raise InvalidInputError(f"{where} cases[{index}] when: {exc.message}") from None
            branches = [c.branch for c in sel.cases]
        if sel.HasField("default_branch"):
            branches.append(sel.default_branch)
        await self.branches(step, branches, where)

    async def shadow(self, step: plan_pb2.Step, where: str) -> None:
        sh = step.shadow
        where += " shadow"
        if not sh.HasField("primary") or not sh.HasField("candidate"):
            raise InvalidInputError(f"{where}: needs both 'primary' and 'candidate'")
        if not 0.0 <= sh.sample_rate <= 1.0:
            raise InvalidInputError(f"{where} sample_rate: {sh.sample_rate} is outside [0, 1]")
        await self.branches(step, [sh.candidate], where)
        await self.branches(step, [sh.primary], where)
