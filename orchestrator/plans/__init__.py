"""Declarative plans: parsing (YAML/JSON -> Plan proto), wiring graph, validation."""

from meshserve.orchestrator.plans.graph import PlanGraph, Ref, parse_ref
from meshserve.orchestrator.plans.parse import parse_plan_text, plan_from_dict, plan_to_json
from meshserve.orchestrator.plans.validate import MetadataLookup, validate_plan

__all__ = [
    "MetadataLookup",
    "PlanGraph",
    "Ref",
    "parse_plan_text",
    "parse_ref",
    "plan_from_dict",
    "plan_to_json",
    "validate_plan",
]
