"""Limits are data: every bound a caller can hit is one field of `Limits`, checked before work.

A violation is an error whose message names the limit (its field name) and its value, and quotes
at most a bounded prefix of what was sent (`meshserve.names.quote`):

- malformed input (a negative dimension, a nesting too deep to be a real plan, a wrong type) is
  `InvalidInputError` (INVALID_ARGUMENT);
- input that is well formed but too big (elements, bytes, steps, characters, evaluation cost) is
  `LimitExceededError` (RESOURCE_EXHAUSTED, reason ``limit_exceeded``, no retry pushback: the
  same request fails the same way on any replica).

Each process holds one `Limits` (modelsvc: ``ModelServiceConfig.max_elements`` plus the
defaults; the orchestrator: ``OrchestratorConfig.limits``). The table of limits, defaults and
where each is checked is in docs/CONTRACTS.md ("Limits").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshserve.errors import InvalidInputError, OverloadedError
from meshserve.names import NAME_MAX_CHARS, quote

__all__ = [
    "DEFAULT_LIMITS",
    "LimitExceededError",
    "Limits",
    "check_count",
    "check_nesting",
    "check_shape",
    "check_string",
    "check_strings",
]


class LimitExceededError(OverloadedError):
    """Well-formed input over a configured size limit (RESOURCE_EXHAUSTED, never retried)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="limit_exceeded")


@dataclass(frozen=True)
class Limits:
    """The bounds of one process. Units are in the names; every field is a maximum.

    Tensors (ModelService.Infer, V2 ModelInfer, Orchestrator.Execute):
      max_dims: rank of one tensor (numpy itself stops at 64).
      max_elements: elements of one tensor (each dimension too), checked before allocating.
      max_inputs: tensors in one request.
    Strings of a request:
      max_name_chars: an input/output name, an attribute key, a plan name in a request.
      max_string_chars: request_id, routing_key, an attribute value.
      max_attributes: entries of ExecuteRequest.attributes.
    Plans (Admin.ApplyPlan, --plans files):
      max_plan_bytes: plan text (UTF-8) or a proto Plan's serialized size.
      max_plan_steps: steps of one plan.
      max_nesting_depth: depth of mappings/lists in plan text and of step params.
      max_yaml_nodes: scalars, mappings and lists in plan text (YAML anchors/aliases are refused
        outright, so a small text cannot expand into many nodes).
      plan_parse_timeout_s: parsing, validating and compiling one ApplyPlan (off the event loop).
    Select expressions (compiled once per plan version, evaluated per request):
      max_expression_chars, max_expression_depth: source length and syntax-tree depth.
      max_eval_steps: nodes evaluated per request.
      max_eval_int_bits: bits of an integer an expression may build.
      max_eval_items: items of a string/list/tuple an expression may build and elements of a
        tensor it may compute.
    """

    max_dims: int = 32
    max_elements: int = 1 << 26
    max_inputs: int = 64
    max_name_chars: int = NAME_MAX_CHARS
    max_string_chars: int = 1024
    max_attributes: int = 64
    max_plan_bytes: int = 256 << 10
    max_plan_steps: int = 256
    max_nesting_depth: int = 32
    max_yaml_nodes: int = 20_000
    plan_parse_timeout_s: float = 10.0
    max_expression_chars: int = 1000
    max_expression_depth: int = 32
    max_eval_steps: int = 10_000
    max_eval_int_bits: int = 256
    max_eval_items: int = 1 << 16

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise InvalidInputError(f"limit {name} must be > 0, got {value!r}")


DEFAULT_LIMITS = Limits()


def check_count(what: str, count: int, limits: Limits, field: str) -> None:
    """LimitExceededError when `count` (of `what`) is over the limit named `field`."""
    limit = getattr(limits, field)
    if count > limit:
        raise LimitExceededError(f"{what}: {count} exceeds the limit {field}={limit}")


def check_string(what: str, value: str, limits: Limits, field: str) -> str:
    """`value` when at most the limit `field` characters long, else LimitExceededError quoting
    its prefix."""
    limit = getattr(limits, field)
    if len(value) > limit:
        raise LimitExceededError(
            f"{what} {quote(value)} exceeds the limit {field}={limit} characters"
        )
    return value


def check_strings(what: str, values: Iterable[str], limits: Limits, field: str) -> None:
    """`check_string` for each of `values`."""
    limit = getattr(limits, field)
    for value in values:
        if len(value) > limit:
            check_string(what, value, limits, field)


def check_shape(name: str, shape: Sequence[int], limits: Limits, max_elements: int = 0) -> int:
    """The element count of `shape` for input `name`, checked before anything is allocated:
    rank at most ``max_dims``, no negative dimension, every dimension and the product at most
    `max_elements` (default ``limits.max_elements``)."""
    bound = max_elements or limits.max_elements
    if len(shape) > limits.max_dims:
        raise InvalidInputError(
            f"input {quote(name)}: rank {len(shape)} exceeds the limit max_dims={limits.max_dims}"
        )
    count = 1
    extent = 1  # the product without zero dimensions: numpy refuses shapes whose extent overflows
    for dim in shape:
        if dim < 0:
            raise InvalidInputError(
                f"input {quote(name)}: shape {list(shape)} has a negative dimension"
            )
        count *= dim
        extent *= dim or 1
        if extent > bound:
            raise LimitExceededError(
                f"input {quote(name)}: shape {list(shape)} exceeds the limit max_elements={bound}"
            )
    return count


def check_nesting(what: str, value: Any, limits: Limits) -> None:
    """InvalidInputError when dicts/lists in `value` nest deeper than ``max_nesting_depth``
    (walked iteratively, so a hostile depth cannot exhaust the interpreter's stack)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limits.max_nesting_depth:
            raise InvalidInputError(
                f"{what}: nesting exceeds the limit max_nesting_depth={limits.max_nesting_depth}"
            )
        stack.extend((child, depth + 1) for child in children)
