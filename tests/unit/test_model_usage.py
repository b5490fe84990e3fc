"""The models of the active plans, followed for the model caller (watchers only for those)."""

from __future__ import annotations

from collections.abc import Callable

from meshserve.orchestrator.model_usage import follow_plan_models, plan_models
from meshserve.v1 import plan_pb2


def _plan(name: str, *models: str) -> plan_pb2.Plan:
    plan = plan_pb2.Plan(name=name)
    first, *members = models
    plan.steps.add(name="a").model.model = first
    ensemble = plan.steps.add(name="b").ensemble
    for i, model in enumerate(members):
        ensemble.members.add(name=f"m{i}").target.model.model = model
    ensemble.members.add(name="sub").target.plan = "other-plan"
    return plan


def test_plan_models_finds_every_model_step_at_any_depth() -> None:
    assert plan_models(_plan("p", "scaler", "mlp", "forest")) == {"scaler", "mlp", "forest"}
    assert plan_models(plan_pb2.Plan(name="empty")) == set()


def test_retained_models_follow_the_plan_set() -> None:
    plans = [_plan("p", "scaler", "mlp")]
    listeners: list[Callable[[], None]] = []
    retained: list[set[str]] = []
    follow_plan_models(lambda: plans, listeners.append, retained.append)
    assert retained == [{"scaler", "mlp"}]
    plans.append(_plan("q", "forest"))
    listeners[0]()
    plans.pop(0)  # plan p deleted
    listeners[0]()
    assert retained[1:] == [{"scaler", "mlp", "forest"}, {"forest"}]
