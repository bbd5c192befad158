"""The exception hierarchy of API.md: bases, attributes, pickling, and rebuilding from an instance."""

from __future__ import annotations

import pickle

import pytest

from lazyflow_rbfs import BlockwiseFileset, errors

TABLE = {
    "RbfsError": (Exception,),
    "SchemaError": (errors.RbfsError, ValueError),
    "DescriptionError": (errors.RbfsError, ValueError),
    "OutOfBoundsError": (errors.RbfsError, IndexError),
    "BlockNotReadyError": (errors.RbfsError,),
    "DownloadError": (errors.RbfsError, OSError),
    "RemoteTimeoutError": (errors.DownloadError, TimeoutError),
    "InvalidResponseError": (errors.DownloadError,),
    "PrefetchError": (errors.DownloadError,),
    "LockTimeoutError": (errors.RbfsError, TimeoutError),
    "ClosedError": (errors.RbfsError, ValueError),
    "ReadOnlyError": (errors.RbfsError, PermissionError),
    "CacheWriteError": (errors.RbfsError, OSError),
    "ArgumentError": (errors.RbfsError, ValueError),  # ours, beyond API.md's table
}

SAMPLES = [
    errors.SchemaError("not mine"),
    errors.DescriptionError("bad shape", field="local_description.shape"),
    errors.OutOfBoundsError("outside"),
    errors.BlockNotReadyError("missing", block_start=(0, 32, 64)),
    errors.DownloadError("GET http://h/x failed with 503", url="http://h/x", status=503),
    errors.RemoteTimeoutError("slow", url="http://h/y", status=None),
    errors.InvalidResponseError("html", url="http://h/z", status=200),
    errors.PrefetchError("2 failed", url=None, status=None, report={"failed": [(0, 0, 0)]}),
    errors.LockTimeoutError("waited", path="/c/.rbfs.lock"),
    errors.ClosedError("closed"),
    errors.ReadOnlyError("read-only"),
    errors.CacheWriteError("cannot write /c/x.h5: No space left on device", path="/c/x.h5", errno=28),
    errors.ArgumentError("mode must be 'r' or 'a'"),
]


@pytest.mark.parametrize("name,bases", TABLE.items())
def test_hierarchy_matches_the_contract(name, bases):
    cls = getattr(errors, name)
    for base in bases:
        assert issubclass(cls, base), (name, base)


def test_block_not_ready_error_is_reachable_from_the_fileset_class():
    assert BlockwiseFileset.BlockNotReadyError is errors.BlockNotReadyError
    legacy = errors.BlockNotReadyError([0, 32, 64])  # upstream's call form
    assert legacy.block_start == [0, 32, 64] and "(0, 32, 64)" in str(legacy)


def attributes(exc):
    return {name: getattr(exc, name) for name in type(exc)._fields}


@pytest.mark.parametrize("exc", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_error_pickles_with_its_attributes(exc):
    try:
        raise exc from ConnectionResetError("peer reset")
    except errors.RbfsError as raised:
        clone = pickle.loads(pickle.dumps(raised))
    assert type(clone) is type(exc) and str(clone) == str(exc)
    assert attributes(clone) == attributes(exc)
    assert clone.__cause_text__ == "ConnectionResetError: peer reset"


@pytest.mark.parametrize("exc", SAMPLES, ids=lambda e: type(e).__name__)
def test_type_of_error_rebuilt_from_the_error_keeps_everything(exc):
    # lazyflow re-raises a failed request's error as type(e)(e) when another request waits on it.
    clone = type(exc)(exc)
    assert type(clone) is type(exc) and str(clone) == str(exc)
    assert attributes(clone) == attributes(exc)


def test_unknown_attributes_are_refused():
    with pytest.raises(TypeError):
        errors.DownloadError("x", url="u", colour="red")


def test_rebuilt_error_keeps_the_original_as_its_argument():
    original = errors.DownloadError("GET u failed", url="u", status=500)
    again = errors.DownloadError(original)
    assert again.args[0] is original and again.message == "GET u failed"
    assert pickle.loads(pickle.dumps(again)).status == 500


def test_bad_arguments_raise_our_argument_error(tmp_path):
    import json

    desc = tmp_path / "d.json"
    desc.write_text(
        json.dumps(
            {
                "_schema_name": "blockwise-fileset-description",
                "_schema_version": 1.1,
                "format": "hdf5",
                "axes": "zyx",
                "shape": [4, 4, 4],
                "dtype": "uint8",
                "block_shape": [2, 2, 2],
                "block_file_name_format": "b-{roiString}.h5/cube",
            }
        )
    )
    for call in (
        lambda: BlockwiseFileset(str(desc), "w"),
        lambda: BlockwiseFileset(str(desc), max_open_files=0),
    ):
        with pytest.raises(errors.ArgumentError):
            call()
    import numpy as np

    with BlockwiseFileset(str(desc), "a") as fs:
        with pytest.raises(errors.ArgumentError):
            fs.writeData(((0, 0, 0), (2, 2, 2)), np.zeros((1, 2, 2), np.uint8))
        with pytest.raises(errors.ArgumentError):
            fs.readData(((0, 0, 0), (2, 2, 2)), np.zeros((2, 2, 2), np.uint16))
