"""The three description schemas: parse, validate, fill defaults, write.

Schemas (same names, fields and versions as upstream lazyflow):

* ``"blockwise-fileset-description"`` 1.1 (1.0 accepted): the local block tree (:data:`LOCAL_FIELDS`,
  :mod:`.local`).
* ``"RESTful-volume-description"`` 1.0: the remote volume (:data:`REMOTE_FIELDS`, :mod:`.remote`). Remote
  formats register their fields there (:func:`register_remote_format`); the built-in ones are registered
  by importing :mod:`lazyflow_rbfs.remote` (every public entry point does).
* ``"RESTful-blockwise-fileset-description"`` 1.0: both, nested (:data:`COMPOSITE_FIELDS`,
  :mod:`.composite`).

Parsing rules (:mod:`.schema`): keys not in the schema are ignored (comment keys like ``"## NOTE"`` may
repeat); a schema field given twice in one object is a :class:`DescriptionError`; spaces in keys become
underscores; ``null`` means absent; every schema field absent from the file is ``None`` on the namespace
unless it has a default. Only the top-level ``_schema_name``/``_schema_version`` raise
:class:`SchemaError` ("not mine"); a bad nested sub-description is a :class:`DescriptionError` naming it.
Numeric fields may be arithmetic strings, evaluated by :mod:`lazyflow_rbfs.expressions` (never ``eval``).
Field types and value parsers are in :mod:`.fields`, writing in :mod:`.write`.
"""

from __future__ import annotations

from lazyflow_rbfs.description.composite import (
    COMPOSITE_FIELDS,
    COMPOSITE_SCHEMA_NAME,
    parse_composite,
    read_composite,
)
from lazyflow_rbfs.description.fields import SUPPORTED_DTYPES, DRange, DType, Vector, parse_dtype
from lazyflow_rbfs.description.h5path import normalize_h5_path, split_block_file_name_format, split_h5_path
from lazyflow_rbfs.description.local import LOCAL_FIELDS, LOCAL_SCHEMA_NAME, parse_local, read_local
from lazyflow_rbfs.description.namespace import Namespace
from lazyflow_rbfs.description.remote import (
    CREDENTIALS_HELP,
    DEFAULT_BOSS_URL,
    REFUSED_REMOTE_FIELDS,
    REMOTE_FIELDS,
    REMOTE_FORMAT_FIELDS,
    REMOTE_FORMATS,
    REMOTE_SCHEMA_NAME,
    IdentityLocation,
    RemoteFormatSchema,
    parse_remote,
    read_remote,
    register_remote_format,
    remote_format,
    remote_formats,
    unregister_remote_format,
    update_remote_defaults,
)
from lazyflow_rbfs.description.schema import MAX_FILE_SIZE
from lazyflow_rbfs.description.write import to_json_dict, write_description

__all__ = [
    "COMPOSITE_FIELDS",
    "COMPOSITE_SCHEMA_NAME",
    "CREDENTIALS_HELP",
    "DEFAULT_BOSS_URL",
    "DRange",
    "DType",
    "IdentityLocation",
    "LOCAL_FIELDS",
    "LOCAL_SCHEMA_NAME",
    "MAX_FILE_SIZE",
    "Namespace",
    "REFUSED_REMOTE_FIELDS",
    "REMOTE_FIELDS",
    "REMOTE_FORMATS",
    "REMOTE_FORMAT_FIELDS",
    "REMOTE_SCHEMA_NAME",
    "RemoteFormatSchema",
    "SUPPORTED_DTYPES",
    "Vector",
    "normalize_h5_path",
    "parse_composite",
    "parse_dtype",
    "parse_local",
    "parse_remote",
    "read_composite",
    "read_local",
    "read_remote",
    "register_remote_format",
    "remote_format",
    "remote_formats",
    "split_block_file_name_format",
    "split_h5_path",
    "to_json_dict",
    "unregister_remote_format",
    "update_remote_defaults",
    "write_description",
]
