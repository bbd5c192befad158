"""Reading a contiguous dataset at its offset once its file was validated (issue 13).

Block files (store/rawread.py): only files that are byte for byte what this package writes are read with
pread; any other file is read through HDF5, with the same data or the same errors as before. HDF5 response
bodies (remote/codecs/hdf5.py): a body laid out byte for byte like one already decoded in full is read at
the same offset; any other body is decoded (and checked) in full.
"""

from __future__ import annotations

import io
import json
import os

import h5py
import numpy as np
import pytest

from lazyflow_rbfs import BlockwiseFileset
from lazyflow_rbfs.errors import BlockNotReadyError, InvalidResponseError
from lazyflow_rbfs.remote import codecs
from lazyflow_rbfs.remote.codecs.base import Expected

DESC = {
    "_schema_name": "blockwise-fileset-description",
    "_schema_version": 1.1,
    "name": "raw-read",
    "format": "hdf5",
    "axes": "zyx",
    "shape": [8, 12, 20],
    "dtype": "uint16",
    "block_shape": [4, 6, 10],
    "block_file_name_format": "block-{roiString}.h5/grp/cube",
    "dataset_root_dir": "blocks",
}
SHAPE = tuple(DESC["shape"])


@pytest.fixture
def filled(tmp_path):
    path = tmp_path / "desc.json"
    path.write_text(json.dumps(DESC))
    source = np.random.default_rng(3).integers(0, 60000, size=SHAPE).astype(np.uint16)
    roi = ([0, 0, 0], list(SHAPE))
    with BlockwiseFileset(str(path), "a") as fs:
        fs.writeData(roi, source)
        fs.setBlockStatusesForRoi(roi, BlockwiseFileset.BLOCK_AVAILABLE)
        paths = fs.blocks.paths((0, 0, 0))
    return str(path), source, paths


def _replace(file_path: str, build) -> None:
    """Replace the block file with a new one (a new inode, as a repair or another program would)."""
    temp = file_path + ".new"
    with h5py.File(temp, "w") as f:
        build(f)
    os.replace(temp, file_path)


def test_blocks_written_here_are_read_without_hdf5_and_any_roi_is_right(filled):
    path, source, _ = filled
    with BlockwiseFileset(path) as fs:
        rng = np.random.default_rng(0)
        for _ in range(40):
            start = [int(rng.integers(0, s)) for s in SHAPE]
            stop = [int(rng.integers(a + 1, s + 1)) for a, s in zip(start, SHAPE)]
            want = source[tuple(slice(a, b) for a, b in zip(start, stop))]
            np.testing.assert_array_equal(fs.readData((start, stop)), want)
            out = np.zeros(want.shape, np.uint16)
            fs.readData((start, stop), out_array=out)
            np.testing.assert_array_equal(out, want)
        assert fs.blocks.handles.open_count == 0  # not one HDF5 file was opened


def test_a_block_file_with_other_metadata_is_read_through_hdf5(filled):
    path, source, paths = filled
    block = source[:4, :6, :10]

    def build(f: h5py.File) -> None:
        f.create_dataset("grp/cube", data=block, chunks=(2, 3, 5))  # chunked: not our contiguous layout
        f["grp/cube"].attrs["note"] = "written by another program"

    _replace(paths.file_path, build)
    with BlockwiseFileset(path) as fs:
        np.testing.assert_array_equal(fs.readData(([0, 0, 0], list(SHAPE))), source)
        assert fs.blocks.handles.open_count == 1  # that one block went through HDF5


def test_a_file_whose_metadata_was_damaged_is_not_trusted(filled):
    path, _, paths = filled
    with open(paths.file_path, "r+b") as f:  # same size, voxels untouched, the HDF5 signature broken
        f.write(b"XX")
    with BlockwiseFileset(path) as fs, pytest.raises(BlockNotReadyError, match="unreadable"):
        fs.readData(([0, 0, 0], [4, 6, 10]))


def test_a_block_file_with_another_shape_is_read_through_hdf5(filled):
    # An upstream stub clipped differently: same name, a smaller dataset; HDF5 reports what it holds.
    path, source, paths = filled
    _replace(paths.file_path, lambda f: f.create_dataset("grp/cube", data=source[:4, :6, :5]))
    with BlockwiseFileset(path) as fs:
        got = fs.readData(([0, 0, 0], [4, 6, 5]))
    np.testing.assert_array_equal(got, source[:4, :6, :5])


def test_a_file_changed_after_it_was_trusted_is_checked_again(filled):
    path, source, paths = filled
    with BlockwiseFileset(path) as fs:
        np.testing.assert_array_equal(fs.readData(([0, 0, 0], [4, 6, 10])), source[:4, :6, :10])
        # Rewritten in place with the same size (a new mtime): its metadata no longer matches.
        with open(paths.file_path, "r+b") as f:
            f.write(b"XX")
        os.utime(paths.file_path, ns=(1, 1))
        with pytest.raises(BlockNotReadyError):
            fs.readData(([0, 0, 0], [4, 6, 10]))


# ---------------------------------------------------------------------------------------------------------
# HDF5 bodies laid out like one already decoded in full (remote/codecs/hdf5.py, _KnownLayout)


def _body(data: np.ndarray, note: int = 0) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("data", data=data)
        f["data"].attrs["note"] = note
    return buffer.getvalue()


def _expected(shape, url: str = "http://example.invalid/cutout") -> Expected:
    return Expected(url=url, shape=tuple(shape), dtype=np.dtype(np.uint16), dataset="data")


def test_a_body_laid_out_like_a_decoded_one_is_read_at_its_offset():
    rng = np.random.default_rng(9)
    first, second = (rng.integers(0, 60000, size=(5, 7, 9)).astype(np.uint16) for _ in range(2))
    expected = _expected(first.shape)
    got = codecs.decode("hdf5", _body(first), expected)  # in full, through HDF5: the layout is learnt
    np.testing.assert_array_equal(got, first)
    got = codecs.decode("hdf5", _body(second), expected)
    np.testing.assert_array_equal(got, second)
    assert not got.flags.writeable  # a view on the body: it was not decoded through HDF5 again


def test_a_body_whose_metadata_differ_is_decoded_in_full():
    rng = np.random.default_rng(10)
    first, second = (rng.integers(0, 60000, size=(4, 6, 8)).astype(np.uint16) for _ in range(2))
    expected = _expected(first.shape)
    codecs.decode("hdf5", _body(first, note=1), expected)
    other = _body(second, note=2)  # same length, one attribute value differs
    assert len(other) == len(_body(first, note=1))
    got = codecs.decode("hdf5", other, expected)
    np.testing.assert_array_equal(got, second)
    assert got.flags.writeable  # decoded by HDF5, not taken at the learnt offset


def test_a_damaged_body_of_a_known_layout_is_still_refused():
    data = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    expected = _expected(data.shape)
    body = _body(data)
    codecs.decode("hdf5", body, expected)
    damaged = b"XX" + body[2:]  # the HDF5 signature broken, same length
    with pytest.raises(InvalidResponseError):
        codecs.decode("hdf5", damaged, expected)
