"""Logic functions registered for the duration of a test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from meshserve.orchestrator.logic import register_logic, unregister_logic


@contextmanager
def logic_functions(functions: dict[str, Any]) -> Iterator[None]:
    """Register `functions` (name -> function) and unregister them on the way out."""
    for name, function in functions.items():
        register_logic(name, function)
    try:
        yield
    finally:
        for name in functions:
            unregister_logic(name)


class OnePlan:
    """A plan store holding one plan (version 1): what the engine needs to run it in-process."""

    def __init__(self, plan: Any) -> None:
        plan.version = 1
        self.plan = plan

    def get(self, name: str, version: int = 0) -> Any:
        return self.plan
