"""Writing a description: the JSON-ready dict, and an atomic replace of the file after validation."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy

from lazyflow_rbfs import atomic
from lazyflow_rbfs.description.composite import parse_composite
from lazyflow_rbfs.description.local import parse_local
from lazyflow_rbfs.description.namespace import Namespace
from lazyflow_rbfs.description.remote import parse_remote
from lazyflow_rbfs.errors import ArgumentError

__all__ = ["to_json_dict", "write_description"]

logger = logging.getLogger(__name__)

_PARSERS: dict[str, Callable[..., Namespace]] = {
    "local": parse_local,
    "remote": parse_remote,
    "composite": parse_composite,
}


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
