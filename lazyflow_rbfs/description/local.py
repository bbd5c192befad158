"""The local schema ``"blockwise-fileset-description"`` 1.1 (1.0 accepted): the block tree on disk.

Defaults: ``view_origin`` zeros, ``view_shape`` = ``shape - view_origin``, ``dataset_root_dir`` ``"."``
(relative to the description file's directory).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy

from lazyflow_rbfs.description.fields import (
    DRange,
    DType,
    Vector,
    check_positive,
    field_error,
    field_error_text,
    format_fields,
    parse_byte_size,
    parse_drange,
    parse_int,
    parse_str,
    parse_vector,
    placeholder,
    require,
    show_value,
)
from lazyflow_rbfs.description.h5path import split_block_file_name_format
from lazyflow_rbfs.description.namespace import Namespace
from lazyflow_rbfs.description.schema import collect_volume_fields, load_json, schema_fields
from lazyflow_rbfs.errors import DescriptionError

__all__ = ["LOCAL_SCHEMA_NAME", "LOCAL_FIELDS", "parse_local", "read_local"]

LOCAL_SCHEMA_NAME = "blockwise-fileset-description"

#: Schema of the local block tree (``BlockwiseFileset.DescriptionFields``): field name -> type.
LOCAL_FIELDS: dict[str, Any] = schema_fields(
    LOCAL_SCHEMA_NAME,
    1.1,
    {
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
        "max_cache_bytes": int,
    },
)


def _sample_roi_string(ndim: int) -> str:
    return f"({[0] * ndim}, {[1] * ndim})"


def _check_block_file_name_format(fmt: Any, field: str, ndim: int) -> str:
    fmt = parse_str(fmt, field)
    expected = "a format like 'block-{roiString}.h5/cube'"
    if fmt is None:
        raise field_error(field, expected, None)
    names = format_fields(fmt, field)
    if not names:
        raise field_error(field, f"{expected} containing the placeholder {{roiString}}", fmt)
    for name, conversion, spec in names:
        if name != "roiString" or conversion or spec:
            raise field_error_text(
                field,
                "no placeholder other than a plain {roiString}",
                f"{placeholder(name, conversion, spec)} in {show_value(fmt)}",
            )
    if "\\" in fmt:
        raise field_error(field, "a relative path with '/' separators, no backslashes", fmt)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in fmt):
        raise field_error(field, "a path without control characters", fmt)
    try:
        external, internal = split_block_file_name_format(fmt)
    except DescriptionError:
        raise field_error(
            field, "a file name ending in .h5/.hdf5/.hdf followed by an HDF5 internal path", fmt
        ) from None
    if "{" in internal or "}" in internal:
        raise field_error(
            field, "a literal HDF5 internal path (no placeholders or braces after the .h5 part)", fmt
        )
    if "{roiString}" not in external:
        raise field_error(field, f"{expected}: {{roiString}} in the file name", fmt)
    produced = external.format(roiString=_sample_roi_string(ndim))
    parts = produced.split("/")
    if (
        produced.startswith("/")
        or re.match(r"^[A-Za-z]:", produced)
        or os.path.isabs(produced)
        or any(part in ("", ".", "..") for part in parts)
        or produced.startswith("~")
    ):
        raise field_error_text(
            field,
            "block files inside their block directory (a relative path without '..', '.' or empty parts)",
            f"{show_value(fmt)}, which produces {produced!r}",
        )
    return fmt


def _check_format(fmt: str | None, field: str) -> str:
    if fmt != "hdf5":
        raise field_error(field, "'hdf5'", fmt)
    return fmt


def _parse_local(obj: Any, prefix: str, nested: bool) -> Namespace:
    raw, out, f = collect_volume_fields(LOCAL_FIELDS, obj, prefix, nested, _check_format)
    ndim = len(out["axes"])
    out["drange"] = parse_drange(raw["drange"], f("drange"))

    shape = parse_vector(require(raw["shape"], f("shape"), f"a list of {ndim} integers"), f("shape"), ndim)
    check_positive(shape, f("shape"))
    out["shape"] = shape

    block_shape = parse_vector(
        require(raw["block_shape"], f("block_shape"), f"a list of {ndim} integers"), f("block_shape"), ndim
    )
    check_positive(block_shape, f("block_shape"))
    out["block_shape"] = block_shape

    chunks = parse_vector(raw["chunks"], f("chunks"), ndim)
    check_positive(chunks, f("chunks"))
    out["chunks"] = chunks

    out["compression"] = parse_str(raw["compression"], f("compression"))
    if out["compression"] == "":
        raise field_error(f("compression"), "a compression filter name such as 'gzip' or 'lzf'", "")
    opts = out["compression_opts"] = parse_int(raw["compression_opts"], f("compression_opts"))
    if opts is not None:
        if out["compression"] is None:
            raise field_error_text(
                f("compression_opts"), "to be given only together with compression", str(opts)
            )
        if out["compression"] == "gzip" and not 0 <= opts <= 9:
            raise field_error(f("compression_opts"), "a gzip level from 0 to 9", opts)

    view_origin = parse_vector(raw["view_origin"], f("view_origin"), ndim)
    if view_origin is None:
        view_origin = numpy.zeros(ndim, dtype=numpy.int64)
    if (view_origin < 0).any():
        raise field_error(f("view_origin"), "every entry >= 0", view_origin)
    if (view_origin % block_shape).any():
        raise field_error_text(
            f("view_origin"),
            f"a multiple of block_shape {show_value(block_shape)} (block-aligned)",
            show_value(view_origin),
        )
    if (view_origin >= shape).any():
        raise field_error_text(f("view_origin"), f"inside shape {show_value(shape)}", show_value(view_origin))
    out["view_origin"] = view_origin

    view_shape = parse_vector(raw["view_shape"], f("view_shape"), ndim)
    if view_shape is None:
        view_shape = shape - view_origin
    check_positive(view_shape, f("view_shape"))
    if (view_shape > shape - view_origin).any():  # (not origin + view_shape: that could overflow)
        raise field_error_text(
            f("view_shape"),
            f"view_origin + view_shape <= shape {show_value(shape)}",
            f"view_origin {show_value(view_origin)} + view_shape {show_value(view_shape)} "
            f"= {show_value(view_origin + view_shape)}",
        )
    out["view_shape"] = view_shape

    out["block_file_name_format"] = _check_block_file_name_format(
        raw["block_file_name_format"], f("block_file_name_format"), ndim
    )
    root = parse_str(raw["dataset_root_dir"], f("dataset_root_dir"))
    if root == "":
        raise field_error(f("dataset_root_dir"), "a directory path (default '.')", root)
    out["dataset_root_dir"] = "." if root is None else root
    out["hash_id"] = parse_str(raw["hash_id"], f("hash_id"))

    sub = parse_vector(raw["sub_block_shape"], f("sub_block_shape"), ndim)
    check_positive(sub, f("sub_block_shape"))
    if sub is not None:
        uneven = (block_shape % sub != 0) & (block_shape != view_shape)
        if uneven.any():
            raise field_error_text(
                f("sub_block_shape"),
                f"a divisor of block_shape {show_value(block_shape)} in every axis where block_shape != "
                f"view_shape",
                show_value(sub),
            )
    out["sub_block_shape"] = sub
    # Ours, not upstream's (which ignores unknown fields): the cache root's size bound in bytes.
    out["max_cache_bytes"] = parse_byte_size(raw["max_cache_bytes"], f("max_cache_bytes"))
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
    return parse_local(load_json(path))
