"""Safe arithmetic for numeric description fields.

Description files may hold numbers as strings of arithmetic, e.g. ``"[4150-2917, 10*256, 10*256]"``.
Upstream evaluated such strings with ``eval``; here they are parsed with :mod:`ast` and walked over an
allow-list of nodes, so nothing in a description can ever run code:

* ``int`` and ``float`` literals (not ``bool``, ``complex``, strings, ``None``),
* the binary operators ``+ - * / // %`` and unary ``-``/``+``,
* parentheses, lists and tuples.

Everything else (names, calls, attributes, subscripts, comprehensions, lambdas, ``**``, comparisons...)
is a :class:`~lazyflow_rbfs.errors.DescriptionError` naming the field. Resource use is bounded: the text
is at most :data:`MAX_LENGTH` characters, nesting at most :data:`MAX_DEPTH` levels, and every integer
(intermediate or final) must fit in int64, every float must be finite.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from lazyflow_rbfs.errors import DescriptionError

__all__ = ["MAX_LENGTH", "MAX_DEPTH", "INT64_MIN", "INT64_MAX", "evaluate", "evaluate_value", "to_int"]

#: Longest expression string accepted, in characters.
MAX_LENGTH = 10_000
#: Deepest nesting of operators, lists and tuples accepted.
MAX_DEPTH = 64
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Number = int | float
Value = int | float | list | tuple

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}

_OPERATOR_NAMES = {
    ast.Pow: "'**'",
    ast.MatMult: "'@'",
    ast.LShift: "'<<'",
    ast.RShift: "'>>'",
    ast.BitAnd: "'&'",
    ast.BitOr: "'|'",
    ast.BitXor: "'^'",
    ast.Invert: "'~'",
    ast.Not: "'not'",
}


def _label(field: str | None) -> str:
    return field if field is not None else "expression"


def _snippet(text: Any, limit: int = 120) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 5] + "...'"


def _fail(field: str | None, text: Any, problem: str) -> DescriptionError:
    return DescriptionError(
        f"{_label(field)}: expected numbers or arithmetic of numbers (+ - * / // %, parentheses, lists, "
        f"tuples); found {_snippet(text)} ({problem})",
        field=field,
    )


def _check_number(value: Any, field: str | None, text: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(field, text, f"{type(value).__name__} is not a number")
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise _fail(field, text, "an integer does not fit in 64 bits")
    elif not math.isfinite(value):
        raise _fail(field, text, "a value is not finite")
    return value


def evaluate(text: str, field: str | None = None) -> Value:
    """Evaluate an arithmetic string without ``eval``.

    Parameters
    ----------
    text
        The expression, e.g. ``"[4150-2917, 10*256, 10*256]"``, ``"(1, 2)"`` or ``"-3"``.
    field
        The description field the text came from; named in errors.

    Returns
    -------
    int, float, list or tuple
        The value; lists and tuples keep their kind and may nest.

    Raises
    ------
    DescriptionError
        If the text is not an allowed expression, too long or too deep, divides by zero, or produces an
        integer outside int64 or a non-finite float. ``.field`` is ``field``.
    """
    if not isinstance(text, str):
        raise _fail(field, text, f"a {type(text).__name__}, not a string")
    if len(text) > MAX_LENGTH:
        raise _fail(field, text, f"{len(text)} characters, at most {MAX_LENGTH} allowed")
    if "\0" in text:
        raise _fail(field, text, "a NUL character")
    stripped = text.strip()
    if not stripped:
        raise _fail(field, text, "an empty string")
    try:
        tree = ast.parse(stripped, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
        raise _fail(field, text, f"not valid syntax: {type(exc).__name__}") from None
    return _walk(tree.body, 1, field, text)


def _walk(node: ast.AST, depth: int, field: str | None, text: str) -> Value:
    if depth > MAX_DEPTH:
        raise _fail(field, text, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(field, text, f"the literal {value!r} is not an int or float")
        return _check_number(value, field, text)
    if isinstance(node, ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            raise _fail(field, text, f"operator {_OPERATOR_NAMES.get(type(node.op), type(node.op).__name__)}")
        left = _walk(node.left, depth + 1, field, text)
        right = _walk(node.right, depth + 1, field, text)
        if not isinstance(left, (int, float)) or not isinstance(right, (int, float)):
            raise _fail(field, text, "arithmetic on a list or tuple")
        try:
            result = op(left, right)
        except ZeroDivisionError:
            raise _fail(field, text, "division by zero") from None
        except OverflowError:
            raise _fail(field, text, "a result is too large") from None
        return _check_number(result, field, text)
    if isinstance(node, ast.UnaryOp):
        op = _UNARY.get(type(node.op))
        if op is None:
            raise _fail(field, text, f"operator {_OPERATOR_NAMES.get(type(node.op), type(node.op).__name__)}")
        operand = _walk(node.operand, depth + 1, field, text)
        if not isinstance(operand, (int, float)):
            raise _fail(field, text, "arithmetic on a list or tuple")
        return _check_number(op(operand), field, text)
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_walk(element, depth + 1, field, text) for element in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    raise _fail(field, text, f"{type(node).__name__} is not allowed")


def evaluate_value(value: Any, field: str | None = None) -> Any:
    """Resolve a JSON value of a numeric field: strings are evaluated, containers element-wise.

    Numbers, lists and tuples are returned with every string inside them evaluated; other values
    (``None``, dicts, numpy arrays...) are returned unchanged for the caller to type-check.

    Raises
    ------
    DescriptionError
        As :func:`evaluate`, for any string.
    """
    if isinstance(value, str):
        return evaluate(value, field)
    if isinstance(value, list):
        return [evaluate_value(item, field) for item in value]
    if isinstance(value, tuple):
        return tuple(evaluate_value(item, field) for item in value)
    return value


def to_int(value: Any, field: str | None = None, *, what: str = "an integer") -> int:
    """Convert a resolved number to ``int``, accepting integral floats (``10/2``) but nothing else.

    Raises
    ------
    DescriptionError
        For bools, non-numbers, non-integral or non-finite floats, or values outside int64.
    """
    label = _label(field)
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "ndim", None) == 0:  # numpy scalar
        value = item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DescriptionError(f"{label}: expected {what}, found {_snippet(value)}", field=field)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise DescriptionError(f"{label}: expected {what}, found the non-integral {value!r}", field=field)
        value = int(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise DescriptionError(f"{label}: expected {what} that fits in 64 bits, found {value}", field=field)
    return value
