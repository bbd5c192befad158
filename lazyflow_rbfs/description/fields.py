"""Field types and value parsers shared by every schema (and by the remote formats' own fields).

Each parser takes the raw JSON value and the field's (dotted) name and returns the parsed value, ``None``
for an absent optional field, or raises a :class:`~lazyflow_rbfs.errors.DescriptionError` whose message
names the field, what was expected and what was found. Numeric fields may be arithmetic strings,
evaluated by :mod:`lazyflow_rbfs.expressions` (never ``eval``).
"""

from __future__ import annotations

import math
import os
import re
import string
from typing import Any

import numpy

from lazyflow_rbfs import locations as _locations
from lazyflow_rbfs.errors import DescriptionError
from lazyflow_rbfs.expressions import evaluate_value, to_int

__all__ = [
    "SIZE_UNITS",
    "parse_size",
    "parse_byte_size",
    "Vector",
    "DType",
    "DRange",
    "SUPPORTED_DTYPES",
    "join_field",
    "show_value",
    "field_error",
    "field_error_text",
    "parse_dtype",
    "parse_str",
    "parse_int",
    "parse_vector",
    "parse_drange",
    "check_positive",
    "check_axes",
    "require",
    "format_fields",
    "placeholder",
    "check_http_base",
    "check_location_base",
]

# -- field types used in the schema dicts ------------------------------------------------------------------


class Vector:
    """Schema marker: a per-axis integer vector, parsed to a 1-D ``numpy.int64`` array."""


class DType:
    """Schema marker: a numpy numeric or bool type name, parsed to the numpy scalar type."""


class DRange:
    """Schema marker: a ``(low, high)`` pair of numbers, parsed to a tuple."""


_AXES = "txyzc"

#: numpy type names accepted for ``dtype`` (with or without a ``numpy.``/``np.`` prefix).
SUPPORTED_DTYPES: dict[str, type] = {
    "bool": numpy.bool_,
    "bool_": numpy.bool_,
    "int8": numpy.int8,
    "int16": numpy.int16,
    "int32": numpy.int32,
    "int64": numpy.int64,
    "uint8": numpy.uint8,
    "uint16": numpy.uint16,
    "uint32": numpy.uint32,
    "uint64": numpy.uint64,
    "float16": numpy.float16,
    "float32": numpy.float32,
    "float64": numpy.float64,
    "complex64": numpy.complex64,
    "complex128": numpy.complex128,
}
_SUPPORTED_TYPES = frozenset(SUPPORTED_DTYPES.values())


# -- messages -----------------------------------------------------------------------------------------------


def join_field(prefix: str, name: str) -> str:
    """``prefix.name`` (the dotted name of a nested field in messages); ``name`` without a prefix."""
    if not prefix:
        return name
    return prefix + name if prefix.endswith(".") else f"{prefix}.{name}"


def show_value(value: Any, limit: int = 200) -> str:
    """``value`` as shown in a message (``repr``, arrays as lists, cut at ``limit`` characters)."""
    if value is None:
        return "nothing"
    if isinstance(value, numpy.ndarray):
        value = value.tolist()
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def field_error(field: str, expected: str, found: Any) -> DescriptionError:
    """The :class:`DescriptionError` ``"<field>: expected <expected>, found <found>"``."""
    return DescriptionError(f"{field}: expected {expected}, found {show_value(found)}", field=field)


def field_error_text(field: str, expected: str, found_text: str) -> DescriptionError:
    """:func:`field_error` with the found part given as text."""
    return DescriptionError(f"{field}: expected {expected}, found {found_text}", field=field)


def parse_dtype(value: Any, field: str = "dtype") -> type:
    """Parse a dtype name (``"uint8"``, ``"numpy.uint8"``, ``"np.uint8"``) or type to a numpy scalar type.

    Only numeric and bool types are accepted; object, string and structured types never are.

    Raises
    ------
    DescriptionError
        For anything else.
    """
    expected = f"a numpy numeric or bool type name ({', '.join(SUPPORTED_DTYPES)})"
    if isinstance(value, str):
        name = value.strip()
        for prefix in ("numpy.", "np."):
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        found = SUPPORTED_DTYPES.get(name)
        if found is None:
            raise field_error(field, expected, value)
        return found
    if isinstance(value, numpy.dtype):
        if value.type in _SUPPORTED_TYPES and value.isnative:
            return value.type
        raise field_error(field, expected, str(value))
    if isinstance(value, type):
        if value in _SUPPORTED_TYPES:
            return value
        if value in (bool, int, float, complex):
            return numpy.dtype(value).type
        raise field_error_text(field, expected, f"the type {value.__module__}.{value.__qualname__}")
    raise field_error(field, expected, value)


# -- values -------------------------------------------------------------------------------------------------


def parse_str(value: Any, field: str, what: str = "a string") -> str | None:
    """``value`` if it is a string without NUL characters, ``None`` if absent; else an error."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise field_error(field, what, value)
    if "\0" in value:
        raise field_error_text(field, f"{what} without NUL characters", "a NUL character")
    return value


#: Units of sizes such as ``50G`` (powers of 1024; ``K``, ``KB`` and ``KiB`` mean the same).
SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int | None:
    """Bytes of ``"500M"``, ``"50G"``, ``"2T"``, ``"1.5G"``, ``"12345"``; ``None`` if not such a size."""
    match = _SIZE.match(str(text))
    if match is None:
        return None
    number, unit = match.groups()
    return int(float(number) * SIZE_UNITS[unit.upper()])


def parse_byte_size(value: Any, field: str) -> int | None:
    """Bytes >= 0: an integer, arithmetic, or a size with a unit (``"50G"``); ``None`` if absent."""
    if value is None:
        return None
    size = parse_size(value) if isinstance(value, str) else None
    if size is None:
        size = parse_int(value, field)
    if size is not None and size < 0:
        raise field_error(field, "a number of bytes >= 0 or a size such as '50G'", value)
    return size


def parse_int(value: Any, field: str) -> int | None:
    """An integer (or an arithmetic string evaluating to one), ``None`` if absent."""
    if value is None:
        return None
    return to_int(evaluate_value(value, field), field)


def parse_vector(value: Any, field: str, ndim: int | None) -> numpy.ndarray | None:
    """A list of integers (``ndim`` of them, if given) as a 1-D int64 array, ``None`` if absent."""
    if value is None:
        return None
    if isinstance(value, numpy.ndarray):
        value = value.tolist()
    value = evaluate_value(value, field)
    expected = "a list of integers" if ndim is None else f"a list of {ndim} integers (one per axis)"
    if not isinstance(value, (list, tuple)):
        raise field_error(field, expected, value)
    items = []
    for index, item in enumerate(value):
        try:
            items.append(to_int(item, field))
        except DescriptionError as exc:
            detail = exc.message.split(": ", 1)[-1]
            raise field_error_text(
                field, expected, f"{show_value(value)} (entry {index}: {detail})"
            ) from None
    if ndim is not None and len(items) != ndim:
        raise field_error_text(field, expected, f"{len(items)} entries: {show_value(items)}")
    return numpy.array(items, dtype=numpy.int64).reshape(len(items))


def parse_drange(value: Any, field: str) -> tuple | None:
    """A pair ``(low, high)`` of finite numbers with ``low <= high``, ``None`` if absent."""
    if value is None:
        return None
    if isinstance(value, numpy.ndarray):
        value = value.tolist()
    value = evaluate_value(value, field)
    expected = "a pair [low, high] of numbers with low <= high"
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise field_error(field, expected, value)
    pair = []
    for item in value:
        if isinstance(item, numpy.generic):
            item = item.item()
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise field_error(field, expected, value)
        if isinstance(item, float) and not math.isfinite(item):
            raise field_error(field, expected, value)
        pair.append(item)
    if pair[0] > pair[1]:
        raise field_error(field, expected, value)
    return tuple(pair)


def check_positive(vector: numpy.ndarray | None, field: str, what: str = "> 0") -> None:
    """Raise unless every entry of ``vector`` (if any) is positive."""
    if vector is not None and (vector <= 0).any():
        raise field_error(field, f"every entry {what}", vector)


def check_axes(value: Any, field: str) -> str:
    """``value`` if it is a non-empty string of distinct characters of ``"txyzc"``."""
    expected = f"distinct characters of {_AXES!r}"
    if value is None:
        raise field_error(field, expected, value)
    if not isinstance(value, str):
        raise field_error(field, f"a string of {expected}", value)
    if not value or any(ch not in _AXES for ch in value) or len(set(value)) != len(value):
        raise field_error(field, expected, value)
    return value


def require(value: Any, field: str, expected: str) -> Any:
    """``value``, or an error saying what was expected if it is ``None``."""
    if value is None:
        raise field_error(field, expected, None)
    return value


# -- format strings and URLs --------------------------------------------------------------------------------


_FORMATTER = string.Formatter()


def format_fields(fmt: str, field: str) -> list[tuple[str, str | None, str]]:
    """Return ``(name, conversion, spec)`` of every replacement field; errors for bad syntax."""
    try:
        parsed = list(_FORMATTER.parse(fmt))
    except ValueError as exc:
        raise field_error_text(field, "a valid str.format string", f"{show_value(fmt)} ({exc})") from None
    result = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if "{" in (spec or ""):
            raise field_error_text(field, "no nested replacement fields", show_value(fmt))
        result.append((name, conversion, spec or ""))
    return result


def placeholder(name: str, conversion: str | None, spec: str) -> str:
    """The replacement field ``{name!conversion:spec}`` as written (for messages)."""
    return "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"


def check_http_base(value: Any, field: str, what: str) -> str:
    """An ``http(s)://`` base URL with a host, no query or fragment, without its trailing ``/``."""
    url = parse_str(value, field)
    if url is None:
        raise field_error(field, what, None)
    lowered = url.lower()
    rest = url.split("://", 1)[1] if "://" in url else ""
    host = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if (
        not (lowered.startswith("http://") or lowered.startswith("https://"))
        or not host
        or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url)
        or "?" in url
        or "#" in url
    ):
        raise field_error(
            field, f"{what}: an http:// or https:// URL with a host, no query, no whitespace", url
        )
    return url.rstrip("/")


def check_location_base(value: Any, field: str, what: str) -> str:
    """A base location: an ``http(s)://`` URL (as :func:`check_http_base`), ``gs://``/``s3://`` of a public
    bucket (stored as its HTTPS URL), or a local ``file:///`` URL or absolute path (stored as a ``file:///``
    URL); without its trailing ``/``."""
    text = parse_str(value, field)
    if text is None:
        raise field_error(field, what, None)
    stripped = text.strip()
    if "://" not in stripped:
        if not os.path.isabs(stripped):
            raise field_error(
                field, f"{what}: a URL, or an absolute path (a relative path has no fixed meaning)", text
            )
        return _locations.file_url(stripped)
    scheme = stripped.split("://", 1)[0].lower()
    if scheme == "file":
        resolved = _locations.resolve(stripped, field=field)
        return str(resolved)
    if scheme in ("gs", "s3"):
        try:
            resolved = _locations.http_url(stripped)
        except DescriptionError:
            resolved = None
        if resolved is None:
            raise field_error(field, f"{what}: {scheme}://bucket/path", text)
        return check_http_base(resolved, field, what)
    return check_http_base(text, field, what)
