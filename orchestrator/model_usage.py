"""Which models the active plans use, kept in step with the plan store for the model caller.

The caller keeps a registry watcher (and channels) only for models some active plan names plus
those called right now (``ModelCaller.retain``): a model of a deleted plan, or one only looked
at while validating a dry run or a rejected plan, leaves no watcher behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from google.protobuf.message import Message

from meshserve.v1 import plan_pb2

__all__ = ["follow_plan_models", "plan_models"]


def plan_models(plan: Message) -> set[str]:
    """Every model name a plan's ``ModelStep``s name (steps, branches, targets, at any depth)."""
    found: set[str] = set()
    stack: list[Message] = [plan]
    while stack:
        message = stack.pop()
        if isinstance(message, plan_pb2.ModelStep):
            if message.model:
                found.add(message.model)
            continue
        for field, value in message.ListFields():
            if field.message_type is None:
                continue
            if field.message_type.GetOptions().map_entry:
                values = value.values()
            elif isinstance(value, Sequence):  # a repeated message field
                values = value
            else:
                values = (value,)
            stack.extend(v for v in values if isinstance(v, Message))
    return found


def follow_plan_models(
    plans: Callable[[], Iterable[plan_pb2.Plan]],
    on_change: Callable[[Callable[[], None]], None],
    retain: Callable[[set[str]], None],
) -> Callable[[], None]:
    """Call `retain(models of plans())` now and on every `on_change` notification; returns the
    sync function (for tests)."""

    def sync() -> None:
        models: set[str] = set()
        for plan in plans():
            models |= plan_models(plan)
        retain(models)

    on_change(sync)
    sync()
    return sync
