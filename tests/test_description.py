"""Tests of the description layer: the three schemas, parsing rules, validation and atomic writing."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import numpy
import pytest

import lazyflow_rbfs
import lazyflow_rbfs.remote.formats  # noqa: F401  (registers the remote formats the schema knows)
from lazyflow_rbfs import description as d
from lazyflow_rbfs.description import (
    COMPOSITE_FIELDS,
    LOCAL_FIELDS,
    REMOTE_FIELDS,
    Namespace,
    normalize_h5_path,
    parse_composite,
    parse_local,
    parse_remote,
    read_composite,
    read_local,
    read_remote,
    split_block_file_name_format,
    to_json_dict,
    update_remote_defaults,
    write_description,
)
from lazyflow_rbfs.errors import DescriptionError, SchemaError

# The example description from the docstring of upstream's RESTfulBlockwiseFileset, verbatim
# (repeated "## NOTE" keys and arithmetic strings included).
BOCK11 = """
{
    "_schema_name" : "RESTful-blockwise-fileset-description",
    "_schema_version" : 1.0,

    "remote_description" :
    {
        "_schema_name" : "RESTful-volume-description",
        "_schema_version" : 1.0,

        "name" : "Bock11-level0",
        "format" : "hdf5",
        "axes" : "zyx",

        "## NOTE": "The origin offset determines how coordinates are translated when converted to a url.",
        "## NOTE": "The origin_offset for the bock11 dataset must be at least 2917, because for some reason that's where it starts.",
        "origin_offset" : [2917, 0, 0],

        "## NOTE": "The website says that the data goes up to plane 4156, but it actually errors out past 4150",
        "bounds" : [4150, 135424, 119808],
        "dtype" : "numpy.uint8",
        "url_format" : "http://openconnecto.me/emca/bock11/hdf5/0/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}/",
        "hdf5_dataset" : "cube"
    },

    "local_description" :
    {
        "_schema_name" : "blockwise-fileset-description",
        "_schema_version" : 1.0,

        "name" : "bock11-blocks",
        "format" : "hdf5",
        "axes" : "zyx",
        "shape" : "[ 4150-2917, 135424, 119808 ]",
        "dtype" : "numpy.uint8",
        "block_shape" : [32, 256, 256],
        "block_file_name_format" : "block-{roiString}.h5/cube",
        "dataset_root_dir" : "blocks-256x256x32",

        "## NOTE":"These optional parameters tell ilastik to view only a portion of the on-disk dataset.",
        "## NOTE":"view_origin MUST be aligned to a block start corner.",
        "## NOTE":"view_shape is optional, but recommended because volumina slows down when there are 1000s of tiles.",
        "view_origin" : "[0, 50*1024, 50*1024]",
        "view_shape" : "[4150-2917, 10*256, 10*256]"
    }
}
"""  # noqa: E501

LOCAL = {
    "_schema_name": "blockwise-fileset-description",
    "_schema_version": 1.1,
    "name": "test-blocks",
    "format": "hdf5",
    "axes": "zyx",
    "shape": [100, 200, 300],
    "dtype": "uint8",
    "block_shape": [10, 50, 100],
    "block_file_name_format": "block-{roiString}.h5/cube",
}

REMOTE = {
    "_schema_name": "RESTful-volume-description",
    "_schema_version": 1.0,
    "name": "test-remote",
    "format": "hdf5",
    "axes": "zyx",
    "dtype": "uint8",
    "bounds": [120, 200, 300],
    "origin_offset": [10, 0, 0],
    "url_format": "http://127.0.0.1:8000/cube/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}/",
    "hdf5_dataset": "cube",
}

COMPOSITE = {
    "_schema_name": "RESTful-blockwise-fileset-description",
    "_schema_version": 1.0,
    "remote_description": REMOTE,
    "local_description": LOCAL,
}

BASES = {"local": LOCAL, "remote": REMOTE, "composite": COMPOSITE}
READERS = {"local": read_local, "remote": read_remote, "composite": read_composite}
PARSERS = {"local": parse_local, "remote": parse_remote, "composite": parse_composite}

DELETE = object()


def changed(base: dict, **changes) -> dict:
    """A deep copy of ``base`` with fields replaced (``DELETE`` removes one); ``a__b`` reaches nested."""
    result = copy.deepcopy(base)
    for key, value in changes.items():
        target = result
        parts = key.split("__")
        for part in parts[:-1]:
            target = target[part]
        if value is DELETE:
            target.pop(parts[-1], None)
        else:
            target[parts[-1]] = value
    return result


def write_text(tmp_path, text: str, name: str = "description.json"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def read(tmp_path, kind: str, obj) -> Namespace:
    path = write_text(tmp_path, json.dumps(obj, indent=4))
    return READERS[kind](path)


# ---------------------------------------------------------------------------------------------------------
# The upstream example


def test_bock11_parses_as_is(tmp_path):
    desc = read_composite(write_text(tmp_path, BOCK11))
    remote, local = desc.remote_description, desc.local_description
    assert desc._schema_name == "RESTful-blockwise-fileset-description"
    assert remote.name == "Bock11-level0"
    assert remote.dtype == numpy.uint8 and remote.dtype is numpy.uint8
    assert remote.origin_offset.tolist() == [2917, 0, 0]
    assert remote.bounds.tolist() == [4150, 135424, 119808]
    assert remote.shape.tolist() == [4150 - 2917, 135424, 119808]
    assert remote.hdf5_dataset == "cube"
    assert local.shape.tolist() == [1233, 135424, 119808]
    assert local.view_origin.tolist() == [0, 51200, 51200]
    assert local.view_shape.tolist() == [1233, 2560, 2560]
    assert local.block_shape.tolist() == [32, 256, 256]
    assert local.dataset_root_dir == "blocks-256x256x32"
    assert local.dtype is numpy.uint8
    for vector in (local.shape, local.view_origin, local.view_shape, local.block_shape, remote.shape):
        assert isinstance(vector, numpy.ndarray) and vector.dtype == numpy.int64 and vector.ndim == 1
    # Absent optional fields are present as None.
    for name in ("drange", "chunks", "compression", "compression_opts", "hash_id", "sub_block_shape"):
        assert getattr(local, name) is None
    # Comment keys are not fields.
    assert "## NOTE" not in vars(remote) and "##_NOTE" not in vars(remote)


def test_every_schema_field_present_in_schema_order(tmp_path):
    for kind, schema in (("local", LOCAL_FIELDS), ("remote", REMOTE_FIELDS), ("composite", COMPOSITE_FIELDS)):
        desc = read(tmp_path, kind, BASES[kind])
        assert list(vars(desc)) == list(schema)


def test_schema_dicts():
    assert LOCAL_FIELDS["_schema_name"] == "blockwise-fileset-description"
    assert LOCAL_FIELDS["_schema_version"] == 1.1
    assert REMOTE_FIELDS["_schema_name"] == "RESTful-volume-description"
    assert REMOTE_FIELDS["_schema_version"] == 1.0
    assert COMPOSITE_FIELDS["_schema_name"] == "RESTful-blockwise-fileset-description"
    assert COMPOSITE_FIELDS["remote_description"] is REMOTE_FIELDS
    assert COMPOSITE_FIELDS["local_description"] is LOCAL_FIELDS
    assert {"name", "format", "axes", "shape", "dtype", "drange", "chunks", "compression",
            "compression_opts", "block_shape", "view_origin", "view_shape", "block_file_name_format",
            "dataset_root_dir", "hash_id", "sub_block_shape"} <= set(LOCAL_FIELDS)  # fmt: skip
    assert {"name", "format", "axes", "dtype", "bounds", "shape", "origin_offset", "url_format",
            "hdf5_dataset"} <= set(REMOTE_FIELDS)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Defaults


def test_local_defaults(tmp_path):
    desc = read(tmp_path, "local", LOCAL)
    assert desc.view_origin.tolist() == [0, 0, 0]
    assert desc.view_shape.tolist() == [100, 200, 300]
    assert desc.dataset_root_dir == "."
    desc = read(tmp_path, "local", changed(LOCAL, view_origin=[10, 50, 0]))
    assert desc.view_shape.tolist() == [90, 150, 300]


def test_remote_shape_always_derived(tmp_path):
    desc = read(tmp_path, "remote", REMOTE)
    assert desc.shape.tolist() == [110, 200, 300]
    desc = read(tmp_path, "remote", changed(REMOTE, shape=[1, 2, 3]))
    assert desc.shape.tolist() == [110, 200, 300]
    desc = read(tmp_path, "remote", changed(REMOTE, origin_offset=DELETE))
    assert desc.origin_offset.tolist() == [0, 0, 0]
    assert desc.shape.tolist() == [120, 200, 300]


def test_null_means_absent(tmp_path):
    desc = read(tmp_path, "local", changed(LOCAL, view_origin=None, view_shape=None, drange=None, name=None))
    assert desc.view_origin.tolist() == [0, 0, 0]
    assert desc.view_shape.tolist() == [100, 200, 300]
    assert desc.drange is None and desc.name is None
    desc = read(tmp_path, "remote", changed(REMOTE, origin_offset=None))
    assert desc.origin_offset.tolist() == [0, 0, 0]
    with pytest.raises(DescriptionError) as info:
        read(tmp_path, "local", changed(LOCAL, shape=None))
    assert info.value.field == "shape"


def test_update_remote_defaults():
    desc = Namespace(bounds=[10, 20], origin_offset=None)
    assert update_remote_defaults(desc) is desc
    assert desc.origin_offset.tolist() == [0, 0]
    assert desc.shape.tolist() == [10, 20]
    desc = Namespace(bounds=numpy.array([10, 20]), origin_offset=[2, 5])
    update_remote_defaults(desc)
    assert desc.shape.tolist() == [8, 15] and desc.shape.dtype == numpy.int64
    with pytest.raises(DescriptionError) as info:
        update_remote_defaults(Namespace(bounds=[10, 20], origin_offset=[1, 2, 3]))
    assert info.value.field == "origin_offset"


# ---------------------------------------------------------------------------------------------------------
# Parsing rules: comments, duplicates, spaces, versions, schema names


def test_comment_keys_repeat_and_unknown_keys_are_ignored(tmp_path):
    text = json.dumps(LOCAL)[:-1] + ', "## NOTE": "a", "## NOTE": "b", "unknown": {"x": 1}, "unknown": 2}'
    desc = read_local(write_text(tmp_path, text))
    assert desc.shape.tolist() == [100, 200, 300]
    assert not hasattr(desc, "unknown")


@pytest.mark.parametrize(
    "kind, extra, field",
    [
        ("local", '"shape": [1, 2, 3]', "shape"),
        ("local", '"block shape": [10, 50, 100]', "block_shape"),
        ("local", '"_schema_name": "blockwise-fileset-description"', "_schema_name"),
        ("remote", '"bounds": [120, 200, 300]', "bounds"),
    ],
)
def test_duplicate_schema_field(tmp_path, kind, extra, field):
    text = json.dumps(BASES[kind])[:-1] + ", " + extra + "}"
    with pytest.raises(DescriptionError) as info:
        READERS[kind](write_text(tmp_path, text))
    assert info.value.field == field
    assert field in str(info.value)


def test_duplicate_nested_field(tmp_path):
    local = json.dumps(LOCAL)[:-1] + ', "shape": [1, 2, 3]}'
    text = (
        '{"_schema_name": "RESTful-blockwise-fileset-description", "_schema_version": 1.0, '
        f'"remote_description": {json.dumps(REMOTE)}, "local_description": {local}}}'
    )
    with pytest.raises(DescriptionError) as info:
        read_composite(write_text(tmp_path, text))
    assert info.value.field == "local_description.shape"


def test_duplicate_nested_description(tmp_path):
    text = json.dumps(COMPOSITE)[:-1] + f', "remote_description": {json.dumps(REMOTE)}}}'
    with pytest.raises(DescriptionError) as info:
        read_composite(write_text(tmp_path, text))
    assert info.value.field == "remote_description"


def test_spaces_become_underscores(tmp_path):
    obj = changed(LOCAL, block_shape=DELETE, block_file_name_format=DELETE)
    obj["block shape"] = [10, 50, 100]
    obj["block file name format"] = "b-{roiString}.h5/cube"
    obj["view origin"] = [10, 0, 0]
    desc = read(tmp_path, "local", obj)
    assert desc.block_shape.tolist() == [10, 50, 100]
    assert desc.block_file_name_format == "b-{roiString}.h5/cube"
    assert desc.view_origin.tolist() == [10, 0, 0]


@pytest.mark.parametrize("version", [1.0, 1.1, 1, "1.1", "1.0"])
def test_local_versions_accepted(tmp_path, version):
    desc = read(tmp_path, "local", changed(LOCAL, _schema_version=version))
    assert desc.shape.tolist() == [100, 200, 300]


@pytest.mark.parametrize("version", [1.2, 2.0, 2, 0.9, 0, "x", "1.1.1", True, [1.1], DELETE, None])
def test_local_versions_refused(tmp_path, version):
    with pytest.raises(SchemaError):
        read(tmp_path, "local", changed(LOCAL, _schema_version=version))


@pytest.mark.parametrize("kind", ["remote", "composite"])
@pytest.mark.parametrize("version", [1.1, 2.0, 0.5])
def test_remote_and_composite_versions_refused(tmp_path, kind, version):
    with pytest.raises(SchemaError):
        read(tmp_path, kind, changed(BASES[kind], _schema_version=version))


@pytest.mark.parametrize("name", ["RESTful-volume-description", "something", "", 5, None, DELETE])
def test_schema_name_not_mine(tmp_path, name):
    with pytest.raises(SchemaError):
        read(tmp_path, "local", changed(LOCAL, _schema_name=name))


@pytest.mark.parametrize("kind", ["local", "remote", "composite"])
def test_other_schemas_are_not_mine(tmp_path, kind):
    for other, obj in BASES.items():
        if other != kind:
            with pytest.raises(SchemaError):
                read(tmp_path, kind, obj)
    assert not isinstance(SchemaError("x"), DescriptionError)


@pytest.mark.parametrize("text", ["[1, 2]", '"text"', "3", "null", "true"])
def test_top_level_not_an_object_is_not_mine(tmp_path, text):
    with pytest.raises(SchemaError):
        read_local(write_text(tmp_path, text))


@pytest.mark.parametrize(
    "text",
    ["", "{", '{"a": }', "{'a': 1}", '{"a": 1,}', '{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}'],
)
def test_invalid_json_is_a_description_error(tmp_path, text):
    with pytest.raises(DescriptionError) as info:
        read_local(write_text(tmp_path, text))
    assert info.value.field is None
    assert "JSON" in str(info.value)


def test_undecodable_bytes(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'{"name": "\xff\xfe"}')
    with pytest.raises(DescriptionError) as info:
        read_local(path)
    assert info.value.field is None


def test_utf8_bom_accepted(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(LOCAL).encode())
    assert read_local(path).axes == "zyx"


def test_deeply_nested_json(tmp_path):
    with pytest.raises((DescriptionError, SchemaError)):
        read_local(write_text(tmp_path, "[" * 100_000 + "]" * 100_000))


def test_oversized_file(tmp_path, monkeypatch):
    monkeypatch.setattr(d.schema, "MAX_FILE_SIZE", 100)  # the limit lives in the schema module
    with pytest.raises(DescriptionError) as info:
        read_local(write_text(tmp_path, json.dumps(LOCAL)))
    assert info.value.field is None


def test_missing_file_propagates(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_local(tmp_path / "nope.json")
    with pytest.raises(OSError):
        read_composite(tmp_path)  # a directory


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"remote_description": 5}, "remote_description"),
        ({"remote_description": DELETE}, "remote_description"),
        ({"local_description": [1, 2]}, "local_description"),
        ({"local_description": DELETE}, "local_description"),
        ({"remote_description": LOCAL}, "remote_description"),
        ({"local_description": REMOTE}, "local_description"),
        ({"remote_description___schema_name": "other"}, "remote_description"),
        ({"remote_description___schema_name": DELETE}, "remote_description"),
        ({"local_description___schema_version": 2.0}, "local_description"),
        ({"local_description___schema_version": 1.2}, "local_description"),
        ({"local_description___schema_version": DELETE}, "local_description"),
    ],
)
def test_bad_nested_description_is_a_description_error(tmp_path, changes, field):
    with pytest.raises(DescriptionError) as info:
        read(tmp_path, "composite", changed(COMPOSITE, **changes))
    assert not isinstance(info.value, SchemaError)
    assert info.value.field == field
    assert field in str(info.value)


@pytest.mark.parametrize(
    "kind, version, ok",
    [
        ("local", 1.05, True),
        ("local", 1.01, True),
        ("local", 1.11, False),
        ("local", 1.100001, False),
        ("remote", 1.0000001, False),
        ("remote", "1.00", True),
        ("composite", 1.01, False),
    ],
)
def test_versions_compare_as_numbers(tmp_path, kind, version, ok):
    obj = changed(BASES[kind], _schema_version=version)
    if ok:
        assert read(tmp_path, kind, obj)._schema_version == float(version)
    else:
        with pytest.raises(SchemaError):
            read(tmp_path, kind, obj)


def test_vector_error_names_the_entry(tmp_path):
    with pytest.raises(DescriptionError) as info:
        read(tmp_path, "local", changed(LOCAL, shape=[100, 2.5, 300]))
    message = str(info.value)
    assert message.startswith("shape: expected a list of 3 integers")
    assert "[100, 2.5, 300]" in message and "entry 1" in message


def test_huge_values_do_not_overflow(tmp_path):
    big = 2**63 - 1
    obj = changed(LOCAL, shape=[big, 200, 300], block_shape=[2**62, 50, 100], view_origin=[2**62, 0, 0],
                  view_shape=[2**62, 200, 300])  # fmt: skip
    with pytest.raises(DescriptionError) as info:
        read(tmp_path, "local", obj)  # 2**62 + 2**62 > 2**63 - 1, and must not wrap around
    assert info.value.field == "view_shape"
    assert read(tmp_path, "local", changed(obj, view_shape=[2**62 - 1, 200, 300])).view_shape[0] == 2**62 - 1


def test_nested_lower_minor_version_accepted(tmp_path):
    desc = read(tmp_path, "composite", changed(COMPOSITE, local_description___schema_version=1.0))
    assert desc.local_description._schema_version == 1.0


# ---------------------------------------------------------------------------------------------------------
# Field validation


SUB_OK = {"block_shape": [10, 50, 100], "sub_block_shape": [5, 25, 50]}

LOCAL_BAD = [
    # axes
    ({"axes": 3}, "axes"),
    ({"axes": "zyq"}, "axes"),
    ({"axes": "zzx"}, "axes"),
    ({"axes": ""}, "axes"),
    ({"axes": ["z", "y", "x"]}, "axes"),
    ({"axes": DELETE}, "axes"),
    # shape
    ({"shape": "foo"}, "shape"),
    ({"shape": [1, 2]}, "shape"),
    ({"shape": [100, 200, 300, 4]}, "shape"),
    ({"shape": [0, 200, 300]}, "shape"),
    ({"shape": [-1, 200, 300]}, "shape"),
    ({"shape": [1.5, 200, 300]}, "shape"),
    ({"shape": "[100, 200, 300.5]"}, "shape"),
    ({"shape": "[1, 2"}, "shape"),
    ({"shape": True}, "shape"),
    ({"shape": [True, 200, 300]}, "shape"),
    ({"shape": 100}, "shape"),
    ({"shape": "2**3"}, "shape"),
    ({"shape": {"z": 1}}, "shape"),
    ({"shape": [[100], 200, 300]}, "shape"),
    ({"shape": [100, None, 300]}, "shape"),
    ({"shape": [2**63, 200, 300]}, "shape"),
    ({"shape": "[100, 200, 300/0]"}, "shape"),
    ({"shape": "__import__('os').getcwd()"}, "shape"),
    ({"shape": DELETE}, "shape"),
    # dtype
    ({"dtype": "object"}, "dtype"),
    ({"dtype": "O"}, "dtype"),
    ({"dtype": "str"}, "dtype"),
    ({"dtype": "numpy.object_"}, "dtype"),
    ({"dtype": "float"}, "dtype"),
    ({"dtype": "<u2"}, "dtype"),
    ({"dtype": "uint8; import os"}, "dtype"),
    ({"dtype": "numpy.uint8()"}, "dtype"),
    ({"dtype": "os.system"}, "dtype"),
    ({"dtype": 5}, "dtype"),
    ({"dtype": ["uint8"]}, "dtype"),
    ({"dtype": DELETE}, "dtype"),
    # drange
    ({"drange": [1]}, "drange"),
    ({"drange": [1, 2, 3]}, "drange"),
    ({"drange": [5, 1]}, "drange"),
    ({"drange": "x"}, "drange"),
    ({"drange": [0, "a"]}, "drange"),
    ({"drange": 5}, "drange"),
    ({"drange": [False, True]}, "drange"),
    # chunks
    ({"chunks": [0, 10, 10]}, "chunks"),
    ({"chunks": [10, 10]}, "chunks"),
    ({"chunks": "big"}, "chunks"),
    # block_shape
    ({"block_shape": [0, 50, 100]}, "block_shape"),
    ({"block_shape": [10, -50, 100]}, "block_shape"),
    ({"block_shape": [10, 50]}, "block_shape"),
    ({"block_shape": DELETE}, "block_shape"),
    # view_origin
    ({"view_origin": [5, 0, 0]}, "view_origin"),
    ({"view_origin": [-10, 0, 0]}, "view_origin"),
    ({"view_origin": [100, 0, 0]}, "view_origin"),
    ({"view_origin": [0, 0]}, "view_origin"),
    # view_shape
    ({"view_shape": [0, 200, 300]}, "view_shape"),
    ({"view_shape": [101, 200, 300]}, "view_shape"),
    ({"view_origin": [10, 0, 0], "view_shape": [91, 200, 300]}, "view_shape"),
    ({"view_shape": [100, 200]}, "view_shape"),
    # block_file_name_format
    ({"block_file_name_format": "block.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{roiString}/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{roiString}.h5"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{roiString}.h5/"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{roiString}.h5//"}, "block_file_name_format"),
    ({"block_file_name_format": "../block-{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "a/../../block-{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "/tmp/block-{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "~/block-{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "C:/block-{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "..\\block-{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "sub\\block-{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{roiString}\u0000.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "a//block-{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "./block-{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-\n{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-\x7f{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{roiString}-{other}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{roiString.__class__}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{roiString[0]}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{roiString!r}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{roiString:>99}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{0}{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{}{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{roiString.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block-}{roiString}.h5/cube"}, "block_file_name_format"),
    ({"block_file_name_format": "block.h5/{roiString}"}, "block_file_name_format"),
    ({"block_file_name_format": "block-{roiString}.h5/cu{{be"}, "block_file_name_format"),
    ({"block_file_name_format": 5}, "block_file_name_format"),
    ({"block_file_name_format": DELETE}, "block_file_name_format"),
    # format
    ({"format": "n5"}, "format"),
    ({"format": "HDF5"}, "format"),
    ({"format": 1}, "format"),
    ({"format": DELETE}, "format"),
    # compression
    ({"compression_opts": 4}, "compression_opts"),
    ({"compression": "gzip", "compression_opts": 11}, "compression_opts"),
    ({"compression": "gzip", "compression_opts": "x"}, "compression_opts"),
    ({"compression": "gzip", "compression_opts": 2.5}, "compression_opts"),
    ({"compression": 4}, "compression"),
    ({"compression": ""}, "compression"),
    # sub_block_shape
    ({"sub_block_shape": [3, 50, 100]}, "sub_block_shape"),
    ({"sub_block_shape": [0, 50, 100]}, "sub_block_shape"),
    ({"sub_block_shape": [5, 50]}, "sub_block_shape"),
    # plain strings
    ({"dataset_root_dir": 5}, "dataset_root_dir"),
    ({"dataset_root_dir": ""}, "dataset_root_dir"),
    ({"dataset_root_dir": "a\u0000b"}, "dataset_root_dir"),
    ({"name": 5}, "name"),
    ({"name": ["a"]}, "name"),
    ({"hash_id": 5}, "hash_id"),
]


@pytest.mark.parametrize(
    "changes, field", LOCAL_BAD, ids=lambda v: repr(v)[:60] if isinstance(v, dict) else v
)
def test_local_malformed_field(tmp_path, changes, field):
    with pytest.raises(DescriptionError) as info:
        read(tmp_path, "local", changed(LOCAL, **changes))
    assert not isinstance(info.value, SchemaError)
    assert info.value.field == field
    message = str(info.value)
    assert field in message and "expected" in message and "found" in message


@pytest.mark.parametrize(
    "changes, field", LOCAL_BAD[:40], ids=lambda v: repr(v)[:60] if isinstance(v, dict) else v
)
def test_nested_local_malformed_field(tmp_path, changes, field):
    nested = {f"local_description__{key}": value for key, value in changes.items()}
    with pytest.raises(DescriptionError) as info:
        read(tmp_path, "composite", changed(COMPOSITE, **nested))
    assert info.value.field == f"local_description.{field}"
    assert f"local_description.{field}" in str(info.value)


REMOTE_BAD = [
    ({"format": "n5"}, "format"),
    ({"format": "boss"}, "format"),
    ({"format": None}, "format"),
    ({"format": 3}, "format"),
    ({"axes": "zyxq"}, "axes"),
    ({"axes": 5}, "axes"),
    ({"dtype": "object"}, "dtype"),
    ({"dtype": "numpy.str_"}, "dtype"),
    ({"dtype": DELETE}, "dtype"),
    ({"bounds": [0, 200, 300]}, "bounds"),
    ({"bounds": [10, 200, 300]}, "bounds"),  # not beyond origin_offset
    ({"bounds": [120, 200]}, "bounds"),
    ({"bounds": "lots"}, "bounds"),
    ({"bounds": DELETE}, "bounds"),
    ({"origin_offset": [-1, 0, 0]}, "origin_offset"),
    ({"origin_offset": [1, 0]}, "origin_offset"),
    ({"origin_offset": "[1, 0, x]"}, "origin_offset"),
    ({"url_format": "ftp://host/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}/"}, "url_format"),
    ({"url_format": "file:///tmp/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}"}, "url_format"),
    ({"url_format": "//host/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}"}, "url_format"),
    ({"url_format": "http:///{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}"}, "url_format"),
    (
        {"url_format": "http://{x_start}.h/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}"},
        "url_format",
    ),
    ({"url_format": "http://h/{x_start},{x_stop}/{y_start},{y_stop}/"}, "url_format"),
    ({"url_format": "http://h/{x_start},{x_stop}/{y_start},{y_stop}/{z_start}/"}, "url_format"),
    (
        {"url_format": "http://h/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}/{c_start}"},
        "url_format",
    ),
    ({"url_format": "http://h/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}/{foo}"}, "url_format"),
    ({"url_format": "http://h/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}/{}"}, "url_format"),
    ({"url_format": "http://h/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}/{0}"}, "url_format"),
    ({"url_format": "http://h/{x_start.real},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}"}, "url_format"),
    ({"url_format": "http://h/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop"}, "url_format"),
    ({"url_format": "http://h/{x_start:s},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}"}, "url_format"),
    ({"url_format": "http://h/a b/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}"}, "url_format"),
    ({"url_format": "http://h/{x_start:d},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}"}, "url_format"),
    ({"url_format": "http://h/{x_start!r},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}"}, "url_format"),
    ({"url_format": "http://h/\n{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}"}, "url_format"),
    ({"url_format": 7}, "url_format"),
    ({"url_format": DELETE}, "url_format"),
    ({"hdf5_dataset": DELETE}, "hdf5_dataset"),
    ({"hdf5_dataset": ""}, "hdf5_dataset"),
    ({"hdf5_dataset": "/"}, "hdf5_dataset"),
    ({"hdf5_dataset": 5}, "hdf5_dataset"),
    ({"name": 5}, "name"),
]


@pytest.mark.parametrize(
    "changes, field", REMOTE_BAD, ids=lambda v: repr(v)[:60] if isinstance(v, dict) else v
)
def test_remote_malformed_field(tmp_path, changes, field):
    with pytest.raises(DescriptionError) as info:
        read(tmp_path, "remote", changed(REMOTE, **changes))
    assert not isinstance(info.value, SchemaError)
    assert info.value.field == field
    message = str(info.value)
    assert field in message and "expected" in message and "found" in message
    # Nested, the field is dotted.
    nested = {f"remote_description__{key}": value for key, value in changes.items()}
    with pytest.raises(DescriptionError) as info:
        read(tmp_path, "composite", changed(COMPOSITE, **nested))
    assert info.value.field == f"remote_description.{field}"


@pytest.mark.parametrize(
    "url",
    [
        "https://h/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}/",
        "HTTP://127.0.0.1:8080/c?x={x_start}:{x_stop}&y={y_start}:{y_stop}&z={z_start}:{z_stop}",
        "http://h/{z_start}/{z_stop}/{y_start}/{y_stop}/{x_start}/{x_stop}/{x_start}",
        "http://h/{{literal}}/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}/",
    ],
)
def test_remote_good_urls(tmp_path, url):
    assert read(tmp_path, "remote", changed(REMOTE, url_format=url)).url_format == url


def test_url_placeholders_follow_axes(tmp_path):
    url = "http://h/{t_start}:{t_stop}/{c_start}:{c_stop}/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}"
    obj = changed(REMOTE, axes="tczyx", bounds=[2, 3, 120, 200, 300], origin_offset=DELETE, url_format=url)
    assert read(tmp_path, "remote", obj).axes == "tczyx"
    obj = changed(REMOTE, axes="yx", bounds=[200, 300], origin_offset=DELETE,
                  url_format="http://h/{x_start},{x_stop}/{y_start},{y_stop}/")  # fmt: skip
    assert read(tmp_path, "remote", obj).shape.tolist() == [200, 300]


@pytest.mark.parametrize(
    "fmt",
    [
        "block-{roiString}.h5/cube",
        "{roiString}.h5/cube",
        "sub/dir/block-{roiString}.h5/cube",
        "block-{roiString}.hdf5/volume/cube",
        "block-{roiString}.HDF/cube",
        "block-{roiString}.h5//cube/",
        "{{braces}}-{roiString}.h5/cube",
    ],
)
def test_good_block_file_name_formats(tmp_path, fmt):
    assert read(tmp_path, "local", changed(LOCAL, block_file_name_format=fmt)).block_file_name_format == fmt


def test_other_local_fields_accepted(tmp_path):
    desc = read(
        tmp_path,
        "local",
        changed(
            LOCAL,
            drange=[0, 255],
            chunks="[5, 25, 50]",
            compression="gzip",
            compression_opts="3+1",
            hash_id="abc",
            view_origin=[10, 50, 100],
            view_shape=[90, 150, 200],
            dataset_root_dir="/abs/cache",
            sub_block_shape=[5, 25, 50],
        ),
    )
    assert desc.drange == (0, 255) and isinstance(desc.drange, tuple)
    assert desc.chunks.tolist() == [5, 25, 50]
    assert desc.compression == "gzip" and desc.compression_opts == 4
    assert desc.hash_id == "abc"
    assert desc.dataset_root_dir == "/abs/cache"
    assert desc.sub_block_shape.tolist() == [5, 25, 50]
    assert read(tmp_path, "local", changed(LOCAL, drange=[0.5, 0.5])).drange == (0.5, 0.5)


def test_sub_block_shape_may_be_uneven_where_block_covers_the_view(tmp_path):
    obj = changed(LOCAL, block_shape=[100, 50, 100], sub_block_shape=[33, 25, 50])
    assert read(tmp_path, "local", obj).sub_block_shape.tolist() == [33, 25, 50]
    with pytest.raises(DescriptionError) as info:
        read(tmp_path, "local", changed(obj, sub_block_shape=[33, 33, 50]))
    assert info.value.field == "sub_block_shape"


def test_arithmetic_strings_everywhere(tmp_path):
    obj = changed(
        LOCAL,
        shape="[50*2, 400/2, (1+2)*100]",
        block_shape=["5*2", 50, "200//2"],
        view_origin="(10, 0, 0)",
        view_shape="[100-10, 200, 300]",
        drange="(-1, 1.5)",
    )
    desc = read(tmp_path, "local", obj)
    assert desc.shape.tolist() == [100, 200, 300]
    assert desc.block_shape.tolist() == [10, 50, 100]
    assert desc.view_origin.tolist() == [10, 0, 0]
    assert desc.view_shape.tolist() == [90, 200, 300]
    assert desc.drange == (-1, 1.5)


# ---------------------------------------------------------------------------------------------------------
# dtype


@pytest.mark.parametrize("name", sorted(d.SUPPORTED_DTYPES))
@pytest.mark.parametrize("prefix", ["", "numpy.", "np."])
def test_dtype_names(tmp_path, name, prefix):
    desc = read(tmp_path, "local", changed(LOCAL, dtype=prefix + name))
    assert desc.dtype == numpy.dtype(name).type  # numpy.bool only exists from numpy 2 on
    assert isinstance(desc.dtype, type) and issubclass(desc.dtype, numpy.generic)
    assert desc.dtype is numpy.dtype(desc.dtype).type


def test_dtype_from_types():
    assert d.parse_dtype(numpy.float32) is numpy.float32
    assert d.parse_dtype(numpy.dtype("uint16")) is numpy.uint16
    assert d.parse_dtype(bool) is numpy.bool_
    for bad in (
        object,
        str,
        numpy.object_,
        numpy.str_,
        numpy.dtype("O"),
        numpy.dtype(">u2"),
        numpy.dtype("U3"),
    ):
        with pytest.raises(DescriptionError) as info:
            d.parse_dtype(bad)
        assert info.value.field == "dtype"


# ---------------------------------------------------------------------------------------------------------
# Code injection


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"shape": "__import__('os').system('touch PWNED')"}, "shape"),
        ({"block_shape": ["__import__('os').system('touch PWNED')", 1, 1]}, "block_shape"),
        ({"view_origin": "[0, 0, __import__('os').system('touch PWNED')]"}, "view_origin"),
        ({"drange": "__import__('os').system('touch PWNED')"}, "drange"),
        (
            {"compression": "gzip", "compression_opts": "__import__('os').system('touch PWNED')"},
            "compression_opts",
        ),
        ({"dtype": "__import__('os').system('touch PWNED')"}, "dtype"),
        ({"block_file_name_format": "{roiString.__init__.__globals__}.h5/cube"}, "block_file_name_format"),
    ],
)
def test_code_injection_raises_and_creates_nothing(tmp_path, monkeypatch, changes, field):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(DescriptionError) as info:
        read(tmp_path, "local", changed(LOCAL, **changes))
    assert info.value.field == field
    assert os.listdir(work) == []
    assert not (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------------------------------------------------
# Composite cross-checks


def test_composite_axes_must_match(tmp_path):
    url = "http://h/{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}"
    obj = changed(COMPOSITE, local_description__axes="xyz", remote_description__url_format=url)
    with pytest.raises(DescriptionError) as info:
        read(tmp_path, "composite", obj)
    assert info.value.field == "local_description.axes"


def test_composite_local_shape_within_remote(tmp_path):
    # remote shape is bounds - origin_offset = [110, 200, 300]
    assert read(tmp_path, "composite", changed(COMPOSITE, local_description__shape=[110, 200, 300]))
    with pytest.raises(DescriptionError) as info:
        read(tmp_path, "composite", changed(COMPOSITE, local_description__shape=[111, 200, 300]))
    assert info.value.field == "local_description.shape"
    assert "[110, 200, 300]" in str(info.value)


@pytest.mark.parametrize(
    "fmt, dataset, ok",
    [
        ("block-{roiString}.h5/cube", "cube", True),
        ("block-{roiString}.h5/cube", "/cube", True),
        ("block-{roiString}.h5//cube/", "cube", True),
        ("block-{roiString}.h5/volume/cube", "/volume/cube", True),
        ("block-{roiString}.h5/volume/cube", "cube", False),  # upstream's suffix match accepted this
        ("block-{roiString}.h5/cube", "/volume/cube", False),
        ("block-{roiString}.h5/mycube", "cube", False),
        ("block-{roiString}.h5/Cube", "cube", False),
    ],
)
def test_composite_dataset_name_matches_exactly(tmp_path, fmt, dataset, ok):
    obj = changed(
        COMPOSITE, local_description__block_file_name_format=fmt, remote_description__hdf5_dataset=dataset
    )
    if ok:
        desc = read(tmp_path, "composite", obj)
        assert desc.remote_description.hdf5_dataset == dataset  # kept as written
    else:
        with pytest.raises(DescriptionError) as info:
            read(tmp_path, "composite", obj)
        assert info.value.field == "local_description.block_file_name_format"


# ---------------------------------------------------------------------------------------------------------
# Helpers


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("block-{roiString}.h5/cube", ("block-{roiString}.h5", "cube")),
        ("a/b-{roiString}.hdf5/g/d", ("a/b-{roiString}.hdf5", "g/d")),
        ("x.h5/y.h5/z", ("x.h5", "y.h5/z")),
        ("b.HDF/cube", ("b.HDF", "cube")),
        ("b.h5//cube", ("b.h5", "/cube")),
    ],
)
def test_split_block_file_name_format(fmt, expected):
    assert split_block_file_name_format(fmt) == expected


@pytest.mark.parametrize("fmt", ["block.h5", "block/cube", "block.h5/", "block.h5//", ""])
def test_split_block_file_name_format_errors(fmt):
    with pytest.raises(DescriptionError) as info:
        split_block_file_name_format(fmt)
    assert info.value.field == "block_file_name_format"


@pytest.mark.parametrize(
    "path, expected",
    [
        ("cube", "/cube"),
        ("/cube", "/cube"),
        ("cube/", "/cube"),
        ("//a//b/", "/a/b"),
        ("/volume/cube", "/volume/cube"),
    ],
)
def test_normalize_h5_path(path, expected):
    assert normalize_h5_path(path) == expected


# ---------------------------------------------------------------------------------------------------------
# Namespace


def test_namespace_behaviour():
    ns = Namespace(a=1, b=numpy.array([1, 2]), c=Namespace(x=numpy.array([3])))
    assert ns.a == 1
    assert list(vars(ns)) == ["a", "b", "c"]
    assert ns.__dict__ is vars(ns)
    assert ns == Namespace(a=1, b=numpy.array([1, 2]), c=Namespace(x=numpy.array([3])))
    assert ns != Namespace(a=1, b=numpy.array([1, 3]), c=Namespace(x=numpy.array([3])))
    assert ns != Namespace(a=1, b=numpy.array([1, 2]), c=Namespace(x=numpy.array([4])))
    assert ns != Namespace(a=1, b=numpy.array([1, 2]))
    assert ns != Namespace(a=1, b=numpy.array([1, 2, 3]), c=Namespace(x=numpy.array([3])))
    assert ns != {"a": 1}
    ns.d = "new"
    assert list(vars(ns))[-1] == "d"
    shallow = copy.copy(ns)
    assert shallow == ns and shallow is not ns and shallow.b is ns.b
    deep = copy.deepcopy(ns)
    assert deep == ns and deep.b is not ns.b and deep.c is not ns.c
    deep.b[0] = 99
    deep.c.x[0] = 99
    assert ns.b[0] == 1 and ns.c.x[0] == 3
    assert "a=1" in repr(ns) and "[1, 2]" in repr(ns)
    assert "a" in ns and "zz" not in ns
    with pytest.raises(TypeError):
        hash(ns)


def test_parsed_namespace_repr_and_copy(tmp_path):
    desc = read_composite(write_text(tmp_path, BOCK11))
    assert "numpy.uint8" in repr(desc) and "Bock11-level0" in repr(desc)
    assert copy.deepcopy(desc) == desc
    other = copy.deepcopy(desc)
    other.local_description.view_shape[0] = 1
    assert other != desc


# ---------------------------------------------------------------------------------------------------------
# Parsing from dicts and namespaces (preparsed descriptions)


def test_parse_from_dict_and_namespace(tmp_path):
    from_file = read(tmp_path, "local", LOCAL)
    assert parse_local(LOCAL) == from_file
    assert parse_local(from_file) == from_file  # a parsed namespace re-validates to itself
    hand = Namespace(**{k: v for k, v in LOCAL.items() if not k.startswith("_")})
    parsed = parse_local(hand)
    assert parsed == from_file
    assert hand.shape == [100, 200, 300] and not hasattr(hand, "view_shape")  # input untouched


def test_parse_does_not_modify_input():
    obj = copy.deepcopy(COMPOSITE)
    parse_composite(obj)
    assert obj == COMPOSITE


def test_parse_namespace_with_wrong_schema_is_not_mine():
    with pytest.raises(SchemaError):
        parse_local(Namespace(_schema_name="other", **{k: v for k, v in LOCAL.items() if k[0] != "_"}))


def test_field_prefix():
    with pytest.raises(DescriptionError) as info:
        parse_local(changed(LOCAL, shape="x"), field_prefix="local_description")
    assert info.value.field == "local_description.shape"
    with pytest.raises(DescriptionError) as info:
        parse_local(changed(LOCAL, _schema_name="other"), field_prefix="local_description")
    assert info.value.field == "local_description"


# ---------------------------------------------------------------------------------------------------------
# Writing


def _all_fields_local() -> dict:
    return changed(
        LOCAL,
        drange=[0, 255],
        chunks=[5, 25, 50],
        compression="gzip",
        compression_opts=4,
        hash_id="h",
        view_origin=[10, 50, 100],
        view_shape=[90, 150, 200],
        dataset_root_dir="blocks",
        sub_block_shape=[5, 25, 50],
    )


@pytest.mark.parametrize("dtype", sorted(d.SUPPORTED_DTYPES))
def test_round_trip_every_dtype(tmp_path, dtype):
    drange = [0, 1] if dtype.startswith("bool") else ([-1.5, 2.5] if "float" in dtype else [0, 100])
    cases = {
        "local": changed(_all_fields_local(), dtype=dtype, drange=drange),
        "remote": changed(REMOTE, dtype=f"numpy.{dtype}"),
        "composite": changed(COMPOSITE, local_description__dtype=dtype, remote_description__dtype=dtype),
    }
    for kind, obj in cases.items():
        original = read(tmp_path, kind, obj)
        out = tmp_path / f"out-{kind}.json"
        write_description(out, original, kind)
        again = READERS[kind](out)
        assert again == original
        written = json.loads(out.read_text())
        if kind == "local":
            assert written["dtype"] == numpy.dtype(dtype).name
        # Writing the re-read one gives the same bytes.
        out2 = tmp_path / f"out2-{kind}.json"
        write_description(out2, again, kind)
        assert out2.read_bytes() == out.read_bytes()


def test_written_json_format(tmp_path):
    out = tmp_path / "out.json"
    write_description(out, read_composite(write_text(tmp_path, BOCK11)), "composite")
    text = out.read_text()
    written = json.loads(text)
    assert list(written) == ["_schema_name", "_schema_version", "remote_description", "local_description"]
    local = written["local_description"]
    assert local["shape"] == [1233, 135424, 119808]
    assert all(type(v) is int for v in local["shape"])
    assert local["dtype"] == "uint8"
    assert local["view_origin"] == [0, 51200, 51200]
    assert "drange" not in local  # None fields are left out
    assert written["remote_description"]["dtype"] == "uint8"
    assert list(local)[:6] == ["_schema_name", "_schema_version", "name", "format", "axes", "shape"]
    assert '\n    "remote_description": {\n        "_schema_name"' in text  # 4-space indentation
    assert text.endswith("}\n")


def test_to_json_dict():
    desc = parse_local(_all_fields_local())
    obj = to_json_dict(desc)
    assert obj["drange"] == [0, 255]
    assert obj["chunks"] == [5, 25, 50] and type(obj["chunks"][0]) is int
    assert obj["dtype"] == "uint8"
    json.dumps(obj)  # JSON-ready
    nested = to_json_dict(parse_composite(COMPOSITE))
    assert isinstance(nested["local_description"], dict)
    assert nested["remote_description"]["shape"] == [110, 200, 300]


def test_write_hand_built_namespace(tmp_path):
    hand = Namespace(**{k: v for k, v in LOCAL.items() if not k.startswith("_")})
    hand.shape = numpy.array([100, 200, 300])
    hand.dtype = numpy.uint8
    out = tmp_path / "hand.json"
    write_description(out, hand, "local")
    written = json.loads(out.read_text())
    assert written["_schema_name"] == "blockwise-fileset-description"
    assert written["_schema_version"] == 1.1
    assert read_local(out) == parse_local(LOCAL)


def test_write_validates_before_touching_the_file(tmp_path):
    out = tmp_path / "d.json"
    out.write_text("old content")
    bad = parse_local(LOCAL)
    bad.view_origin = numpy.array([5, 0, 0])
    with pytest.raises(DescriptionError) as info:
        write_description(out, bad, "local")
    assert info.value.field == "view_origin"
    assert out.read_text() == "old content"
    with pytest.raises(SchemaError):
        write_description(out, parse_local(LOCAL), "remote")
    with pytest.raises(ValueError):
        write_description(out, parse_local(LOCAL), "nonsense")
    assert os.listdir(tmp_path) == ["d.json"]
    assert not (tmp_path / "new.json").exists()
    with pytest.raises(DescriptionError):
        write_description(tmp_path / "new.json", bad, "local")
    assert os.listdir(tmp_path) == ["d.json"]


@pytest.mark.parametrize("failing", ["os.replace", "os.fsync", "json.dumps-late"])
def test_write_is_atomic(tmp_path, monkeypatch, failing):
    out = tmp_path / "d.json"
    write_description(out, parse_local(LOCAL), "local")
    old = out.read_bytes()
    new = parse_local(changed(LOCAL, name="changed"))

    def boom(*args, **kwargs):
        raise OSError("injected failure")

    if failing == "os.replace":
        monkeypatch.setattr(os, "replace", boom)
    elif failing == "os.fsync":
        monkeypatch.setattr(os, "fsync", boom)
    else:
        # Fail while writing the bytes into the temporary file: half of them get in.
        real_write = os.write

        def failing_write(fd, data):
            if not os.readlink(f"/proc/self/fd/{fd}").endswith(".partial"):
                return real_write(fd, data)
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(28, "disk full")

        monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(OSError, match="injected failure|disk full"):
        write_description(out, new, "local")
    monkeypatch.undo()
    assert out.read_bytes() == old
    assert os.listdir(tmp_path) == ["d.json"]
    write_description(out, new, "local")  # and it works again afterwards
    assert read_local(out).name == "changed"


def test_write_keeps_permissions(tmp_path):
    out = tmp_path / "d.json"
    write_description(out, parse_local(LOCAL), "local")
    os.chmod(out, 0o640)
    write_description(out, parse_local(changed(LOCAL, name="x")), "local")
    assert os.stat(out).st_mode & 0o777 == 0o640


def test_written_file_replaces_not_rewrites(tmp_path):
    out = tmp_path / "d.json"
    write_description(out, parse_local(LOCAL), "local")
    before = os.stat(out).st_ino
    with open(out, "rb") as held:
        old = held.read()
        write_description(out, parse_local(changed(LOCAL, name="x")), "local")
        held.seek(0)
        assert held.read() == old  # a reader holding the old file sees the old content
    assert os.stat(out).st_ino != before


# ---------------------------------------------------------------------------------------------------------
# Behaviour under python -O


def test_same_errors_under_python_O(tmp_path):
    path = write_text(tmp_path, json.dumps(changed(LOCAL, view_origin=[5, 0, 0])))
    code = textwrap.dedent(
        f"""
        import sys
        from lazyflow_rbfs.description import read_local
        from lazyflow_rbfs.errors import DescriptionError
        assert False, "asserts must be off"
        try:
            read_local({str(path)!r})
        except DescriptionError as exc:
            print(type(exc).__name__, exc.field, str(exc), sep="|")
        """
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(lazyflow_rbfs.__file__)))
    outputs = []
    for flags in (["-O"], []):
        run = subprocess.run(
            [sys.executable, *flags, "-c", code], capture_output=True, text=True, env=env, timeout=60
        )
        outputs.append(run)
    optimized, normal = outputs
    assert optimized.returncode == 0, optimized.stderr
    kind, field, message = optimized.stdout.strip().split("|", 2)
    assert kind == "DescriptionError" and field == "view_origin" and "view_origin" in message
    assert normal.returncode != 0 and "asserts must be off" in normal.stderr  # -O really disabled asserts
    with pytest.raises(DescriptionError) as info:
        read_local(path)
    assert str(info.value) == message
