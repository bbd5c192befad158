"""Reading a description: JSON with duplicates kept, and the collection rules every schema shares.

Keys not in the schema are ignored (comment keys like ``"## NOTE"`` may repeat); a schema field given twice
in one object is a :class:`~lazyflow_rbfs.errors.DescriptionError`; spaces in keys become underscores;
``null`` means absent. Only the top-level ``_schema_name``/``_schema_version`` raise
:class:`~lazyflow_rbfs.errors.SchemaError` ("not mine"); a nested sub-description that is not of its schema
is a ``DescriptionError`` naming it. A lower minor version of the same major is accepted.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from lazyflow_rbfs.description.fields import (
    check_axes,
    join_field,
    parse_dtype,
    parse_str,
    require,
    show_value,
)
from lazyflow_rbfs.description.namespace import Namespace
from lazyflow_rbfs.errors import DescriptionError, SchemaError

__all__ = ["MAX_FILE_SIZE", "schema_fields", "load_json", "collect_fields", "collect_volume_fields"]

logger = logging.getLogger(__name__)

#: Largest description file read, in bytes (descriptions are a few kB).
MAX_FILE_SIZE = 16 * 1024 * 1024

#: An unknown key this close (edit distance, a swap of neighbours counting 1) to a schema field is
#: probably a misspelling of it: it is still ignored, but with a warning naming the field.
MISSPELLING_DISTANCE = 2

_warned_misspellings: set[tuple[str, str]] = set()


def schema_fields(name: str, version: float, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A schema dict: ``_schema_name``, ``_schema_version`` (the version this package writes; lower minor
    versions of the same major are read too), then ``fields`` (field name -> type)."""
    return {"_schema_name": name, "_schema_version": version, **fields}


class _JsonObject(dict):
    """A JSON object that remembers every (key, value) pair, duplicates included."""

    pairs: list[tuple[str, Any]]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _JsonObject:
        obj = cls(pairs)
        obj.pairs = pairs
        return obj


def _reject_constant(name: str) -> Any:
    raise DescriptionError(f"invalid JSON: expected finite numbers, found {name}", field=None)


def load_json(path: str | os.PathLike) -> Any:
    with open(path, "rb") as file:
        raw = file.read(MAX_FILE_SIZE + 1)
    if len(raw) > MAX_FILE_SIZE:
        raise DescriptionError(
            f"{os.fspath(path)}: expected a description file of at most {MAX_FILE_SIZE} bytes, "
            f"found a larger file",
            field=None,
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DescriptionError(
            f"{os.fspath(path)}: expected UTF-8 JSON text, found undecodable bytes ({exc.reason} at byte "
            f"{exc.start})",
            field=None,
        ) from None
    return _loads(text, os.fspath(path))


def _loads(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_JsonObject.from_pairs, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise DescriptionError(
            f"{source}: expected valid JSON, found a syntax error at line {exc.lineno} column {exc.colno}: "
            f"{exc.msg}",
            field=None,
        ) from None
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, DescriptionError):
            raise
        raise DescriptionError(
            f"{source}: expected valid JSON, found {type(exc).__name__}: {exc}", field=None
        ) from None


def _items(obj: Any) -> list[tuple[str, Any]]:
    if isinstance(obj, Namespace):
        return list(vars(obj).items())
    pairs = getattr(obj, "pairs", None)
    if pairs is not None:
        return list(pairs)
    return list(obj.items())


def _schema_version(value: Any) -> Decimal | None:
    """Return a version number (``1.1``, ``"1.0"``, ``1``) as a Decimal, or ``None`` if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        return None
    if re.fullmatch(r"\d{1,9}(?:\.\d{1,9})?", text) is None:
        return None
    return Decimal(text)


def _version_accepted(version: Decimal, expected: Decimal) -> bool:
    """Same major version, and not newer than the version this package writes."""
    return int(version) == int(expected) and version <= expected


def collect_fields(schema: Mapping[str, Any], obj: Any, prefix: str, nested: bool) -> dict[str, Any]:
    """Check the schema name/version of ``obj`` and return its schema fields (None where absent)."""
    name = schema["_schema_name"]
    where = prefix.rstrip(".") or None

    def not_mine(message: str) -> Exception:
        if nested:
            return DescriptionError(f"{where}: {message}", field=where)
        return SchemaError(message)

    if not isinstance(obj, (Mapping, Namespace)):
        raise not_mine(f"expected a JSON object of schema {name!r}, found {show_value(obj)}")

    values: dict[str, Any] = {}
    seen: set[str] = set()
    for key, value in _items(obj):
        if not isinstance(key, str):
            continue
        key = key.replace(" ", "_")
        if key not in schema:
            _warn_if_misspelled(key, schema, prefix)
            continue
        if key in seen:
            raise DescriptionError(
                f"{join_field(prefix, key)}: expected the field at most once, found it more than once",
                field=join_field(prefix, key),
            )
        seen.add(key)
        values[key] = value

    lenient = isinstance(obj, Namespace)  # hand-built namespaces may omit the schema fields
    found_name = values.get("_schema_name")
    if found_name is None and lenient:
        found_name = name
    if found_name != name:
        raise not_mine(f"expected _schema_name {name!r}, found {show_value(found_name)}")
    found_version = values.get("_schema_version")
    if found_version is None and lenient:
        found_version = schema["_schema_version"]
    version = _schema_version(found_version)
    expected = _schema_version(schema["_schema_version"])
    if version is None or not _version_accepted(version, expected):
        raise not_mine(
            f"expected _schema_version from {int(expected)}.0 up to {expected} for {name!r}, "
            f"found {show_value(found_version)}"
        )
    values["_schema_name"] = name
    values["_schema_version"] = float(version)
    return {key: values.get(key) for key in schema}


def edit_distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) that turn ``a`` into ``b``."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def probable_field(key: str, fields: Iterable[str]) -> str | None:
    """The schema field ``key`` is probably a misspelling of (within :data:`MISSPELLING_DISTANCE`, the
    closest, ties broken by name), or ``None``. Comment keys (``"## ..."``) and keys of fewer than four
    characters (too short to tell a typo from another word) never are."""
    if key.startswith("#") or len(key) < 4:
        return None
    scored = sorted((edit_distance(key.lower(), field.lower()), field) for field in fields if len(field) >= 4)
    if scored and scored[0][0] <= MISSPELLING_DISTANCE:
        return scored[0][1]
    return None


def _warn_if_misspelled(key: str, schema: Mapping[str, Any], prefix: str) -> None:
    field = probable_field(key, schema)
    if field is None or (join_field(prefix, key), field) in _warned_misspellings:
        return
    _warned_misspellings.add((join_field(prefix, key), field))
    logger.warning(
        "description key %r is not a field of %r and is ignored; did you mean %r? (unknown keys are "
        "allowed for upstream compatibility, so a misspelled optional field silently keeps its default)",
        join_field(prefix, key),
        schema["_schema_name"],
        join_field(prefix, field),
    )


def collect_volume_fields(
    schema: Mapping[str, Any],
    obj: Any,
    prefix: str,
    nested: bool,
    check_format: Callable[[str | None, str], Any],
) -> tuple[dict[str, Any], dict[str, Any], Callable[[str], str]]:
    """:func:`collect_fields`, then parse the fields every volume schema starts with: ``name``, ``format``,
    ``axes`` and ``dtype``, in that order.

    ``check_format(value, field)`` receives the ``format`` string (``None`` if absent) and its field name,
    raises for a format the schema does not read, and returns the parsed value.

    Returns
    -------
    (raw, out, f)
        The collected fields, a copy with those four parsed, and ``f(name)``: the dotted name of a field.
    """
    raw = collect_fields(schema, obj, prefix, nested)
    f = functools.partial(join_field, prefix)
    out = dict(raw)
    out["name"] = parse_str(raw["name"], f("name"))
    out["format"] = check_format(parse_str(raw["format"], f("format")), f("format"))
    out["axes"] = check_axes(raw["axes"], f("axes"))
    out["dtype"] = parse_dtype(require(raw["dtype"], f("dtype"), "a numpy type name"), f("dtype"))
    return raw, out, f
