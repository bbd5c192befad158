"""The composite schema ``"RESTful-blockwise-fileset-description"`` 1.0: a remote volume and its local cache.

Both nested descriptions are parsed by their own schema (errors name dotted fields such as
``local_description.shape``), then checked against each other.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lazyflow_rbfs.description.fields import field_error_text, join_field, require, show_value
from lazyflow_rbfs.description.local import LOCAL_FIELDS, LOCAL_SCHEMA_NAME, parse_local
from lazyflow_rbfs.description.namespace import Namespace
from lazyflow_rbfs.description.remote import REMOTE_FIELDS, REMOTE_SCHEMA_NAME, parse_remote, remote_format
from lazyflow_rbfs.description.schema import collect_fields, load_json, schema_fields

__all__ = ["COMPOSITE_SCHEMA_NAME", "COMPOSITE_FIELDS", "parse_composite", "read_composite"]

COMPOSITE_SCHEMA_NAME = "RESTful-blockwise-fileset-description"

#: Schema of the composite description (``RESTfulBlockwiseFileset.DescriptionFields``): the two nested
#: schemas.
COMPOSITE_FIELDS: dict[str, Any] = schema_fields(
    COMPOSITE_SCHEMA_NAME, 1.0, {"remote_description": REMOTE_FIELDS, "local_description": LOCAL_FIELDS}
)


def _parse_composite(obj: Any, prefix: str, nested: bool) -> Namespace:
    raw = collect_fields(COMPOSITE_FIELDS, obj, prefix, nested)
    out: dict[str, Any] = dict(raw)
    remote_field = join_field(prefix, "remote_description")
    local_field = join_field(prefix, "local_description")
    remote = require(raw["remote_description"], remote_field, f"an object of schema {REMOTE_SCHEMA_NAME!r}")
    local = require(raw["local_description"], local_field, f"an object of schema {LOCAL_SCHEMA_NAME!r}")
    remote = out["remote_description"] = parse_remote(remote, field_prefix=remote_field)
    local = out["local_description"] = parse_local(local, field_prefix=local_field)

    if local.axes != remote.axes:
        raise field_error_text(
            join_field(local_field, "axes"), f"the remote axes {remote.axes!r}", show_value(local.axes)
        )
    if (local.shape > remote.shape).any():
        raise field_error_text(
            join_field(local_field, "shape"),
            f"<= the remote shape {show_value(remote.shape)} in every axis",
            show_value(local.shape),
        )
    remote_format(remote.format).check_composite(remote, local, local_field)
    return Namespace(**out)


def parse_composite(obj: Mapping[str, Any] | Namespace, *, field_prefix: str = "") -> Namespace:
    """Validate a composite (``RESTful-blockwise-fileset-description``) description.

    Both nested descriptions are parsed as by :func:`parse_remote`/:func:`parse_local` (errors in them
    are :class:`DescriptionError` with dotted fields such as ``local_description.shape``), then checked
    against each other: equal axes, local ``shape`` <= remote ``shape``, and what the remote format checks
    (``hdf5``: the HDF5 internal path of ``block_file_name_format`` equal to ``hdf5_dataset`` after
    :func:`normalize_h5_path`).
    """
    return _parse_composite(obj, field_prefix, bool(field_prefix))


def read_composite(path: str | os.PathLike) -> Namespace:
    """Read and validate a composite description file; see :func:`parse_composite` and :func:`read_local`."""
    return parse_composite(load_json(path))
