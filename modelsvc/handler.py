"""Model handlers: the model's own pre/post-processing, shipped and served with it.

A handler is any class with these (all optional) members; `--handler module:Class` names it and
the class is instantiated with no arguments. Hooks run in the executor thread with the model, on
the whole merged batch, so they must be row-wise (row i of the output depends on row i of the
input only) and keep the number of rows.

- ``preprocess(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]``
- ``postprocess(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]``
- ``allow_non_finite: bool`` (default True): when False, NaN/inf inputs are INVALID_ARGUMENT.
- ``extra_outputs: dict[str, tuple[str, list[int]]]`` (default none): outputs that
  ``postprocess`` adds to the model's own, as name -> (numpy dtype name, shape with -1 for a
  dynamic dim), e.g. ``{"label": ("int64", [-1])}`` for a handler that turns logits into a
  label. They are part of the replica's signature (metadata, typed contract, Consul meta), can
  be requested like model outputs, and a batch whose postprocess leaves one out fails with
  INTERNAL naming it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from meshserve.errors import InvalidInputError
from meshserve.modelsvc.backend import TensorSpec
from meshserve.names import quote

__all__ = ["Handler", "IdentityHandler", "extra_output_specs", "load_handler"]

Arrays = dict[str, np.ndarray]


@runtime_checkable
class Handler(Protocol):
    """Typed pre/post-processing hooks around the model."""

    allow_non_finite: bool
    extra_outputs: tuple[TensorSpec, ...]

    def preprocess(self, inputs: Arrays) -> Arrays: ...

    def postprocess(self, outputs: Arrays) -> Arrays: ...


class IdentityHandler:
    """The default: inputs and outputs pass through; non-finite values are allowed."""

    allow_non_finite = True
    extra_outputs: tuple[TensorSpec, ...] = ()

    def preprocess(self, inputs: Arrays) -> Arrays:
        return inputs

    def postprocess(self, outputs: Arrays) -> Arrays:
        return outputs


class _Adapted:
    """Wraps a user object that implements only some of the hooks."""

    def __init__(self, target: object) -> None:
        self._target = target
        self.allow_non_finite = bool(getattr(target, "allow_non_finite", True))
        self.extra_outputs = extra_output_specs(getattr(target, "extra_outputs", None) or {})
        self._pre = getattr(target, "preprocess", None)
        self._post = getattr(target, "postprocess", None)

    def preprocess(self, inputs: Arrays) -> Arrays:
        return dict(self._pre(inputs)) if self._pre is not None else inputs

    def postprocess(self, outputs: Arrays) -> Arrays:
        return dict(self._post(outputs)) if self._post is not None else outputs


def extra_output_specs(declared: Mapping[str, Any]) -> tuple[TensorSpec, ...]:
    """TensorSpecs of a handler's ``extra_outputs`` (name -> (dtype name, shape)), checked."""
    if not isinstance(declared, Mapping):
        raise InvalidInputError(
            "handler extra_outputs must be a dict: name -> (dtype, shape), e.g. "
            "{'label': ('int64', [-1])}"
        )
    specs = []
    for name, value in declared.items():
        where = f"handler extra output {quote(str(name))}"
        try:
            dtype_name, shape = value
            dtype = np.dtype(dtype_name)
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"{where}: expected (dtype, shape) such as ('int64', [-1]) ({exc})"
            ) from exc
        if not isinstance(name, str) or not name or any(d < -1 for d in dims):
            raise InvalidInputError(f"{where}: needs a name and dims >= -1")
        specs.append(TensorSpec(name, dtype, dims))
    return tuple(specs)


def load_handler(spec: str) -> Handler:
    """Instantiate the handler named ``module:Class`` (IdentityHandler when `spec` is empty)."""
    if not spec:
        return IdentityHandler()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInputError(f"handler {spec!r} must look like 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(
            f"handler module {module_name!r} cannot be imported: {exc}"
        ) from exc
    cls = getattr(module, attr, None)
    if cls is None:
        raise InvalidInputError(f"handler module {module_name!r} has no attribute {attr!r}")
    return _Adapted(cls())
