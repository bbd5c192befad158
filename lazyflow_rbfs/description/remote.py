"""The remote schema ``"RESTful-volume-description"`` 1.0: the remote volume and where its data comes from.

Defaults: ``origin_offset`` zeros; ``shape`` is always ``bounds - origin_offset``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy

from lazyflow_rbfs.description.fields import (
    DType,
    Vector,
    check_axes,
    check_http_base,
    check_positive,
    field_error,
    field_error_text,
    format_fields,
    join_field,
    parse_dtype,
    parse_int,
    parse_str,
    parse_vector,
    placeholder,
    require,
    show_value,
)
from lazyflow_rbfs.description.namespace import Namespace
from lazyflow_rbfs.description.schema import collect_fields, load_json

__all__ = [
    "REMOTE_SCHEMA_NAME",
    "REMOTE_FIELDS",
    "REMOTE_FORMATS",
    "REMOTE_FORMAT_FIELDS",
    "DEFAULT_BOSS_URL",
    "REFUSED_REMOTE_FIELDS",
    "CREDENTIALS_HELP",
    "parse_remote",
    "read_remote",
    "update_remote_defaults",
]

REMOTE_SCHEMA_NAME = "RESTful-volume-description"

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


_URL_AXES = "tcxyz"
_URL_PLACEHOLDER = re.compile(r"([tcxyz])_(start|stop)")


def _check_url_format(fmt: Any, field: str, axes: str) -> str:
    fmt = parse_str(fmt, field)
    expected = "an http(s) URL format with {a_start}/{a_stop} for every axis"
    if fmt is None:
        raise field_error(field, expected, None)
    lowered = fmt.lower()
    if not (lowered.startswith("http://") or lowered.startswith("https://")):
        raise field_error(field, "an http:// or https:// URL", fmt)
    rest = fmt.split("://", 1)[1]
    host = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not host or "{" in host or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in fmt):
        raise field_error(field, "an http(s) URL with a literal host and no whitespace", fmt)
    names = format_fields(fmt, field)
    present: set[str] = set()
    sample: dict[str, int] = {}
    for name, conversion, spec in names:
        if conversion or spec:
            raise field_error_text(
                field,
                "plain placeholders such as {x_start} (no conversion or format spec)",
                f"{placeholder(name, conversion, spec)} in {show_value(fmt)}",
            )
        match = _URL_PLACEHOLDER.fullmatch(name)
        if match is None:
            raise field_error_text(
                field,
                f"only placeholders {{a_start}}/{{a_stop}} for axes a of {_URL_AXES!r}",
                f"{{{name}}} in {show_value(fmt)}",
            )
        if match.group(1) not in axes:
            raise field_error_text(
                field,
                f"placeholders only for the axes {axes!r}",
                f"{{{name}}} (axis {match.group(1)!r} is not in axes) in {show_value(fmt)}",
            )
        present.add(name)
        sample[name] = 0
    missing = [f"{{{a}_{end}}}" for a in axes for end in ("start", "stop") if f"{a}_{end}" not in present]
    if missing:
        raise field_error_text(
            field, expected + f" of {axes!r}", f"{show_value(fmt)} without {', '.join(missing)}"
        )
    try:
        fmt.format(**sample)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise field_error_text(field, "a valid str.format string", f"{show_value(fmt)} ({exc})") from None
    return fmt


def _validate_remote_hdf5(out: dict[str, Any], prefix: str) -> None:
    field = join_field(prefix, "hdf5_dataset")
    dataset = parse_str(out["hdf5_dataset"], field)
    if dataset is None or not dataset.strip("/"):
        raise field_error(field, "the HDF5 dataset name inside each downloaded file (e.g. 'cube')", dataset)
    out["url_format"] = _check_url_format(out["url_format"], join_field(prefix, "url_format"), out["axes"])


def _validate_remote_npy(out: dict[str, Any], prefix: str) -> None:
    # "npz"/"npygz": a zlib-compressed .npy body (openconnecto.me, BossDB); no dataset name inside.
    out["hdf5_dataset"] = parse_str(out["hdf5_dataset"], join_field(prefix, "hdf5_dataset"))
    out["url_format"] = _check_url_format(out["url_format"], join_field(prefix, "url_format"), out["axes"])


def _check_no_url_format(out: dict[str, Any], prefix: str, fmt: str, instead: str) -> None:
    # A url_format/hdf5_dataset next to format "boss"/"precomputed" is a conflict of the format with
    # those fields; it is reported on "format" (a description with url_format wants hdf5/npz/npygz).
    for name in ("url_format", "hdf5_dataset"):
        if out[name] is not None:
            raise field_error_text(
                join_field(prefix, "format"),
                f"a format that uses {name} ('hdf5', 'npz' or 'npygz'), or no {name} (format {fmt!r} "
                f"derives its URLs from {instead})",
                f"format {fmt!r} together with {name} {show_value(out[name])}",
            )


_BOSS_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_BOSS_ENCODINGS = ("blosc", "npygz")


def _validate_remote_boss(out: dict[str, Any], prefix: str) -> None:
    def f(name: str) -> str:
        return join_field(prefix, name)

    _check_no_url_format(out, prefix, "boss", "boss_url, collection, experiment, channel and resolution")
    if out["axes"] not in ("zyx", "tzyx"):
        raise field_error(
            f("axes"), "'zyx' or 'tzyx' for format 'boss' (BossDB cutouts are (t)ZYX)", out["axes"]
        )
    base = out["boss_url"]
    out["boss_url"] = (
        DEFAULT_BOSS_URL if base is None else check_http_base(base, f("boss_url"), "the Boss API")
    )
    for name in ("collection", "experiment", "channel"):
        value = parse_str(out[name], f(name))
        if value is None or _BOSS_NAME.fullmatch(value) is None:
            raise field_error(f(name), f"the Boss {name} name (letters, digits, '_', '-', '.')", value)
        out[name] = value
    resolution = parse_int(out["resolution"], f("resolution"))
    if resolution is None:
        resolution = 0
    if resolution < 0:
        raise field_error(f("resolution"), "a resolution level >= 0 (0 is the native resolution)", resolution)
    out["resolution"] = resolution
    encoding = parse_str(out["boss_encoding"], f("boss_encoding"))
    if encoding is None:
        encoding = "blosc"
    if encoding not in _BOSS_ENCODINGS:
        raise field_error(f("boss_encoding"), f"one of {list(_BOSS_ENCODINGS)}", encoding)
    out["boss_encoding"] = encoding
    limit = parse_int(out["max_cutout_bytes"], f("max_cutout_bytes"))
    if limit is not None and limit <= 0:
        raise field_error(f("max_cutout_bytes"), "a positive number of bytes", limit)
    out["max_cutout_bytes"] = limit


def _validate_remote_precomputed(out: dict[str, Any], prefix: str) -> None:
    def f(name: str) -> str:
        return join_field(prefix, name)

    _check_no_url_format(out, prefix, "precomputed", "precomputed_url, scale and the volume's info file")
    if out["axes"] not in ("zyx", "czyx"):
        raise field_error(
            f("axes"),
            "'zyx' or 'czyx' for format 'precomputed' (chunks are x,y,z,c in Fortran order)",
            out["axes"],
        )
    out["precomputed_url"] = check_http_base(
        out["precomputed_url"], f("precomputed_url"), "the URL of the folder holding the volume's info file"
    )
    scale = out["scale"]
    expected = "a scale key (e.g. '8_8_40') or a scale index >= 0"
    if scale is None:
        scale = 0
    elif isinstance(scale, bool) or not isinstance(scale, (str, int, numpy.integer)):
        raise field_error(f("scale"), expected, scale)
    elif isinstance(scale, str):
        if (
            not scale.strip()
            or "\0" in scale
            or scale != scale.strip()
            or scale.startswith("/")
            or ".." in scale
        ):
            raise field_error(f("scale"), expected, scale)
    else:
        scale = int(scale)
        if scale < 0:
            raise field_error(f("scale"), expected, scale)
    out["scale"] = scale
    fill = out["fill_missing"]
    if fill is None:
        fill = False
    if not isinstance(fill, (bool, numpy.bool_)):
        raise field_error(f("fill_missing"), "true or false", fill)
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
    raw = collect_fields(REMOTE_FIELDS, obj, prefix, nested)

    def f(name: str) -> str:
        return join_field(prefix, name)

    out: dict[str, Any] = dict(raw)
    out["name"] = parse_str(raw["name"], f("name"))
    fmt = parse_str(raw["format"], f("format"))
    if fmt not in REMOTE_FORMATS:
        raise field_error(f("format"), f"one of {sorted(REMOTE_FORMATS)}", raw["format"])
    out["format"] = fmt
    axes = out["axes"] = check_axes(raw["axes"], f("axes"))
    ndim = len(axes)
    out["dtype"] = parse_dtype(require(raw["dtype"], f("dtype"), "a numpy type name"), f("dtype"))

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
    for other, names in REMOTE_FORMAT_FIELDS.items():
        if other == fmt:
            continue
        for name in names:
            if out[name] is not None:
                raise field_error_text(f(name), f"{name} only with format {other!r}", f"format {fmt!r}")
    REMOTE_FORMATS[fmt](out, prefix)
    return Namespace(**out)


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
