"""A small, safe expression language for select predicates.

Expressions are parsed with ``ast`` and only a whitelist of nodes is evaluated: literals,
names bound by the caller (``attributes``, ``inputs``, ``steps``), subscripts, boolean logic,
comparisons (including ``in``), arithmetic without ``**``, conditional expressions, and calls
of ``len``, ``abs``, ``min``, ``max`` only. The only attributes allowed are ``.shape`` and
``.ndim``. Nothing else (no imports, lambdas, comprehensions, dunder access) ever runs.

Cost is bounded by `meshserve.limits.Limits`: the source by ``max_expression_chars`` and its
syntax tree by ``max_expression_depth`` (checked at compile, so evaluation recursion is
bounded), integer literals by ``max_eval_int_bits``; per evaluation at most ``max_eval_steps``
nodes run, and arithmetic that would build an integer over ``max_eval_int_bits``, a
string/list/tuple or a tensor over ``max_eval_items`` is refused *before* it allocates (no
``'x' * 10**8``, no ``[0] * 10**7``, no outer products of inputs); ``%`` on strings (formatting
with a huge width) is not allowed. Over-limit is RESOURCE_EXHAUSTED naming the limit.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshserve.errors import InvalidInputError
from meshserve.limits import DEFAULT_LIMITS, LimitExceededError, Limits
from meshserve.names import quote

__all__ = ["Expression", "compile_expression"]

MAX_EXPRESSION_CHARS = DEFAULT_LIMITS.max_expression_chars
_ALLOWED_ATTRIBUTES = frozenset({"shape", "ndim"})
_FUNCTIONS: dict[str, Callable[..., Any]] = {"len": len, "abs": abs, "min": min, "max": max}
_CONSTANTS = {"True": True, "False": False, "None": None}
_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


@dataclass(frozen=True)
class Expression:
    """A checked expression; `evaluate(names)` runs it over the given bindings."""

    source: str
    tree: ast.Expression
    names: frozenset[str]
    limits: Limits = DEFAULT_LIMITS

    def evaluate(self, bindings: Mapping[str, Any]) -> Any:
        try:
            return _Evaluator(bindings, self.limits).visit(self.tree.body)
        except (InvalidInputError, LimitExceededError) as exc:
            exc.detail = f"expression {quote(self.source)}: {exc.detail}"
            raise
        except (KeyError, IndexError) as exc:
            raise InvalidInputError(
                f"expression {quote(self.source)}: no such key {quote(str(exc))}"
            ) from None
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise InvalidInputError(f"expression {quote(self.source)}: {quote(str(exc))}") from None

    def truth(self, bindings: Mapping[str, Any]) -> bool:
        """Evaluate as a condition; an array must have exactly one element to be a truth value."""
        value = self.evaluate(bindings)
        if isinstance(value, np.ndarray):
            if value.size != 1:
                raise InvalidInputError(
                    f"expression {quote(self.source)}: result has shape {list(value.shape)}; "
                    "a condition needs a single value (use .shape, len() or an index)"
                )
            value = value.reshape(()).item()
        return bool(value)


def compile_expression(
    source: str, names: frozenset[str], limits: Limits = DEFAULT_LIMITS
) -> Expression:
    """Parse and check `source`; `names` are the variables it may use."""
    if len(source) > limits.max_expression_chars:
        raise LimitExceededError(
            f"expression is {len(source)} characters; exceeds the limit "
            f"max_expression_chars={limits.max_expression_chars}"
        )
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise InvalidInputError(f"expression {quote(source)}: syntax error: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):  # nesting past the parser's own stack
        raise InvalidInputError(
            f"expression {quote(source)}: nesting exceeds the limit "
            f"max_expression_depth={limits.max_expression_depth}"
        ) from None
    _check_depth(tree, source, limits)
    for node in ast.walk(tree):
        _check_node(node, source, names, limits)
    return Expression(source, tree, names, limits)


def _check_depth(tree: ast.AST, source: str, limits: Limits) -> None:
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limits.max_expression_depth:
            raise InvalidInputError(
                f"expression {quote(source)}: nesting exceeds the limit "
                f"max_expression_depth={limits.max_expression_depth}"
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Compare,
    ast.IfExp,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Subscript,
    ast.Slice,
    ast.Tuple,
    ast.List,
    ast.Attribute,
    ast.Call,
    *_BINOPS,
    *_CMPOPS,
)


def _check_node(node: ast.AST, source: str, names: frozenset[str], limits: Limits) -> None:
    where = f"expression {quote(source)}"
    if not isinstance(node, _ALLOWED_NODES):
        raise InvalidInputError(
            f"{where}: {type(node).__name__} is not allowed (allowed: literals, "
            "names, [index], .shape/.ndim, and/or/not, comparisons, + - * / // %, "
            "len/abs/min/max)"
        )
    if (
        isinstance(node, ast.Name)
        and node.id not in names
        and node.id not in _CONSTANTS
        and node.id not in _FUNCTIONS
    ):
        raise InvalidInputError(
            f"{where}: unknown name {quote(node.id)} (expected one of {sorted(names)})"
        )
    if isinstance(node, ast.Attribute) and node.attr not in _ALLOWED_ATTRIBUTES:
        raise InvalidInputError(
            f"{where}: attribute {quote(node.attr)} is not allowed "
            f"(only {sorted(_ALLOWED_ATTRIBUTES)})"
        )
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise InvalidInputError(f"{where}: only calls of {sorted(_FUNCTIONS)} are allowed")
        if node.keywords:
            raise InvalidInputError(f"{where}: keyword arguments are not allowed")
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bytes):
            raise InvalidInputError(f"{where}: bytes literals are not allowed")
        if isinstance(value, int) and value.bit_length() > limits.max_eval_int_bits:
            raise LimitExceededError(
                f"{where}: an integer literal exceeds the limit "
                f"max_eval_int_bits={limits.max_eval_int_bits}"
            )


_SEQUENCES = (str, list, tuple)


def _result_items(op: type[ast.operator], left: Any, right: Any) -> int:
    """How many items `left op right` would hold (0: nothing that can grow)."""
    if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
        shape = np.broadcast_shapes(np.shape(left), np.shape(right))
        return int(np.prod(shape, dtype=object))
    if op is ast.Mult:
        if isinstance(left, _SEQUENCES) and isinstance(right, int):
            return len(left) * max(right, 0)
        if isinstance(right, _SEQUENCES) and isinstance(left, int):
            return len(right) * max(left, 0)
    if op is ast.Add and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        return len(left) + len(right)
    return 0


def _int_bits(op: type[ast.operator], left: Any, right: Any) -> int:
    if not (isinstance(left, int) and isinstance(right, int)):
        return 0
    if op is ast.Mult:
        return left.bit_length() + right.bit_length()
    return max(left.bit_length(), right.bit_length()) + 1


class _Evaluator:
    """Walks a checked tree; counts nodes (``max_eval_steps``) and sizes results before
    computing them (``max_eval_items``, ``max_eval_int_bits``)."""

    def __init__(self, bindings: Mapping[str, Any], limits: Limits) -> None:
        self.bindings = bindings
        self.limits = limits
        self.steps = 0

    def binop(self, op: type[ast.operator], left: Any, right: Any) -> Any:
        limits = self.limits
        if op is ast.Mod and isinstance(left, str):
            raise InvalidInputError("'%' on a string (formatting) is not allowed")
        if _result_items(op, left, right) > limits.max_eval_items:
            raise LimitExceededError(
                f"the result would exceed the limit max_eval_items={limits.max_eval_items}"
            )
        if _int_bits(op, left, right) > limits.max_eval_int_bits:
            raise LimitExceededError(
                f"an integer would exceed the limit max_eval_int_bits={limits.max_eval_int_bits}"
            )
        return _BINOPS[op](left, right)

    def visit(self, node: ast.AST) -> Any:
        self.steps += 1
        if self.steps > self.limits.max_eval_steps:
            raise LimitExceededError(
                f"evaluation exceeds the limit max_eval_steps={self.limits.max_eval_steps}"
            )
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in _CONSTANTS:
                return _CONSTANTS[node.id]
            if node.id in _FUNCTIONS:
                return _FUNCTIONS[node.id]
            return self.bindings[node.id]
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                result: Any = True
                for value in node.values:
                    result = self.visit(value)
                    if not _truth(result):
                        return result
                return result
            result = False
            for value in node.values:
                result = self.visit(value)
                if _truth(result):
                    return result
            return result
        if isinstance(node, ast.UnaryOp):
            operand = self.visit(node.operand)
            if isinstance(node.op, ast.Not):
                return not _truth(operand)
            if isinstance(node.op, ast.USub):
                return -operand
            return +operand
        if isinstance(node, ast.BinOp):
            return self.binop(type(node.op), self.visit(node.left), self.visit(node.right))
        if isinstance(node, ast.Compare):
            left = self.visit(node.left)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self.visit(comparator)
                if not _truth(_CMPOPS[type(op)](left, right)):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return (
                self.visit(node.body) if _truth(self.visit(node.test)) else self.visit(node.orelse)
            )
        if isinstance(node, ast.Subscript):
            return self.visit(node.value)[self.visit(node.slice)]
        if isinstance(node, ast.Slice):
            return slice(
                self.visit(node.lower) if node.lower else None,
                self.visit(node.upper) if node.upper else None,
                self.visit(node.step) if node.step else None,
            )
        if isinstance(node, ast.Tuple):
            return tuple(self.visit(e) for e in node.elts)
        if isinstance(node, ast.List):
            return [self.visit(e) for e in node.elts]
        if isinstance(node, ast.Attribute):
            value = self.visit(node.value)
            if not isinstance(value, np.ndarray):
                raise InvalidInputError(f".{node.attr} needs a tensor, got {type(value).__name__}")
            return tuple(value.shape) if node.attr == "shape" else value.ndim
        if isinstance(node, ast.Call):
            func = _FUNCTIONS[node.func.id]  # type: ignore[attr-defined]
            return func(*(self.visit(a) for a in node.args))
        raise InvalidInputError(f"{type(node).__name__} is not allowed")  # checked at compile


def _truth(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise InvalidInputError(
                f"a tensor of shape {list(value.shape)} has no single truth value"
            )
        return bool(value.reshape(()).item())
    return bool(value)
