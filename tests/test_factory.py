"""Tests of lazyflow_rbfs.factory.BlockwiseFilesetFactory."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lazyflow_rbfs.errors import DescriptionError, SchemaError
from lazyflow_rbfs.factory import BlockwiseFilesetFactory
from lazyflow_rbfs.store import BlockwiseFileset

LOCAL = {
    "_schema_name": "blockwise-fileset-description",
    "_schema_version": 1.1,
    "name": "blocks",
    "format": "hdf5",
    "axes": "zyx",
    "shape": [20, 30, 40],
    "dtype": "uint8",
    "block_shape": [8, 16, 16],
    "block_file_name_format": "block-{roiString}.h5/cube",
    "dataset_root_dir": "blocks",
}

REMOTE = {
    "_schema_name": "RESTful-volume-description",
    "_schema_version": 1.0,
    "name": "remote",
    "format": "hdf5",
    "axes": "zyx",
    "bounds": [20, 30, 40],
    "dtype": "uint8",
    "url_format": "http://127.0.0.1:9/cube/{z_start},{z_stop}/{y_start},{y_stop}/{x_start},{x_stop}/",
    "hdf5_dataset": "cube",
}


def write_json(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.fixture
def sandbox():
    """An empty registry for the duration of a test; the default registrations come back in order."""
    saved = BlockwiseFilesetFactory.creation_functions()
    for fn in saved:
        BlockwiseFilesetFactory.unregister(fn)
    assert BlockwiseFilesetFactory.creation_functions() == []
    yield BlockwiseFilesetFactory
    for fn in BlockwiseFilesetFactory.creation_functions():
        BlockwiseFilesetFactory.unregister(fn)
    for fn in saved:
        BlockwiseFilesetFactory.register(fn)
    assert BlockwiseFilesetFactory.creation_functions() == saved


def test_local_description_gives_a_blockwise_fileset(tmp_path):
    fs = BlockwiseFilesetFactory.create(write_json(tmp_path / "d.json", LOCAL), "r")
    try:
        assert type(fs) is BlockwiseFileset
        assert fs.mode == "r"
    finally:
        fs.close()


# RESTfulBlockwiseFileset (tried first) must say "not mine" (SchemaError) for a local description before it
# rejects the mode; until cache.py checks the schema first, this raises its ReadOnlyError.
def test_local_description_opens_for_writing(tmp_path):
    fs = BlockwiseFilesetFactory.create(write_json(tmp_path / "d.json", LOCAL), "a")
    try:
        assert type(fs) is BlockwiseFileset
        assert fs.mode == "a"
    finally:
        fs.close()


def test_other_json_is_schema_error_naming_file_and_schemas(tmp_path):
    path = write_json(tmp_path / "other.json", {"_schema_name": "something-else", "_schema_version": 1.0})
    with pytest.raises(SchemaError) as info:
        BlockwiseFilesetFactory.create(path, "r")
    message = str(info.value)
    assert path in message
    assert "blockwise-fileset-description" in message


def test_broken_description_of_a_known_schema_propagates(tmp_path):
    path = write_json(tmp_path / "bad.json", dict(LOCAL, block_shape=[0, 16, 16]))
    with pytest.raises(DescriptionError) as info:
        BlockwiseFilesetFactory.create(path, "r")
    assert info.value.field == "block_shape"


def test_default_registrations_composite_first():
    # _createAndReturnBlockwiseFileset: a creation function's name in upstream lazyflow's factory convention
    fns = BlockwiseFilesetFactory.creation_functions()
    assert fns[-1] == BlockwiseFileset._createAndReturnBlockwiseFileset
    try:
        from lazyflow_rbfs.cache import RESTfulBlockwiseFileset
    except ModuleNotFoundError:
        assert len(fns) == 1
    else:
        assert fns[0] == RESTfulBlockwiseFileset._createAndReturnBlockwiseFileset
        assert len(fns) == 2


def test_composite_description_gives_a_restful_fileset(tmp_path):
    cache = pytest.importorskip("lazyflow_rbfs.cache")
    composite = {
        "_schema_name": "RESTful-blockwise-fileset-description",
        "_schema_version": 1.0,
        "remote_description": REMOTE,
        "local_description": LOCAL,
    }
    fs = BlockwiseFilesetFactory.create(write_json(tmp_path / "c.json", composite), "r")
    try:
        assert isinstance(fs, cache.RESTfulBlockwiseFileset)
    finally:
        fs.close()


def test_register_keeps_order_and_ignores_duplicates(sandbox):
    def first(path, mode):
        return None

    def second(path, mode):
        return None

    sandbox.register(first)
    sandbox.register(second)
    sandbox.register(first)
    assert sandbox.creation_functions() == [first, second]
    with pytest.raises(TypeError):
        sandbox.register("not callable")
    sandbox.unregister(first)
    assert sandbox.creation_functions() == [second]


def test_create_tries_in_order_and_skips_not_mine(sandbox, tmp_path):
    calls = []
    sentinel = object()

    def raises_schema(path, mode):
        calls.append("schema")
        raise SchemaError("not mine")

    def returns_none(path, mode):
        calls.append("none")
        return None

    def accepts(path, mode):
        calls.append(("accept", path, mode))
        return sentinel

    def never(path, mode):
        calls.append("never")
        return object()

    for fn in (raises_schema, returns_none, accepts, never):
        sandbox.register(fn)
    assert sandbox.create(tmp_path / "x.json", "a") is sentinel
    assert calls == ["schema", "none", ("accept", str(tmp_path / "x.json"), "a")]


def test_other_errors_stop_the_search(sandbox):
    calls = []

    def broken(path, mode):
        calls.append("broken")
        raise OSError("unreadable")

    def later(path, mode):
        calls.append("later")
        return object()

    sandbox.register(broken)
    sandbox.register(later)
    with pytest.raises(OSError, match="unreadable"):
        sandbox.create("x.json", "r")
    assert calls == ["broken"]


def test_nothing_accepts_lists_every_schema_tried(sandbox, tmp_path):
    sandbox.register(BlockwiseFileset._createAndReturnBlockwiseFileset)

    def anonymous(path, mode):
        raise SchemaError("nope")

    sandbox.register(anonymous)
    path = write_json(tmp_path / "o.json", {"_schema_name": "other", "_schema_version": 1.0})
    with pytest.raises(SchemaError) as info:
        sandbox.create(path, "r")
    assert "blockwise-fileset-description" in str(info.value) and "anonymous" in str(info.value)


def test_factory_works_without_the_cache_module(tmp_path):
    path = write_json(tmp_path / "d.json", LOCAL)
    code = (
        "import sys\n"
        "sys.modules['lazyflow_rbfs.cache'] = None  # as if cache.py did not exist\n"
        "from lazyflow_rbfs.factory import BlockwiseFilesetFactory\n"
        "from lazyflow_rbfs.store import BlockwiseFileset\n"
        "fns = BlockwiseFilesetFactory.creation_functions()\n"
        "assert fns == [BlockwiseFileset._createAndReturnBlockwiseFileset], fns\n"
        "fs = BlockwiseFilesetFactory.create(sys.argv[1], 'r')\n"
        "assert type(fs) is BlockwiseFileset\n"
        "fs.close()\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
