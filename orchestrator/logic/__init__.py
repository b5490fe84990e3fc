"""Business logic hosted by the orchestrator: ``@logic("name")`` functions that plans call.

A logic function is ``async def fn(inputs: dict[str, Any], ctx: LogicContext) -> dict[str, Any]``
(a class with ``async __call__`` works too: it is instantiated once, without arguments, on first
use; plain ``def`` functions are run in a thread so blocking code stays off the event loop).
Inputs are the step's wired inputs (numpy arrays for tensors), outputs are named numpy arrays.

Building blocks live next to this module: ``sql`` (relational lookups), ``features`` (feature
store with a TTL cache and coalesced lookups), ``http`` (external calls with timeout and retry)
and ``validation`` (schema checks with precise InvalidInputError messages).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry import trace

from meshserve.errors import DeadlineExceededError, InvalidInputError, NotFoundError
from meshserve.telemetry import NO_SPAN, tracing_enabled

__all__ = [
    "LogicContext",
    "LogicFunction",
    "get_logic",
    "known_logic",
    "logic",
    "register_logic",
    "run_logic",
    "unregister_logic",
]

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

LogicFunction = Callable[[dict[str, Any], "LogicContext"], Awaitable[dict[str, Any]]]
F = TypeVar("F")


@dataclass(frozen=True)
class LogicContext:
    """What a logic function knows about the request and the step that called it.

    `deadline` is in ``time.monotonic()`` seconds (None: no deadline); `remaining_s()` gives what
    is left of it.
    """

    params: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    routing_key: str = ""
    request_id: str = ""
    plan: str = ""
    step: str = ""
    deadline: float | None = None

    def remaining_s(self, clock: Callable[[], float] = time.monotonic) -> float | None:
        """Seconds left before the deadline (None without one, never below 0)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - clock())

    def param(self, name: str, default: Any = ...) -> Any:
        """A step param, or InvalidInputError naming it when it is required and missing."""
        if name in self.params:
            return self.params[name]
        if default is ...:
            raise InvalidInputError(
                f"logic step {self.step!r} of plan {self.plan!r}: missing param {name!r}; "
                f"params given: {sorted(self.params)}"
            )
        return default

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        """A param that must be one of `allowed`; InvalidInputError listing them otherwise."""
        value = str(self.param(name, default))
        if value not in allowed:
            raise InvalidInputError(
                f"logic step {self.step!r}: {name}={value[:100]!r}; expected one of {list(allowed)}"
            )
        return value

    def path_param(self, name: str) -> str:
        """A file path param with ``$VAR`` / ``${VAR}`` expanded from the environment."""
        raw = str(self.param(name))
        path = os.path.expandvars(raw)
        if "$" in path:
            raise InvalidInputError(
                f"logic step {self.step!r}: param {name!r}={raw!r} names an environment variable "
                "that is not set in the orchestrator's environment"
            )
        return path


_lock = threading.Lock()
_registry: dict[str, Any] = {}  # name -> function, class, or instance
_resolved: dict[str, LogicFunction] = {}


def logic(name: str) -> Callable[[F], F]:
    """Register the decorated async function (or class with async ``__call__``) as `name`."""

    def decorate(target: F) -> F:
        register_logic(name, target)
        return target

    return decorate


def register_logic(name: str, target: Any, *, replace: bool = True) -> None:
    """Register `target` under `name` (the non-decorator form)."""
    if not name or not isinstance(name, str):
        raise InvalidInputError(f"logic name must be a non-empty string, got {name!r}")
    if not callable(target):
        raise InvalidInputError(f"logic {name!r} must be callable, got {type(target).__name__}")
    with _lock:
        if not replace and name in _registry:
            raise InvalidInputError(f"logic {name!r} is already registered")
        _registry[name] = target
        _resolved.pop(name, None)


def unregister_logic(name: str) -> None:
    """Forget `name` (no error when unknown)."""
    with _lock:
        _registry.pop(name, None)
        _resolved.pop(name, None)


def known_logic() -> list[str]:
    """Names of every registered logic function, sorted."""
    with _lock:
        return sorted(_registry)


def get_logic(name: str) -> LogicFunction:
    """The registered function `name` as an async callable; NotFoundError lists the known ones."""
    with _lock:
        fn = _resolved.get(name)
        if fn is not None:
            return fn
        target = _registry.get(name)
        if target is None:
            known = ", ".join(sorted(_registry)) or "none"
            raise NotFoundError(f"logic function {name!r} is not registered; known: {known}")
        fn = _as_async(name, target)
        _resolved[name] = fn
        return fn


def _as_async(name: str, target: Any) -> LogicFunction:
    if inspect.isclass(target):
        target = target()
    call = target if inspect.isfunction(target) or inspect.ismethod(target) else target.__call__
    if inspect.iscoroutinefunction(call):
        fn: LogicFunction = target
        return fn

    @functools.wraps(call)
    async def in_thread(inputs: dict[str, Any], ctx: LogicContext) -> dict[str, Any]:
        result = await asyncio.to_thread(target, inputs, ctx)
        if inspect.isawaitable(result):
            result = await result
        out: dict[str, Any] = result  # checked by _call
        return out

    log.debug("logic %s is synchronous; it runs in a thread", name)
    return in_thread


async def run_logic(name: str, inputs: dict[str, Any], ctx: LogicContext) -> dict[str, Any]:
    """Call logic `name` inside a ``logic <name>`` span (while
    ``meshserve.telemetry.tracing_enabled()``), bounded by ``ctx.deadline``.

    The result must be a mapping of output names; anything else is an InvalidInputError naming
    the function (a wiring bug in the plan or the function).
    """
    fn = get_logic(name)
    span_cm: AbstractContextManager[trace.Span | None] = (
        _tracer.start_as_current_span(f"logic {name}") if tracing_enabled() else NO_SPAN
    )
    with span_cm as span:
        if span is not None:
            span.set_attribute("meshserve.plan", ctx.plan)
            span.set_attribute("meshserve.step", ctx.step)
        return await _call(name, fn, inputs, ctx)


async def _call(
    name: str, fn: LogicFunction, inputs: dict[str, Any], ctx: LogicContext
) -> dict[str, Any]:
    remaining = ctx.remaining_s()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceededError(f"logic {name!r}: deadline passed before it started")
    try:
        async with asyncio.timeout(remaining):
            result = await fn(dict(inputs), ctx)
    except TimeoutError:
        raise DeadlineExceededError(
            f"logic {name!r} (step {ctx.step!r}) did not finish within the request deadline"
        ) from None
    if not isinstance(result, Mapping):
        raise InvalidInputError(
            f"logic {name!r} returned {type(result).__name__}; expected a dict of named outputs"
        )
    return dict(result)


# The built-in logic functions register themselves on import.
from meshserve.orchestrator.logic import features, http, sql, validation  # noqa: E402, F401
