"""The OpInputDataReader hook and ``rbfs ilastik``, against the double's model of ilastik's reader chain.

Tests that depend on the details of the chain (which reader opens which file, the ``quilted`` NameError)
or on the double's headless entry point run only against ``tests/lazyflow_double``; the rest also run
against a real lazyflow when it is importable (``RBFS_LAZYFLOW=real|double|auto``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from lazyflow_rbfs import errors
from lazyflow_rbfs.testing.pytest_plugin import SAMPLE_BLOCK, SAMPLE_SHAPE

pytest_plugins = ("tests.lazyflow_double.fixtures",)


@pytest.fixture
def env(lazyflow_env):
    lazyflow_env.hook.uninstall()
    yield lazyflow_env
    lazyflow_env.hook.uninstall()


@pytest.fixture
def double(env):
    if env.kind != "double":
        pytest.skip("models the reader chain of tests/lazyflow_double")
    return env


@pytest.fixture
def make_reader(env):
    readers = []

    def make():
        reader = env.input_reader_module.OpInputDataReader(graph=env.Graph())
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.cleanUp()


def _write_json(path: Path, obj) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.fixture
def files(composite_description_path, tmp_path, sample_array):
    """One file of every kind the chain distinguishes."""
    composite = json.loads(composite_description_path.read_text())
    h5 = tmp_path / "volume.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("data", data=sample_array, chunks=(4, 8, 8))
    return {
        "composite": str(composite_description_path),
        "local": _write_json(tmp_path / "local.json", composite["local_description"]),
        "remote": _write_json(tmp_path / "remote.json", composite["remote_description"]),
        "future": _write_json(tmp_path / "future.json", dict(composite, _schema_version=2.0)),
        "tiled": _write_json(
            tmp_path / "tiled.json",
            {
                "_schema_name": "tiled-volume-description",
                "_schema_version": 1.0,
                "shape": [5, 6, 7],
                "dtype": "uint8",
            },
        ),
        "other": _write_json(tmp_path / "other.json", {"hello": "world"}),
        "h5": f"{h5}/data",
    }


def _internal_type(reader) -> str:
    return type(reader.internalOperators[0]).__name__


# --------------------------------------------------------------------------------------------------- the hook


def test_hook_opens_composite_descriptions_with_our_operator(env, make_reader, files, sample_array):
    env.hook.install()
    reader = make_reader()
    reader.FilePath.setValue(files["composite"])
    inner = reader.internalOperators[0]
    assert isinstance(inner, env.operators.OpRESTfulBlockwiseFilesetReader)
    assert tuple(reader.Output.meta.shape) == SAMPLE_SHAPE
    np.testing.assert_array_equal(reader.Output[...].wait(), sample_array)
    np.testing.assert_array_equal(reader.Output[3:9, 1:30, 7:8].wait(), sample_array[3:9, 1:30, 7:8])
    reader.cleanUp()
    assert inner.fileset is None, "cleaning up the reader must close our fileset"


def test_without_the_hook_composite_descriptions_hit_the_quilted_name_error(double, make_reader, files):
    assert importlib.util.find_spec("quilted") is None, "with quilted there is no NameError to model"
    reader = make_reader()
    with pytest.raises(NameError, match="OpH5BlockStoreReader"):
        reader.FilePath.setValue(files["composite"])


def test_other_json_goes_through_the_rest_of_the_chain(double, make_reader, files):
    double.hook.install()
    reader = make_reader()
    # a file of another reader's schema is still opened by that reader
    reader.FilePath.setValue(files["tiled"])
    assert _internal_type(reader) == "OpCachedTiledVolumeReader"
    # a local blockwise description gets past the H5BlockStore attempt to lazyflow's blockwise reader
    reader.FilePath.setValue(files["local"])
    assert _internal_type(reader) == "OpBlockwiseFilesetReader"
    assert tuple(reader.Output.meta.shape) == SAMPLE_SHAPE
    # JSON of no known schema behaves exactly as before the hook
    with pytest.raises(NameError, match="OpH5BlockStoreReader"):
        make_reader().FilePath.setValue(files["other"])


@pytest.mark.parametrize("kind", ["remote", "future"])
def test_our_schemas_nobody_opens_end_as_unrecognized_not_name_error(double, make_reader, files, kind):
    double.hook.install()
    with pytest.raises(RuntimeError, match="unrecognized format"):
        make_reader().FilePath.setValue(files[kind])


def test_reader_built_like_ilastiks_dataset_info(env, files, tmp_path, sample_array):
    """FilesystemDatasetInfo: OpInputDataReader(graph=..., WorkingDirectory=..., FilePath=<relative>)."""
    env.hook.install()
    reader = env.input_reader_module.OpInputDataReader(
        graph=env.Graph(), WorkingDirectory=str(tmp_path), FilePath=Path(files["composite"]).name
    )
    inner = reader.internalOperators[0]
    meta = reader.Output.meta.copy()
    np.testing.assert_array_equal(reader.Output[1:5, 2:9, 0:36].wait(), sample_array[1:5, 2:9, 0:36])
    reader.cleanUp()
    assert inner.fileset is None
    assert tuple(meta.shape) == SAMPLE_SHAPE and [tag.key for tag in meta.axistags] == ["z", "y", "x"]
    assert meta.dtype().nbytes == sample_array.dtype.itemsize


def test_changing_the_path_cleans_up_our_operator(env, make_reader, files):
    env.hook.install()
    reader = make_reader()
    reader.FilePath.setValue(files["composite"])
    inner = reader.internalOperators[0]
    fileset = inner.fileset
    reader.FilePath.setValue(files["h5"])
    assert fileset.closed and inner.fileset is None
    assert not isinstance(reader.internalOperators[0], env.operators.OpRESTfulBlockwiseFilesetReader)


class _NoJsonAttempts:
    def setupOutputs(self):
        return self._attemptOpenAsH5N5("x")

    def _attemptOpenAsH5N5(self, filePath):
        return [], None


class _OtherSignature:
    def setupOutputs(self):
        return self._attemptOpenAsBlockwiseFileset("x", "y")

    def _attemptOpenAsBlockwiseFileset(self, filePath, mode):
        return [], None


class _NeverCalled:
    def setupOutputs(self):
        return self._attemptOpenWithRegistry("x")

    def _attemptOpenWithRegistry(self, filePath):
        return [], None

    def _attemptOpenAsBlockwiseFileset(self, filePath):  # left over, no longer part of the chain
        return [], None


@pytest.mark.parametrize(
    "layout, message",
    [(_NoJsonAttempts, "found none"), (_OtherSignature, "(self, filePath)"), (_NeverCalled, "calls")],
    ids=["no-json-attempts", "other-signature", "never-called"],
)
def test_unknown_reader_layouts_fail_loudly(env, monkeypatch, layout, message):
    before = dict(vars(layout))
    monkeypatch.setattr(env.input_reader_module, "OpInputDataReader", layout)  # the class install() hooks
    with pytest.raises(RuntimeError, match=re.escape(message)):
        env.hook.install()
    assert dict(vars(layout)) == before, "a refused install must patch nothing"


def test_the_current_reader_layout_is_recognised(env):
    """The layout check accepts the OpInputDataReader at hand (real or double): install() succeeds."""
    env.hook.install()
    assert env.hook.installed()


def test_non_json_inputs_are_untouched(env, make_reader, files, sample_array):
    def open_h5():
        reader = make_reader()
        reader.FilePath.setValue(files["h5"])
        return reader

    before = open_h5()
    env.hook.install()
    after = open_h5()
    assert _internal_type(before) == _internal_type(after)
    assert dict(before.Output.meta).keys() == dict(after.Output.meta).keys()
    np.testing.assert_array_equal(after.Output[...].wait(), sample_array)


def test_broken_composite_is_reported_as_a_dataset_read_error(env, make_reader, files):
    path = Path(files["composite"])
    obj = json.loads(path.read_text())
    obj["local_description"]["block_shape"] = [8, 0, 16]
    path.write_text(json.dumps(obj))
    env.hook.install()
    reader = make_reader()
    with pytest.raises(
        env.input_reader_module.OpInputDataReader.DatasetReadError, match="block_shape"
    ) as info:
        reader.FilePath.setValue(files["composite"])
    assert isinstance(info.value.__cause__, errors.DescriptionError)


def test_install_is_idempotent_and_uninstall_restores(env, make_reader, files):
    cls = env.input_reader_module.OpInputDataReader
    before = {name: cls.__dict__.get(name) for name in env.hook.JSON_ATTEMPTS}
    assert not env.hook.installed()
    env.hook.install()
    env.hook.install(max_parallel=2)
    assert env.hook.installed()
    for name, original in before.items():
        if original is not None:
            assert cls.__dict__[name].__wrapped__ is original  # wrapped once, not twice (functools.wraps)
    reader = make_reader()
    reader.FilePath.setValue(files["composite"])
    assert reader.internalOperators[0].fileset.max_parallel == 2

    env.hook.uninstall()
    env.hook.uninstall()
    assert not env.hook.installed()
    assert {name: cls.__dict__.get(name) for name in env.hook.JSON_ATTEMPTS} == before
    if env.kind == "double":
        with pytest.raises(NameError):
            make_reader().FilePath.setValue(files["composite"])


# ----------------------------------------------------------------------------------------------- rbfs ilastik


def test_headless_batch_on_a_description_equals_one_on_hdf5(double, files, tmp_path, sample_array):
    out_rbfs, out_h5 = tmp_path / "from_rbfs.h5", tmp_path / "from_h5.h5"
    project = tmp_path / "pc.ilp"
    project.write_bytes(b"")  # ilastik refuses a --project that does not exist; the double does not read it
    args = ["--headless", f"--project={project}"]
    assert (
        double.hook.main(
            ["--", *args, f"--raw_data={files['composite']}", f"--output_filename_format={out_rbfs}"]
        )
        == 0
    )
    assert double.hook.main([*args, f"--raw_data={files['h5']}", f"--output_filename_format={out_h5}"]) == 0
    with h5py.File(out_rbfs, "r") as a, h5py.File(out_h5, "r") as b:
        np.testing.assert_array_equal(a["exported_data"][...], b["exported_data"][...])
        np.testing.assert_array_equal(a["exported_data"][...], sample_array)
    assert not double.hook.installed(), "main() must remove the hook it installed"


def test_errors_escaping_ilastik_propagate_and_the_hook_is_removed(double, files, tmp_path):
    with pytest.raises(RuntimeError, match="does not exist"):
        double.hook.main(
            ["--headless", f"--project={tmp_path / 'missing.ilp'}", f"--raw_data={files['composite']}"]
        )
    assert not double.hook.installed()


def test_main_returns_ilastiks_exit_status(double, capsys):
    assert double.hook.main(["--no-such-option"]) == 2
    assert double.hook.main([]) == 2  # the double has no GUI: it exits with 2
    assert "GUI" in capsys.readouterr().err


def test_main_without_ilastik_says_so_in_one_line(env, monkeypatch, capsys):
    for name in ("ilastik", "ilastik.__main__", "ilastik_main"):
        monkeypatch.setitem(sys.modules, name, None)
    assert env.hook.main(["--headless"]) == env.hook.EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ilastik is not importable" in err
    assert not env.hook.installed()


def test_hook_respects_block_shape_metadata(env, make_reader, files):
    env.hook.install()
    reader = make_reader()
    reader.FilePath.setValue(files["composite"])
    assert tuple(reader.Output.meta.ideal_blockshape) == SAMPLE_BLOCK
