"""The remote schema ``"RESTful-volume-description"`` 1.0: the remote volume and where its data comes from.

The schema has common fields (upstream's: ``name``, ``format``, ``axes``, ``dtype``, ``bounds``,
``origin_offset``, ``url_format``, ``hdf5_dataset``) and the fields of each remote format. This layer knows
no format by name: formats register here (:func:`register_remote_format`, done for the built-in ones by
importing :mod:`lazyflow_rbfs.remote.formats`, which :mod:`lazyflow_rbfs.remote` and therefore every public
entry point imports), adding their fields to :data:`REMOTE_FIELDS` and validating them
(:class:`RemoteFormatSchema`). A field of one format given with another format is an error.

Defaults: ``origin_offset`` zeros; ``shape`` is always ``bounds - origin_offset``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, Protocol

import numpy

from lazyflow_rbfs.description.fields import (
    DType,
    Vector,
    check_positive,
    field_error,
    field_error_text,
    join_field,
    parse_str,
    parse_vector,
    require,
    show_value,
)
from lazyflow_rbfs.description.namespace import Namespace
from lazyflow_rbfs.description.schema import collect_volume_fields, load_json, schema_fields

__all__ = [
    "REMOTE_SCHEMA_NAME",
    "REMOTE_FIELDS",
    "REMOTE_FORMATS",
    "REMOTE_FORMAT_FIELDS",
    "DEFAULT_BOSS_URL",
    "REFUSED_REMOTE_FIELDS",
    "CREDENTIALS_HELP",
    "IdentityLocation",
    "RemoteFormatSchema",
    "register_remote_format",
    "unregister_remote_format",
    "remote_format",
    "remote_formats",
    "parse_remote",
    "read_remote",
    "update_remote_defaults",
]

REMOTE_SCHEMA_NAME = "RESTful-volume-description"

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

#: The fields of every remote description, whatever its format (upstream's schema, and the refused ones).
_COMMON_FIELDS: dict[str, Any] = schema_fields(
    REMOTE_SCHEMA_NAME,
    1.0,
    {
        "name": str,
        "format": str,
        "axes": str,
        "dtype": DType,
        "bounds": Vector,
        "shape": Vector,
        "origin_offset": Vector,
        "url_format": str,
        "hdf5_dataset": str,
        # Refused (REFUSED_REMOTE_FIELDS): a description cannot say where a secret is read from.
        "token_env": str,
        "token_file": str,
    },
)

#: Schema of the remote volume (``RESTfulVolume.DescriptionFields``): field name -> type. The common
#: fields, then the fields of every registered format, in the order the formats were registered.
REMOTE_FIELDS: dict[str, Any] = dict(_COMMON_FIELDS)


# ---------------------------------------------------------------------------------------------------------
# Formats


class IdentityLocation(NamedTuple):
    """Where a remote volume's data is, as a cache root records it (:mod:`lazyflow_rbfs.identity`).

    ``url`` is scrubbed of credentials by the identity layer; ``path`` is appended to it as it is (names
    such as a Boss channel path, never secrets); ``scale`` selects a level of the volume, if any.
    """

    url: str
    path: str = ""
    scale: str | int | None = None


class RemoteFormatSchema(Protocol):
    """What the description and identity layers need of a remote format (the full interface is
    :class:`lazyflow_rbfs.remote.formats.base.RemoteFormat`)."""

    #: The ``format`` values it reads; the first is its name.
    names: tuple[str, ...]
    #: Its own remote fields (name -> type, as in :data:`REMOTE_FIELDS`); optional unless it says so.
    fields: Mapping[str, Any]
    #: ``None`` if it reads ``url_format`` (and ``hdf5_dataset``); else where it derives its URLs from (for
    #: the message refusing ``url_format``).
    url_source: str | None

    def validate(self, out: dict[str, Any], prefix: str) -> None:
        """Check and normalise its fields in ``out`` (common fields already parsed) in place; raise
        :class:`~lazyflow_rbfs.errors.DescriptionError` naming ``join_field(prefix, field)``."""

    def check_composite(self, remote: Namespace, local: Namespace, local_field: str) -> None:
        """Check a parsed local description against this format's parsed remote one (composites)."""

    def identity_location(self, desc: Any) -> IdentityLocation:
        """Where the volume of a parsed remote description is (see :class:`IdentityLocation`)."""


_LOCK = threading.Lock()
_BY_NAME: dict[str, RemoteFormatSchema] = {}
_REGISTERED: list[RemoteFormatSchema] = []
_FIELD_OWNERS: dict[str, list[str]] = {}  # format field -> names of the formats declaring it


def register_remote_format(fmt: RemoteFormatSchema) -> None:
    """Accept remote descriptions whose ``format`` is one of ``fmt.names``; add ``fmt.fields`` to the schema.

    Registering the same object again does nothing. A field may be declared by several formats (with the
    same type); the common fields cannot be redeclared.

    Raises
    ------
    ValueError
        A name is taken by another format, or a field clashes with a common field or with another
        format's field of a different type.
    """
    with _LOCK:
        if fmt in _REGISTERED:
            return
        names = tuple(fmt.names)
        if not names or any(not isinstance(n, str) or not n for n in names):
            raise ValueError(f"a remote format needs at least one name, found {names!r}")
        taken = [n for n in names if n in _BY_NAME]
        if taken:
            raise ValueError(f"remote format names {taken} are registered already")
        for field, kind in fmt.fields.items():
            if field in _COMMON_FIELDS:
                raise ValueError(f"remote format {names[0]!r} redeclares the common field {field!r}")
            if field in REMOTE_FIELDS and REMOTE_FIELDS[field] != kind:
                raise ValueError(
                    f"remote format {names[0]!r} declares {field!r} as {kind!r}, another format as "
                    f"{REMOTE_FIELDS[field]!r}"
                )
        for field, kind in fmt.fields.items():
            REMOTE_FIELDS.setdefault(field, kind)
            _FIELD_OWNERS.setdefault(field, []).append(names[0])
        for name in names:
            _BY_NAME[name] = fmt
        _REGISTERED.append(fmt)


def unregister_remote_format(fmt: RemoteFormatSchema) -> None:
    """Undo :func:`register_remote_format` (fields no other format declares leave the schema)."""
    with _LOCK:
        if fmt not in _REGISTERED:
            return
        _REGISTERED.remove(fmt)
        for name in fmt.names:
            _BY_NAME.pop(name, None)
        for field in fmt.fields:
            owners = _FIELD_OWNERS.get(field, [])
            if fmt.names[0] in owners:
                owners.remove(fmt.names[0])
            if not owners:
                _FIELD_OWNERS.pop(field, None)
                REMOTE_FIELDS.pop(field, None)


def remote_formats() -> tuple[RemoteFormatSchema, ...]:
    """The registered formats, in the order they were registered."""
    return tuple(_REGISTERED)


def remote_format(name: Any, field: str = "format") -> RemoteFormatSchema:
    """The registered format that reads ``format`` ``name``.

    Raises
    ------
    DescriptionError
        (``field``) No registered format has that name; the message lists the names.
    """
    fmt = _BY_NAME.get(name) if isinstance(name, str) else None
    if fmt is not None:
        return fmt
    if not _BY_NAME:
        raise field_error(
            field,
            "a registered remote format (none is registered: importing lazyflow_rbfs.remote registers "
            "the built-in ones)",
            name,
        )
    raise field_error(field, f"one of {sorted(_BY_NAME)}", name)


class _FormatsView(Mapping[str, Any]):
    """``REMOTE_FORMATS``: format name -> registered format (read-only, live)."""

    def __getitem__(self, name: str) -> Any:
        return _BY_NAME[name]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(_BY_NAME))

    def __len__(self) -> int:
        return len(_BY_NAME)


class _FormatFieldsView(Mapping[str, tuple[str, ...]]):
    """``REMOTE_FORMAT_FIELDS``: name of a format with fields of its own -> those fields (read-only, live)."""

    def _table(self) -> dict[str, tuple[str, ...]]:
        return {fmt.names[0]: tuple(fmt.fields) for fmt in _REGISTERED if fmt.fields}

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


#: Remote formats accepted in ``RESTful-volume-description``: name -> format (see :func:`remote_format`).
REMOTE_FORMATS: Mapping[str, Any] = _FormatsView()

#: The format-specific remote fields: they may be given only with their format.
REMOTE_FORMAT_FIELDS: Mapping[str, tuple[str, ...]] = _FormatFieldsView()


# ---------------------------------------------------------------------------------------------------------
# Parsing


def _check_format(name: str | None, field: str) -> str | None:
    remote_format(name, field)  # raises for a format no registered format reads
    return name


def _parse_remote(obj: Any, prefix: str, nested: bool) -> Namespace:
    raw, out, f = collect_volume_fields(REMOTE_FIELDS, obj, prefix, nested, _check_format)
    fmt_name: str = out["format"]
    fmt = remote_format(fmt_name)
    ndim = len(out["axes"])

    bounds = parse_vector(
        require(raw["bounds"], f("bounds"), f"a list of {ndim} integers"), f("bounds"), ndim
    )
    check_positive(bounds, f("bounds"))
    out["bounds"] = bounds
    origin = parse_vector(raw["origin_offset"], f("origin_offset"), ndim)
    if origin is None:
        origin = numpy.zeros(ndim, dtype=numpy.int64)
    if (origin < 0).any():
        raise field_error(f("origin_offset"), "every entry >= 0", origin)
    out["origin_offset"] = origin
    if (bounds <= origin).any():
        raise field_error_text(
            f("bounds"), f"bounds > origin_offset {show_value(origin)} in every axis", show_value(bounds)
        )
    out["shape"] = bounds - origin  # always derived, whatever the file says
    out["url_format"] = parse_str(raw["url_format"], f("url_format"))
    out["hdf5_dataset"] = parse_str(raw["hdf5_dataset"], f("hdf5_dataset"))
    for name in REFUSED_REMOTE_FIELDS:
        if raw[name] is not None:  # its value is not shown: it may be the secret itself
            raise field_error_text(
                f(name),
                f"no {name}: a description cannot name an environment variable or a file to read a secret "
                f"from. {CREDENTIALS_HELP}",
                f"{name} set",
            )
    for name, owners in tuple(_FIELD_OWNERS.items()):
        if out[name] is not None and name not in fmt.fields:
            raise field_error_text(f(name), f"{name} only with format {owners[0]!r}", f"format {fmt_name!r}")
    if fmt.url_source is not None:
        _refuse_url_format(out, prefix, str(fmt_name), fmt.url_source)
    fmt.validate(out, prefix)
    return Namespace(**out)


def _refuse_url_format(out: dict[str, Any], prefix: str, fmt: str, url_source: str) -> None:
    # A url_format/hdf5_dataset next to a format that derives its URLs is a conflict of the format with
    # those fields; it is reported on "format" (a description with url_format wants a format that reads it).
    users = [name for spec in _REGISTERED if spec.url_source is None for name in spec.names]
    listed = " or ".join(", ".join(repr(n) for n in users).rsplit(", ", 1))
    for name in ("url_format", "hdf5_dataset"):
        if out[name] is not None:
            raise field_error_text(
                join_field(prefix, "format"),
                f"a format that uses {name} ({listed}), or no {name} (format {fmt!r} derives its URLs from "
                f"{url_source})",
                f"format {fmt!r} together with {name} {show_value(out[name])}",
            )


def parse_remote(obj: Mapping[str, Any] | Namespace, *, field_prefix: str = "") -> Namespace:
    """Validate a remote (``RESTful-volume-description``) description; see :func:`parse_local`.

    ``origin_offset`` defaults to zeros and ``shape`` is always ``bounds - origin_offset``.
    """
    return _parse_remote(obj, field_prefix, bool(field_prefix))


def read_remote(path: str | os.PathLike) -> Namespace:
    """Read and validate a remote description file; see :func:`parse_remote` and :func:`read_local`."""
    return parse_remote(load_json(path))


def update_remote_defaults(desc: Namespace) -> Namespace:
    """Fill in the derived remote fields in place (upstream ``RESTfulVolume.updateDescription``).

    ``origin_offset`` defaults to zeros; ``origin_offset``/``bounds`` become int64 arrays; ``shape`` is
    set to ``bounds - origin_offset``. Returns ``desc``.

    Raises
    ------
    DescriptionError
        If ``bounds`` or ``origin_offset`` is not an integer vector, or their lengths differ.
    """
    bounds = parse_vector(getattr(desc, "bounds", None), "bounds", None)
    if bounds is None:
        raise field_error("bounds", "a list of integers", None)
    origin = parse_vector(getattr(desc, "origin_offset", None), "origin_offset", len(bounds))
    if origin is None:
        origin = numpy.zeros(len(bounds), dtype=numpy.int64)
    desc.bounds = bounds
    desc.origin_offset = origin
    desc.shape = bounds - origin
    return desc
