"""Step kinds, one module per kind of plan node, each a ``StepKind`` in ``STEP_KINDS``.

Two extension tables live here, each with its contract in its docstring:

- ``STEP_KINDS`` (registry.py): kind name -> StepKind (parse, validate, compile, execute).
  The built-in kinds are the members of the proto ``Step`` oneof; ``register_step_kind`` adds
  one that plans carry in ``Step.custom`` and write as ``<kind>: {...}``.
- ``AGGREGATIONS`` (aggregations.py): ensemble aggregation name -> Aggregation (function and
  validation rule); ``register_aggregation`` adds one that plans name with
  ``aggregation: <name>``.
"""

from __future__ import annotations

from meshserve.orchestrator.steps.aggregations import (
    AGGREGATIONS,
    Aggregation,
    register_aggregation,
    unregister_aggregation,
)
from meshserve.orchestrator.steps.bandit import BanditKind
from meshserve.orchestrator.steps.ensemble import EnsembleKind
from meshserve.orchestrator.steps.logic import LogicKind
from meshserve.orchestrator.steps.model import ModelKind
from meshserve.orchestrator.steps.registry import (
    STEP_KINDS,
    StepKind,
    custom_params,
    kind_of,
    register_step_kind,
    unregister_step_kind,
)
from meshserve.orchestrator.steps.select import SelectKind
from meshserve.orchestrator.steps.shadow import ShadowKind
from meshserve.orchestrator.steps.split import SplitKind

__all__ = [
    "AGGREGATIONS",
    "STEP_KINDS",
    "Aggregation",
    "StepKind",
    "custom_params",
    "kind_of",
    "register_aggregation",
    "register_step_kind",
    "unregister_aggregation",
    "unregister_step_kind",
]

for _kind in (
    ModelKind(),
    LogicKind(),
    EnsembleKind(),
    SelectKind(),
    SplitKind(),
    ShadowKind(),
    BanditKind(),
):
    register_step_kind(_kind)
