"""The three description schemas: parse, validate, fill defaults, write.

Schemas (same names, fields and versions as upstream lazyflow):

* ``"blockwise-fileset-description"`` 1.1 (1.0 accepted): the local block tree (:data:`LOCAL_FIELDS`).
* ``"RESTful-volume-description"`` 1.0: the remote cutout service (:data:`REMOTE_FIELDS`).
* ``"RESTful-blockwise-fileset-description"`` 1.0: both, nested (:data:`COMPOSITE_FIELDS`).

Parsing rules: keys not in the schema are ignored (comment keys like ``"## NOTE"`` may repeat); a schema
field given twice in one object is a :class:`DescriptionError`; spaces in keys become underscores;
``null`` means absent; every schema field absent from the file is ``None`` on the namespace unless it has
a default. Only the top-level ``_schema_name``/``_schema_version`` raise :class:`SchemaError` ("not
mine"); a bad nested sub-description is a :class:`DescriptionError` naming it. Numeric fields may be
arithmetic strings, evaluated by :mod:`lazyflow_rbfs.expressions` (never ``eval``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import string
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import numpy

from lazyflow_rbfs import atomic
from lazyflow_rbfs.errors import ArgumentError, DescriptionError, SchemaError
from lazyflow_rbfs.expressions import evaluate_value, to_int

logger = logging.getLogger(__name__)

__all__ = [
    "Namespace",
    "Vector",
    "DType",
    "DRange",
    "LOCAL_FIELDS",
    "REMOTE_FIELDS",
    "COMPOSITE_FIELDS",
    "LOCAL_SCHEMA_NAME",
    "REMOTE_SCHEMA_NAME",
    "COMPOSITE_SCHEMA_NAME",
    "REMOTE_FORMATS",
    "REMOTE_FORMAT_FIELDS",
    "DEFAULT_BOSS_URL",
    "REFUSED_REMOTE_FIELDS",
    "CREDENTIALS_HELP",
    "SUPPORTED_DTYPES",
    "read_local",
    "read_remote",
    "read_composite",
    "parse_local",
    "parse_remote",
    "parse_composite",
    "write_description",
    "to_json_dict",
    "update_remote_defaults",
    "normalize_h5_path",
    "split_block_file_name_format",
    "parse_dtype",
]

#: Largest description file read, in bytes (descriptions are a few kB).
MAX_FILE_SIZE = 16 * 1024 * 1024


# ---------------------------------------------------------------------------------------------------------
# Namespace


class Namespace:
    """An ordered, mutable bag of fields with attribute access (upstream ``jsonConfig.Namespace``).

    ``vars(ns)`` is the ordered field dict. ``==`` compares numpy arrays by value and nested namespaces
    recursively; ``copy.copy`` and ``copy.deepcopy`` work.
    """

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Namespace):
            return NotImplemented
        mine, theirs = vars(self), vars(other)
        if mine.keys() != theirs.keys():
            return False
        return all(_values_equal(mine[key], theirs[key]) for key in mine)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        inner = ", ".join(f"{key}={_short_repr(value)}" for key, value in vars(self).items())
        return f"Namespace({inner})"

    def __contains__(self, key: str) -> bool:
        return key in self.__dict__

    def __copy__(self) -> Namespace:
        return Namespace(**vars(self))

    def __deepcopy__(self, memo: dict) -> Namespace:
        return Namespace(**{key: copy.deepcopy(value, memo) for key, value in vars(self).items()})


def _short_repr(value: Any) -> str:
    if isinstance(value, numpy.ndarray):
        return repr(value.tolist())
    if isinstance(value, type) and issubclass(value, numpy.generic):
        return f"numpy.{numpy.dtype(value).name}"
    return repr(value)


def _values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, numpy.ndarray) or isinstance(b, numpy.ndarray):
        try:
            return bool(numpy.array_equal(numpy.asarray(a), numpy.asarray(b)))
        except (TypeError, ValueError):
            return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_values_equal(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------------------
# Field types used in the schema dicts


class Vector:
    """Schema marker: a per-axis integer vector, parsed to a 1-D ``numpy.int64`` array."""


class DType:
    """Schema marker: a numpy numeric or bool type name, parsed to the numpy scalar type."""


class DRange:
    """Schema marker: a ``(low, high)`` pair of numbers, parsed to a tuple."""


LOCAL_SCHEMA_NAME = "blockwise-fileset-description"
REMOTE_SCHEMA_NAME = "RESTful-volume-description"
COMPOSITE_SCHEMA_NAME = "RESTful-blockwise-fileset-description"

#: Schema of the local block tree (``BlockwiseFileset.DescriptionFields``): field name -> type.
LOCAL_FIELDS: dict[str, Any] = {
    "_schema_name": LOCAL_SCHEMA_NAME,
    "_schema_version": 1.1,
    "name": str,
    "format": str,
    "axes": str,
    "shape": Vector,
    "dtype": DType,
    "drange": DRange,
    "chunks": Vector,
    "compression": str,
    "compression_opts": int,
    "block_shape": Vector,
    "view_origin": Vector,
    "view_shape": Vector,
    "block_file_name_format": str,
    "dataset_root_dir": str,
    "hash_id": str,
    "sub_block_shape": Vector,
}

#: Schema of the remote volume (``RESTfulVolume.DescriptionFields``): field name -> type.
REMOTE_FIELDS: dict[str, Any] = {
    "_schema_name": REMOTE_SCHEMA_NAME,
    "_schema_version": 1.0,
    "name": str,
    "format": str,
    "axes": str,
    "dtype": DType,
    "bounds": Vector,
    "shape": Vector,
    "origin_offset": Vector,
    "url_format": str,
    "hdf5_dataset": str,
    # format "boss" (BossDB cutout API); all optional, see REMOTE_FORMAT_FIELDS
    "boss_url": str,
    "collection": str,
    "experiment": str,
    "channel": str,
    "resolution": int,
    "boss_encoding": str,
    "max_cutout_bytes": int,
    # Refused (REFUSED_REMOTE_FIELDS): a description cannot say where a secret is read from.
    "token_env": str,
    "token_file": str,
    # format "precomputed" (neuroglancer precomputed over HTTP)
    "precomputed_url": str,
    "scale": (str, int),
    "fill_missing": bool,
}

#: The format-specific remote fields: they may be given only with their format.
REMOTE_FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "boss": (
        "boss_url",
        "collection",
        "experiment",
        "channel",
        "resolution",
        "boss_encoding",
        "max_cutout_bytes",
    ),
    "precomputed": ("precomputed_url", "scale", "fill_missing"),
}

#: The public BossDB API, the default ``boss_url``.
DEFAULT_BOSS_URL = "https://api.bossdb.io"

#: Remote fields of earlier versions that named where a Boss token is read from (an environment variable,
#: a file). Credentials are the user's, never the description's: these are a DescriptionError now.
REFUSED_REMOTE_FIELDS = ("token_env", "token_file")

#: Where Boss credentials go instead (intern's own configuration), for messages.
CREDENTIALS_HELP = (
    "Boss credentials are the user's, never the description's: put the token in ~/.intern/intern.cfg "
    "([Default] protocol, host, token) or set INTERN_PROTOCOL, INTERN_HOST and INTERN_TOKEN together "
    f"(INTERN_TOKEN alone is for {DEFAULT_BOSS_URL}); a token is sent only to the host it is configured for"
)

#: Schema of the composite description (``RESTfulBlockwiseFileset.DescriptionFields``).
COMPOSITE_FIELDS: dict[str, Any] = {
    "_schema_name": COMPOSITE_SCHEMA_NAME,
    "_schema_version": 1.0,
    "remote_description": REMOTE_FIELDS,
    "local_description": LOCAL_FIELDS,
}

_SCHEMA_FIELDS = ("_schema_name", "_schema_version")
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


# ---------------------------------------------------------------------------------------------------------
# Small helpers


def _join(prefix: str, name: str) -> str:
    if not prefix:
        return name
    return prefix + name if prefix.endswith(".") else f"{prefix}.{name}"


def _found(value: Any, limit: int = 200) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, numpy.ndarray):
        value = value.tolist()
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _error(field: str, expected: str, found: Any) -> DescriptionError:
    return DescriptionError(f"{field}: expected {expected}, found {_found(found)}", field=field)


def _error_text(field: str, expected: str, found_text: str) -> DescriptionError:
    return DescriptionError(f"{field}: expected {expected}, found {found_text}", field=field)


def normalize_h5_path(path: str) -> str:
    """Return an HDF5 internal path in canonical form: one leading ``/``, no empty or trailing parts.

    ``"cube"``, ``"/cube"`` and ``"cube/"`` all become ``"/cube"``; ``"volume//cube"`` becomes
    ``"/volume/cube"``.
    """
    return "/" + "/".join(part for part in path.split("/") if part)


_H5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def split_block_file_name_format(fmt: str) -> tuple[str, str]:
    """Split a ``block_file_name_format`` into the file part and the HDF5 internal path.

    The split is at the first path component ending in ``.h5``, ``.hdf5`` or ``.hdf`` (any case):
    ``"block-{roiString}.h5/cube"`` gives ``("block-{roiString}.h5", "cube")``. The internal path is
    returned as written (compare with :func:`normalize_h5_path`).

    Raises
    ------
    DescriptionError
        (field ``block_file_name_format``) if no component names an HDF5 file or nothing follows it.
    """
    parts = fmt.split("/")
    for index, part in enumerate(parts):
        if part.lower().endswith(_H5_SUFFIXES) and index < len(parts) - 1:
            internal = "/".join(parts[index + 1 :])
            if internal.strip("/"):
                return "/".join(parts[: index + 1]), internal
    raise _error(
        "block_file_name_format",
        "a file name ending in .h5/.hdf5/.hdf followed by an HDF5 internal path "
        "(e.g. 'block-{roiString}.h5/cube')",
        fmt,
    )


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
            raise _error(field, expected, value)
        return found
    if isinstance(value, numpy.dtype):
        if value.type in _SUPPORTED_TYPES and value.isnative:
            return value.type
        raise _error(field, expected, str(value))
    if isinstance(value, type):
        if value in _SUPPORTED_TYPES:
            return value
        if value in (bool, int, float, complex):
            return numpy.dtype(value).type
        raise _error_text(field, expected, f"the type {value.__module__}.{value.__qualname__}")
    raise _error(field, expected, value)


# ---------------------------------------------------------------------------------------------------------
# JSON loading


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


def _load_json(path: str | os.PathLike) -> Any:
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


# ---------------------------------------------------------------------------------------------------------
# Generic parsing: schema check, key collection, value conversion


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


def _collect(schema: Mapping[str, Any], obj: Any, prefix: str, nested: bool) -> dict[str, Any]:
    """Check the schema name/version of ``obj`` and return its schema fields (None where absent)."""
    name = schema["_schema_name"]
    where = prefix.rstrip(".") or None

    def not_mine(message: str) -> Exception:
        if nested:
            return DescriptionError(f"{where}: {message}", field=where)
        return SchemaError(message)

    if not isinstance(obj, (Mapping, Namespace)):
        raise not_mine(f"expected a JSON object of schema {name!r}, found {_found(obj)}")

    values: dict[str, Any] = {}
    seen: set[str] = set()
    for key, value in _items(obj):
        if not isinstance(key, str):
            continue
        key = key.replace(" ", "_")
        if key not in schema:
            continue
        if key in seen:
            raise DescriptionError(
                f"{_join(prefix, key)}: expected the field at most once, found it more than once",
                field=_join(prefix, key),
            )
        seen.add(key)
        values[key] = value

    lenient = isinstance(obj, Namespace)  # hand-built namespaces may omit the schema fields
    found_name = values.get("_schema_name")
    if found_name is None and lenient:
        found_name = name
    if found_name != name:
        raise not_mine(f"expected _schema_name {name!r}, found {_found(found_name)}")
    found_version = values.get("_schema_version")
    if found_version is None and lenient:
        found_version = schema["_schema_version"]
    version = _schema_version(found_version)
    expected = _schema_version(schema["_schema_version"])
    if version is None or not _version_accepted(version, expected):
        raise not_mine(
            f"expected _schema_version from {int(expected)}.0 up to {expected} for {name!r}, "
            f"found {_found(found_version)}"
        )
    values["_schema_name"] = name
    values["_schema_version"] = float(version)
    return {key: values.get(key) for key in schema}


def _parse_str(value: Any, field: str, what: str = "a string") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _error(field, what, value)
    if "\0" in value:
        raise _error_text(field, f"{what} without NUL characters", "a NUL character")
    return value


def _parse_int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    return to_int(evaluate_value(value, field), field)


def _parse_vector(value: Any, field: str, ndim: int | None) -> numpy.ndarray | None:
    if value is None:
        return None
    if isinstance(value, numpy.ndarray):
        value = value.tolist()
    value = evaluate_value(value, field)
    expected = "a list of integers" if ndim is None else f"a list of {ndim} integers (one per axis)"
    if not isinstance(value, (list, tuple)):
        raise _error(field, expected, value)
    items = []
    for index, item in enumerate(value):
        try:
            items.append(to_int(item, field))
        except DescriptionError as exc:
            detail = exc.message.split(": ", 1)[-1]
            raise _error_text(field, expected, f"{_found(value)} (entry {index}: {detail})") from None
    if ndim is not None and len(items) != ndim:
        raise _error_text(field, expected, f"{len(items)} entries: {_found(items)}")
    return numpy.array(items, dtype=numpy.int64).reshape(len(items))


def _parse_drange(value: Any, field: str) -> tuple | None:
    if value is None:
        return None
    if isinstance(value, numpy.ndarray):
        value = value.tolist()
    value = evaluate_value(value, field)
    expected = "a pair [low, high] of numbers with low <= high"
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _error(field, expected, value)
    pair = []
    for item in value:
        if isinstance(item, numpy.generic):
            item = item.item()
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise _error(field, expected, value)
        if isinstance(item, float) and not math.isfinite(item):
            raise _error(field, expected, value)
        pair.append(item)
    if pair[0] > pair[1]:
        raise _error(field, expected, value)
    return tuple(pair)


def _check_positive(vector: numpy.ndarray | None, field: str, what: str = "> 0") -> None:
    if vector is not None and (vector <= 0).any():
        raise _error(field, f"every entry {what}", vector)


def _check_axes(value: Any, field: str) -> str:
    expected = f"distinct characters of {_AXES!r}"
    if value is None:
        raise _error(field, expected, value)
    if not isinstance(value, str):
        raise _error(field, f"a string of {expected}", value)
    if not value or any(ch not in _AXES for ch in value) or len(set(value)) != len(value):
        raise _error(field, expected, value)
    return value


def _require(value: Any, field: str, expected: str) -> Any:
    if value is None:
        raise _error(field, expected, None)
    return value


# ---------------------------------------------------------------------------------------------------------
# Format strings


_FORMATTER = string.Formatter()


def _format_fields(fmt: str, field: str) -> list[tuple[str, str | None, str]]:
    """Return ``(name, conversion, spec)`` of every replacement field; errors for bad syntax."""
    try:
        parsed = list(_FORMATTER.parse(fmt))
    except ValueError as exc:
        raise _error_text(field, "a valid str.format string", f"{_found(fmt)} ({exc})") from None
    result = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if "{" in (spec or ""):
            raise _error_text(field, "no nested replacement fields", _found(fmt))
        result.append((name, conversion, spec or ""))
    return result


def _placeholder(name: str, conversion: str | None, spec: str) -> str:
    return "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"


def _sample_roi_string(ndim: int) -> str:
    return f"({[0] * ndim}, {[1] * ndim})"


def _check_block_file_name_format(fmt: Any, field: str, ndim: int) -> str:
    fmt = _parse_str(fmt, field)
    expected = "a format like 'block-{roiString}.h5/cube'"
    if fmt is None:
        raise _error(field, expected, None)
    names = _format_fields(fmt, field)
    if not names:
        raise _error(field, f"{expected} containing the placeholder {{roiString}}", fmt)
    for name, conversion, spec in names:
        if name != "roiString" or conversion or spec:
            raise _error_text(
                field,
                "no placeholder other than a plain {roiString}",
                f"{_placeholder(name, conversion, spec)} in {_found(fmt)}",
            )
    if "\\" in fmt:
        raise _error(field, "a relative path with '/' separators, no backslashes", fmt)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in fmt):
        raise _error(field, "a path without control characters", fmt)
    try:
        external, internal = split_block_file_name_format(fmt)
    except DescriptionError:
        raise _error(
            field, "a file name ending in .h5/.hdf5/.hdf followed by an HDF5 internal path", fmt
        ) from None
    if "{" in internal or "}" in internal:
        raise _error(
            field, "a literal HDF5 internal path (no placeholders or braces after the .h5 part)", fmt
        )
    if "{roiString}" not in external:
        raise _error(field, f"{expected}: {{roiString}} in the file name", fmt)
    produced = external.format(roiString=_sample_roi_string(ndim))
    parts = produced.split("/")
    if (
        produced.startswith("/")
        or re.match(r"^[A-Za-z]:", produced)
        or os.path.isabs(produced)
        or any(part in ("", ".", "..") for part in parts)
        or produced.startswith("~")
    ):
        raise _error_text(
            field,
            "block files inside their block directory (a relative path without '..', '.' or empty parts)",
            f"{_found(fmt)}, which produces {produced!r}",
        )
    return fmt


_URL_AXES = "tcxyz"
_URL_PLACEHOLDER = re.compile(r"([tcxyz])_(start|stop)")


def _check_url_format(fmt: Any, field: str, axes: str) -> str:
    fmt = _parse_str(fmt, field)
    expected = "an http(s) URL format with {a_start}/{a_stop} for every axis"
    if fmt is None:
        raise _error(field, expected, None)
    lowered = fmt.lower()
    if not (lowered.startswith("http://") or lowered.startswith("https://")):
        raise _error(field, "an http:// or https:// URL", fmt)
    rest = fmt.split("://", 1)[1]
    host = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not host or "{" in host or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in fmt):
        raise _error(field, "an http(s) URL with a literal host and no whitespace", fmt)
    names = _format_fields(fmt, field)
    present: set[str] = set()
    sample: dict[str, int] = {}
    for name, conversion, spec in names:
        if conversion or spec:
            raise _error_text(
                field,
                "plain placeholders such as {x_start} (no conversion or format spec)",
                f"{_placeholder(name, conversion, spec)} in {_found(fmt)}",
            )
        match = _URL_PLACEHOLDER.fullmatch(name)
        if match is None:
            raise _error_text(
                field,
                f"only placeholders {{a_start}}/{{a_stop}} for axes a of {_URL_AXES!r}",
                f"{{{name}}} in {_found(fmt)}",
            )
        if match.group(1) not in axes:
            raise _error_text(
                field,
                f"placeholders only for the axes {axes!r}",
                f"{{{name}}} (axis {match.group(1)!r} is not in axes) in {_found(fmt)}",
            )
        present.add(name)
        sample[name] = 0
    missing = [f"{{{a}_{end}}}" for a in axes for end in ("start", "stop") if f"{a}_{end}" not in present]
    if missing:
        raise _error_text(field, expected + f" of {axes!r}", f"{_found(fmt)} without {', '.join(missing)}")
    try:
        fmt.format(**sample)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _error_text(field, "a valid str.format string", f"{_found(fmt)} ({exc})") from None
    return fmt


# ---------------------------------------------------------------------------------------------------------
# The three schemas


def _parse_local(obj: Any, prefix: str, nested: bool) -> Namespace:
    raw = _collect(LOCAL_FIELDS, obj, prefix, nested)

    def f(name: str) -> str:
        return _join(prefix, name)

    out: dict[str, Any] = dict(raw)
    out["name"] = _parse_str(raw["name"], f("name"))
    fmt = _parse_str(raw["format"], f("format"))
    if fmt != "hdf5":
        raise _error(f("format"), "'hdf5'", raw["format"])
    axes = out["axes"] = _check_axes(raw["axes"], f("axes"))
    ndim = len(axes)
    out["dtype"] = parse_dtype(_require(raw["dtype"], f("dtype"), "a numpy type name"), f("dtype"))
    out["drange"] = _parse_drange(raw["drange"], f("drange"))

    shape = _parse_vector(_require(raw["shape"], f("shape"), f"a list of {ndim} integers"), f("shape"), ndim)
    _check_positive(shape, f("shape"))
    out["shape"] = shape

    block_shape = _parse_vector(
        _require(raw["block_shape"], f("block_shape"), f"a list of {ndim} integers"), f("block_shape"), ndim
    )
    _check_positive(block_shape, f("block_shape"))
    out["block_shape"] = block_shape

    chunks = _parse_vector(raw["chunks"], f("chunks"), ndim)
    _check_positive(chunks, f("chunks"))
    out["chunks"] = chunks

    out["compression"] = _parse_str(raw["compression"], f("compression"))
    if out["compression"] == "":
        raise _error(f("compression"), "a compression filter name such as 'gzip' or 'lzf'", "")
    opts = out["compression_opts"] = _parse_int(raw["compression_opts"], f("compression_opts"))
    if opts is not None:
        if out["compression"] is None:
            raise _error_text(f("compression_opts"), "to be given only together with compression", str(opts))
        if out["compression"] == "gzip" and not 0 <= opts <= 9:
            raise _error(f("compression_opts"), "a gzip level from 0 to 9", opts)

    view_origin = _parse_vector(raw["view_origin"], f("view_origin"), ndim)
    if view_origin is None:
        view_origin = numpy.zeros(ndim, dtype=numpy.int64)
    if (view_origin < 0).any():
        raise _error(f("view_origin"), "every entry >= 0", view_origin)
    if (view_origin % block_shape).any():
        raise _error_text(
            f("view_origin"),
            f"a multiple of block_shape {_found(block_shape)} (block-aligned)",
            _found(view_origin),
        )
    if (view_origin >= shape).any():
        raise _error_text(f("view_origin"), f"inside shape {_found(shape)}", _found(view_origin))
    out["view_origin"] = view_origin

    view_shape = _parse_vector(raw["view_shape"], f("view_shape"), ndim)
    if view_shape is None:
        view_shape = shape - view_origin
    _check_positive(view_shape, f("view_shape"))
    if (view_shape > shape - view_origin).any():  # (not origin + view_shape: that could overflow)
        raise _error_text(
            f("view_shape"),
            f"view_origin + view_shape <= shape {_found(shape)}",
            f"view_origin {_found(view_origin)} + view_shape {_found(view_shape)} "
            f"= {_found(view_origin + view_shape)}",
        )
    out["view_shape"] = view_shape

    out["block_file_name_format"] = _check_block_file_name_format(
        raw["block_file_name_format"], f("block_file_name_format"), ndim
    )
    root = _parse_str(raw["dataset_root_dir"], f("dataset_root_dir"))
    if root == "":
        raise _error(f("dataset_root_dir"), "a directory path (default '.')", root)
    out["dataset_root_dir"] = "." if root is None else root
    out["hash_id"] = _parse_str(raw["hash_id"], f("hash_id"))

    sub = _parse_vector(raw["sub_block_shape"], f("sub_block_shape"), ndim)
    _check_positive(sub, f("sub_block_shape"))
    if sub is not None:
        uneven = (block_shape % sub != 0) & (block_shape != view_shape)
        if uneven.any():
            raise _error_text(
                f("sub_block_shape"),
                f"a divisor of block_shape {_found(block_shape)} in every axis where block_shape != "
                f"view_shape",
                _found(sub),
            )
    out["sub_block_shape"] = sub
    return Namespace(**out)


def _validate_remote_hdf5(out: dict[str, Any], prefix: str) -> None:
    field = _join(prefix, "hdf5_dataset")
    dataset = _parse_str(out["hdf5_dataset"], field)
    if dataset is None or not dataset.strip("/"):
        raise _error(field, "the HDF5 dataset name inside each downloaded file (e.g. 'cube')", dataset)
    out["url_format"] = _check_url_format(out["url_format"], _join(prefix, "url_format"), out["axes"])


def _validate_remote_npy(out: dict[str, Any], prefix: str) -> None:
    # "npz"/"npygz": a zlib-compressed .npy body (openconnecto.me, BossDB); no dataset name inside.
    out["hdf5_dataset"] = _parse_str(out["hdf5_dataset"], _join(prefix, "hdf5_dataset"))
    out["url_format"] = _check_url_format(out["url_format"], _join(prefix, "url_format"), out["axes"])


def _check_no_url_format(out: dict[str, Any], prefix: str, fmt: str, instead: str) -> None:
    # A url_format/hdf5_dataset next to format "boss"/"precomputed" is a conflict of the format with
    # those fields; it is reported on "format" (a description with url_format wants hdf5/npz/npygz).
    for name in ("url_format", "hdf5_dataset"):
        if out[name] is not None:
            raise _error_text(
                _join(prefix, "format"),
                f"a format that uses {name} ('hdf5', 'npz' or 'npygz'), or no {name} (format {fmt!r} "
                f"derives its URLs from {instead})",
                f"format {fmt!r} together with {name} {_found(out[name])}",
            )


def _check_http_base(value: Any, field: str, what: str) -> str:
    url = _parse_str(value, field)
    if url is None:
        raise _error(field, what, None)
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
        raise _error(field, f"{what}: an http:// or https:// URL with a host, no query, no whitespace", url)
    return url.rstrip("/")


_BOSS_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_BOSS_ENCODINGS = ("blosc", "npygz")


def _validate_remote_boss(out: dict[str, Any], prefix: str) -> None:
    def f(name: str) -> str:
        return _join(prefix, name)

    _check_no_url_format(out, prefix, "boss", "boss_url, collection, experiment, channel and resolution")
    if out["axes"] not in ("zyx", "tzyx"):
        raise _error(f("axes"), "'zyx' or 'tzyx' for format 'boss' (BossDB cutouts are (t)ZYX)", out["axes"])
    base = out["boss_url"]
    out["boss_url"] = (
        DEFAULT_BOSS_URL if base is None else _check_http_base(base, f("boss_url"), "the Boss API")
    )
    for name in ("collection", "experiment", "channel"):
        value = _parse_str(out[name], f(name))
        if value is None or _BOSS_NAME.fullmatch(value) is None:
            raise _error(f(name), f"the Boss {name} name (letters, digits, '_', '-', '.')", value)
        out[name] = value
    resolution = _parse_int(out["resolution"], f("resolution"))
    if resolution is None:
        resolution = 0
    if resolution < 0:
        raise _error(f("resolution"), "a resolution level >= 0 (0 is the native resolution)", resolution)
    out["resolution"] = resolution
    encoding = _parse_str(out["boss_encoding"], f("boss_encoding"))
    if encoding is None:
        encoding = "blosc"
    if encoding not in _BOSS_ENCODINGS:
        raise _error(f("boss_encoding"), f"one of {list(_BOSS_ENCODINGS)}", encoding)
    out["boss_encoding"] = encoding
    limit = _parse_int(out["max_cutout_bytes"], f("max_cutout_bytes"))
    if limit is not None and limit <= 0:
        raise _error(f("max_cutout_bytes"), "a positive number of bytes", limit)
    out["max_cutout_bytes"] = limit


def _validate_remote_precomputed(out: dict[str, Any], prefix: str) -> None:
    def f(name: str) -> str:
        return _join(prefix, name)

    _check_no_url_format(out, prefix, "precomputed", "precomputed_url, scale and the volume's info file")
    if out["axes"] not in ("zyx", "czyx"):
        raise _error(
            f("axes"),
            "'zyx' or 'czyx' for format 'precomputed' (chunks are x,y,z,c in Fortran order)",
            out["axes"],
        )
    out["precomputed_url"] = _check_http_base(
        out["precomputed_url"], f("precomputed_url"), "the URL of the folder holding the volume's info file"
    )
    scale = out["scale"]
    expected = "a scale key (e.g. '8_8_40') or a scale index >= 0"
    if scale is None:
        scale = 0
    elif isinstance(scale, bool) or not isinstance(scale, (str, int, numpy.integer)):
        raise _error(f("scale"), expected, scale)
    elif isinstance(scale, str):
        if (
            not scale.strip()
            or "\0" in scale
            or scale != scale.strip()
            or scale.startswith("/")
            or ".." in scale
        ):
            raise _error(f("scale"), expected, scale)
    else:
        scale = int(scale)
        if scale < 0:
            raise _error(f("scale"), expected, scale)
    out["scale"] = scale
    fill = out["fill_missing"]
    if fill is None:
        fill = False
    if not isinstance(fill, (bool, numpy.bool_)):
        raise _error(f("fill_missing"), "true or false", fill)
    out["fill_missing"] = bool(fill)


#: Remote formats accepted in ``RESTful-volume-description``: name -> validator of the parsed fields.
#: A validator receives the field dict (generic fields already parsed) and the field prefix, checks and
#: normalises the format-specific fields in place and raises :class:`DescriptionError`.
REMOTE_FORMATS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "hdf5": _validate_remote_hdf5,
    "npz": _validate_remote_npy,
    "npygz": _validate_remote_npy,
    "boss": _validate_remote_boss,
    "precomputed": _validate_remote_precomputed,
}


def _parse_remote(obj: Any, prefix: str, nested: bool) -> Namespace:
    raw = _collect(REMOTE_FIELDS, obj, prefix, nested)

    def f(name: str) -> str:
        return _join(prefix, name)

    out: dict[str, Any] = dict(raw)
    out["name"] = _parse_str(raw["name"], f("name"))
    fmt = _parse_str(raw["format"], f("format"))
    if fmt not in REMOTE_FORMATS:
        raise _error(f("format"), f"one of {sorted(REMOTE_FORMATS)}", raw["format"])
    out["format"] = fmt
    axes = out["axes"] = _check_axes(raw["axes"], f("axes"))
    ndim = len(axes)
    out["dtype"] = parse_dtype(_require(raw["dtype"], f("dtype"), "a numpy type name"), f("dtype"))

    bounds = _parse_vector(
        _require(raw["bounds"], f("bounds"), f"a list of {ndim} integers"), f("bounds"), ndim
    )
    _check_positive(bounds, f("bounds"))
    out["bounds"] = bounds
    origin = _parse_vector(raw["origin_offset"], f("origin_offset"), ndim)
    if origin is None:
        origin = numpy.zeros(ndim, dtype=numpy.int64)
    if (origin < 0).any():
        raise _error(f("origin_offset"), "every entry >= 0", origin)
    out["origin_offset"] = origin
    if (bounds <= origin).any():
        raise _error_text(
            f("bounds"), f"bounds > origin_offset {_found(origin)} in every axis", _found(bounds)
        )
    out["shape"] = bounds - origin  # always derived, whatever the file says
    out["url_format"] = _parse_str(raw["url_format"], f("url_format"))
    out["hdf5_dataset"] = _parse_str(raw["hdf5_dataset"], f("hdf5_dataset"))
    for name in REFUSED_REMOTE_FIELDS:
        if raw[name] is not None:  # its value is not shown: it may be the secret itself
            raise _error_text(
                f(name),
                f"no {name}: a description cannot name an environment variable or a file to read a secret "
                f"from. {CREDENTIALS_HELP}",
                f"{name} set",
            )
    for other, names in REMOTE_FORMAT_FIELDS.items():
        if other == fmt:
            continue
        for name in names:
            if out[name] is not None:
                raise _error_text(f(name), f"{name} only with format {other!r}", f"format {fmt!r}")
    REMOTE_FORMATS[fmt](out, prefix)
    return Namespace(**out)


def _parse_composite(obj: Any, prefix: str, nested: bool) -> Namespace:
    raw = _collect(COMPOSITE_FIELDS, obj, prefix, nested)
    out: dict[str, Any] = dict(raw)
    remote_field = _join(prefix, "remote_description")
    local_field = _join(prefix, "local_description")
    remote = _require(raw["remote_description"], remote_field, f"an object of schema {REMOTE_SCHEMA_NAME!r}")
    local = _require(raw["local_description"], local_field, f"an object of schema {LOCAL_SCHEMA_NAME!r}")
    remote = out["remote_description"] = _parse_remote(remote, remote_field, True)
    local = out["local_description"] = _parse_local(local, local_field, True)

    if local.axes != remote.axes:
        raise _error_text(_join(local_field, "axes"), f"the remote axes {remote.axes!r}", _found(local.axes))
    if (local.shape > remote.shape).any():
        raise _error_text(
            _join(local_field, "shape"),
            f"<= the remote shape {_found(remote.shape)} in every axis",
            _found(local.shape),
        )
    if remote.format == "hdf5":
        _external, internal = split_block_file_name_format(local.block_file_name_format)
        if normalize_h5_path(internal) != normalize_h5_path(remote.hdf5_dataset):
            raise _error_text(
                _join(local_field, "block_file_name_format"),
                f"the internal dataset path {normalize_h5_path(remote.hdf5_dataset)!r} "
                f"(remote hdf5_dataset {remote.hdf5_dataset!r})",
                f"{normalize_h5_path(internal)!r} in {local.block_file_name_format!r}",
            )
    return Namespace(**out)


def parse_local(obj: Mapping[str, Any] | Namespace, *, field_prefix: str = "") -> Namespace:
    """Validate a local (``blockwise-fileset-description``) description given as a dict or Namespace.

    Parameters
    ----------
    obj
        The JSON object (dict) or a namespace (e.g. an upstream ``preparsedDescription``). A namespace may
        omit ``_schema_name``/``_schema_version``. The input is never modified.
    field_prefix
        Prefix of the field names in errors (``"local_description"`` for a nested description); when
        non-empty, a wrong schema is a :class:`DescriptionError` naming it instead of a
        :class:`SchemaError`.

    Returns
    -------
    Namespace
        Every schema field in schema order; vectors 1-D int64 arrays, ``dtype`` a numpy scalar type,
        ``drange`` a tuple, defaults filled (``view_origin``, ``view_shape``, ``dataset_root_dir``),
        absent optional fields ``None``.

    Raises
    ------
    SchemaError
        Top level only: not this schema (name) or an unsupported version.
    DescriptionError
        Anything wrong with the content; ``.field`` names the field.
    """
    return _parse_local(obj, field_prefix, bool(field_prefix))


def parse_remote(obj: Mapping[str, Any] | Namespace, *, field_prefix: str = "") -> Namespace:
    """Validate a remote (``RESTful-volume-description``) description; see :func:`parse_local`.

    ``origin_offset`` defaults to zeros and ``shape`` is always ``bounds - origin_offset``.
    """
    return _parse_remote(obj, field_prefix, bool(field_prefix))


def parse_composite(obj: Mapping[str, Any] | Namespace, *, field_prefix: str = "") -> Namespace:
    """Validate a composite (``RESTful-blockwise-fileset-description``) description.

    Both nested descriptions are parsed as by :func:`parse_remote`/:func:`parse_local` (errors in them
    are :class:`DescriptionError` with dotted fields such as ``local_description.shape``), then checked
    against each other: equal axes, local ``shape`` <= remote ``shape``, and the HDF5 internal path of
    ``block_file_name_format`` equal to ``hdf5_dataset`` (after :func:`normalize_h5_path`).
    """
    return _parse_composite(obj, field_prefix, bool(field_prefix))


_PARSERS: dict[str, Callable[..., Namespace]] = {
    "local": parse_local,
    "remote": parse_remote,
    "composite": parse_composite,
}


def _read(path: str | os.PathLike, kind: str) -> Namespace:
    obj = _load_json(path)
    return _PARSERS[kind](obj)


def read_local(path: str | os.PathLike) -> Namespace:
    """Read and validate a local description file; see :func:`parse_local`.

    Raises
    ------
    FileNotFoundError, OSError
        If the file cannot be read (not wrapped).
    SchemaError
        If the file is JSON but not of this schema (including a top level that is not an object).
    DescriptionError
        Invalid JSON (``.field`` is ``None``) or invalid content (``.field`` names the field).
    """
    return _read(path, "local")


def read_remote(path: str | os.PathLike) -> Namespace:
    """Read and validate a remote description file; see :func:`parse_remote` and :func:`read_local`."""
    return _read(path, "remote")


def read_composite(path: str | os.PathLike) -> Namespace:
    """Read and validate a composite description file; see :func:`parse_composite` and :func:`read_local`."""
    return _read(path, "composite")


def update_remote_defaults(desc: Namespace) -> Namespace:
    """Fill in the derived remote fields in place (upstream ``RESTfulVolume.updateDescription``).

    ``origin_offset`` defaults to zeros; ``origin_offset``/``bounds`` become int64 arrays; ``shape`` is
    set to ``bounds - origin_offset``. Returns ``desc``.

    Raises
    ------
    DescriptionError
        If ``bounds`` or ``origin_offset`` is not an integer vector, or their lengths differ.
    """
    bounds = _parse_vector(getattr(desc, "bounds", None), "bounds", None)
    if bounds is None:
        raise _error("bounds", "a list of integers", None)
    origin = _parse_vector(getattr(desc, "origin_offset", None), "origin_offset", len(bounds))
    if origin is None:
        origin = numpy.zeros(len(bounds), dtype=numpy.int64)
    desc.bounds = bounds
    desc.origin_offset = origin
    desc.shape = bounds - origin
    return desc


# ---------------------------------------------------------------------------------------------------------
# Writing


def _to_json_value(value: Any) -> Any:
    if isinstance(value, Namespace):
        return to_json_dict(value)
    if isinstance(value, numpy.ndarray):
        return value.tolist()
    if isinstance(value, type) and issubclass(value, numpy.generic):
        return numpy.dtype(value).name
    if isinstance(value, numpy.dtype):
        return value.name
    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_to_json_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _to_json_value(item) for key, item in value.items()}
    return value


def to_json_dict(desc: Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """Return the JSON-ready dict of a description, in the namespace's order.

    Vectors become lists of plain ints, ``dtype`` its name (``"uint8"``), nested namespaces objects,
    tuples lists; fields that are ``None`` are left out (``null`` and absent mean the same).
    """
    items = vars(desc).items() if isinstance(desc, Namespace) else desc.items()
    return {key: _to_json_value(value) for key, value in items if value is not None}


def _dumps(value: Any, level: int = 0) -> str:
    """JSON with 4-space indentation, but flat lists of numbers/strings on one line (``[32, 256, 256]``)."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = " " * (4 * (level + 1))
        items = [f"{inner}{json.dumps(key)}: {_dumps(item, level + 1)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * (4 * level) + "}"
    if isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
        inner = " " * (4 * (level + 1))
        items = [f"{inner}{_dumps(item, level + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * (4 * level) + "]"
    return json.dumps(value, allow_nan=False)


def write_description(path: str | os.PathLike, desc: Namespace | Mapping[str, Any], kind: str) -> None:
    """Validate ``desc`` and atomically replace the file at ``path`` with it as JSON.

    The description is validated with the parser of ``kind`` first (nothing is touched if that fails),
    then written with 4-space indentation to a temporary file in the same directory, fsynced and renamed
    onto ``path``. On any failure the previous file is unchanged and no temporary file is left.

    Parameters
    ----------
    path
        The description file to create or replace.
    desc
        The description (a parsed or hand-built namespace, or a dict).
    kind
        ``"local"``, ``"remote"`` or ``"composite"``.

    Raises
    ------
    ValueError
        For an unknown ``kind``.
    SchemaError, DescriptionError
        If ``desc`` does not validate.
    CacheWriteError
        If writing fails (an ``OSError``: full disk, read-only directory, ...).
    """
    parser = _PARSERS.get(kind)
    if parser is None:
        raise ArgumentError(f"kind: expected one of {sorted(_PARSERS)}, found {kind!r}")
    validated = parser(desc)
    text = _dumps(to_json_dict(validated)) + "\n"
    data = text.encode("utf-8")

    target = os.path.abspath(os.fspath(path))
    try:
        atomic.write_bytes(target, data, keep_mode=True)
    except BaseException:
        logger.debug("writing description %s failed; left the old file unchanged", target)
        raise
    logger.debug("wrote %s description %s", kind, target)
