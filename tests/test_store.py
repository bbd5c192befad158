"""Tests of lazyflow_rbfs.store.BlockwiseFileset: layout, reads, writes, locks, maintenance, export."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest

from lazyflow_rbfs import description as descmod
from lazyflow_rbfs import locks
from lazyflow_rbfs.errors import (
    BlockNotReadyError,
    CacheWriteError,
    ClosedError,
    DescriptionError,
    OutOfBoundsError,
    ReadOnlyError,
    SchemaError,
)
from lazyflow_rbfs.store import BlockwiseFileset, PathComponents, StatusSummary
from lazyflow_rbfs.store.handles import HandleCache

# ----------------------------------------------------------------------------------------------------------
# helpers

BASE = {
    "_schema_name": "blockwise-fileset-description",
    "_schema_version": 1.1,
    "name": "test-blocks",
    "format": "hdf5",
    "axes": "zyx",
    "shape": [20, 30, 40],
    "dtype": "uint16",
    "block_shape": [8, 16, 16],
    "block_file_name_format": "block-{roiString}.h5/cube",
    "dataset_root_dir": "blocks",
}


def write_desc(directory, name="desc.json", **fields):
    desc = dict(BASE)
    desc.update(fields)
    desc = {k: v for k, v in desc.items() if v is not None}
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        json.dump(desc, f)
    return path


def volume(shape, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 60000, size=shape).astype(dtype)


def fill(fs, data):
    """Write ``data`` (the whole view) and mark every block available."""
    roi = ([0] * data.ndim, list(data.shape))
    fs.writeData(roi, data)
    fs.setBlockStatusesForRoi(roi, BlockwiseFileset.BLOCK_AVAILABLE)


def disk_view(source, origin, view_shape):
    return source[tuple(slice(o, o + n) for o, n in zip(origin, view_shape))]


def files_under(directory):
    return sorted(
        os.path.relpath(os.path.join(root, f), directory)
        for root, _, files in os.walk(directory)
        for f in files
    )


def build_upstream_cache(root, source, block_shape, view_origin, view_shape, axes="zyx", dataset="cube"):
    """A cache laid out by hand the way upstream lazyflow does it: plain h5py, no package code."""
    ndim = source.ndim
    ranges = []
    for a in range(ndim):
        first = view_origin[a]
        stop = view_origin[a] + view_shape[a]
        ranges.append(range(first, stop, block_shape[a]))
    for disk_start in itertools.product(*ranges):
        disk_stop = [min(s + b, n) for s, b, n in zip(disk_start, block_shape, source.shape)]
        directory = os.path.join(root, *[f"{ax}_{s:08d}" for ax, s in zip(axes, disk_start)])
        os.makedirs(directory)
        name = f"block-({list(disk_start)}, {disk_stop}).h5"
        with h5py.File(os.path.join(directory, name), "w") as f:
            f.create_dataset(dataset, data=source[tuple(slice(a, b) for a, b in zip(disk_start, disk_stop))])
        open(os.path.join(directory, "STATUS.txt"), "w").close()


def block_fds(root):
    """Open file descriptors of this process pointing into ``root``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(root)):
            count += 1
    return count


@pytest.fixture
def desc_path(tmp_path):
    return write_desc(tmp_path / "ds")


@pytest.fixture
def filled(tmp_path):
    """A fully written fileset (no view), its source data and its description path."""
    path = write_desc(tmp_path / "ds")
    source = volume((20, 30, 40))
    with BlockwiseFileset(path, "a") as fs:
        fill(fs, source)
    return path, source


# ----------------------------------------------------------------------------------------------------------
# construction


def test_bad_mode_is_value_error(desc_path):
    with pytest.raises(ValueError, match="mode"):
        BlockwiseFileset(desc_path, "w")


def test_bad_max_open_files(desc_path):
    with pytest.raises(ValueError, match="max_open_files"):
        BlockwiseFileset(desc_path, max_open_files=0)


def test_properties_repr_and_fields(tmp_path):
    path = write_desc(tmp_path, view_origin=[8, 0, 16], view_shape=[10, 30, 20])
    with BlockwiseFileset(path) as fs:
        assert fs.shape == (10, 30, 20)
        assert fs.dtype == np.dtype("uint16")
        assert fs.axes == "zyx"
        assert fs.block_shape == (8, 16, 16)
        assert fs.mode == "r"
        assert "shape=(10, 30, 20)" in repr(fs) and "uint16" in repr(fs)
        assert fs.description.view_origin.tolist() == [8, 0, 16]
    assert "closed" in repr(fs)
    assert BlockwiseFileset.DescriptionFields is descmod.LOCAL_FIELDS
    assert BlockwiseFileset.BlockNotReadyError is BlockNotReadyError
    assert (BlockwiseFileset.BLOCK_AVAILABLE, BlockwiseFileset.BLOCK_NOT_AVAILABLE) == (1, 0)


def test_root_is_relative_to_description_not_cwd(tmp_path, monkeypatch, filled):
    path, source = filled
    monkeypatch.chdir(tmp_path)
    os.makedirs("elsewhere")
    monkeypatch.chdir("elsewhere")
    with BlockwiseFileset(os.path.relpath(path)) as fs:
        assert fs.root_directory == os.path.join(os.path.dirname(path), "blocks")
        np.testing.assert_array_equal(fs.readData(([0, 0, 0], [20, 30, 40])), source)


def test_absolute_root_stays_absolute(tmp_path):
    root = tmp_path / "abs-root"
    path = write_desc(tmp_path / "d", dataset_root_dir=str(root))
    with BlockwiseFileset(path, "a") as fs:
        assert fs.getDatasetDirectory((0, 0, 0)) == str(root / "z_00000000" / "y_00000000" / "x_00000000")


def test_preparsed_description_is_validated(tmp_path, desc_path):
    with BlockwiseFileset(
        desc_path, preparsedDescription=dict(BASE, shape=[4, 4, 4], block_shape=[2, 2, 2])
    ) as fs:
        assert fs.shape == (4, 4, 4)
    with pytest.raises(DescriptionError):
        BlockwiseFileset(desc_path, preparsedDescription=dict(BASE, block_shape=[0, 1, 1]))


def test_composite_description_is_schema_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"_schema_name": "RESTful-blockwise-fileset-description", "_schema_version": 1.0})
    )
    with pytest.raises(SchemaError):
        BlockwiseFileset(str(path))
    assert BlockwiseFileset._createAndReturnBlockwiseFileset(str(path), "r") is None


def test_read_and_write_description_round_trip(tmp_path, desc_path):
    desc = BlockwiseFileset.readDescription(desc_path)
    desc.view_shape = np.array([8, 16, 16])
    out = tmp_path / "copy.json"
    BlockwiseFileset.writeDescription(str(out), desc)
    assert BlockwiseFileset.readDescription(str(out)) == desc


# ----------------------------------------------------------------------------------------------------------
# layout


def test_hand_built_upstream_cache_reads_with_view_origin(tmp_path):
    source = volume((20, 30, 40), seed=3)
    origin, view_shape = [8, 0, 16], [12, 30, 20]
    build_upstream_cache(str(tmp_path / "blocks"), source, [8, 16, 16], origin, view_shape)
    path = write_desc(tmp_path, view_origin=origin, view_shape=view_shape)
    expected = disk_view(source, origin, view_shape)
    with BlockwiseFileset(path) as fs:
        np.testing.assert_array_equal(fs.readData(([0, 0, 0], view_shape)), expected)
        np.testing.assert_array_equal(fs.readData(([3, 5, 7], [11, 29, 19])), expected[3:11, 5:29, 7:19])
        assert fs.verify().ok


def test_hand_built_upstream_cache_reads_without_view(tmp_path):
    source = volume((20, 30, 40), seed=4)
    build_upstream_cache(str(tmp_path / "blocks"), source, [8, 16, 16], [0, 0, 0], [20, 30, 40])
    with BlockwiseFileset(write_desc(tmp_path)) as fs:
        np.testing.assert_array_equal(fs.readData(([0, 0, 0], [20, 30, 40])), source)


def test_upstream_view_clipped_stub_is_readable_inside_its_view(tmp_path):
    # Upstream stored edge blocks clipped to the VIEW. Such a file still serves reads inside the view.
    source = volume((20, 30, 40), seed=5)
    directory = tmp_path / "blocks" / "z_00000016" / "y_00000016" / "x_00000032"
    directory.mkdir(parents=True)
    with h5py.File(directory / "block-([16, 16, 32], [20, 30, 40]).h5", "w") as f:
        f.create_dataset("cube", data=source[16:18, 16:20, 32:36])  # view-clipped stub
    (directory / "STATUS.txt").touch()
    path = write_desc(tmp_path, view_origin=[0, 0, 0], view_shape=[18, 20, 36])
    with BlockwiseFileset(path) as fs:
        np.testing.assert_array_equal(fs.readData(([16, 16, 32], [18, 20, 36])), source[16:18, 16:20, 32:36])
        bad = fs.verify().bad_blocks
        assert [b.block_start for b in bad] == [(16, 16, 32)]
        assert "shape" in bad[0].reason


def test_block_and_directory_names_match_upstream_exactly(tmp_path):
    path = write_desc(tmp_path, view_origin=[8, 0, 16], view_shape=[12, 30, 24])
    root = os.path.join(str(tmp_path), "blocks")
    with BlockwiseFileset(path, "a") as fs:
        start = np.array([8, 16, 16], dtype=np.int64)  # view coordinates -> disk (16, 16, 32)
        assert fs.getDatasetDirectory(start) == root + "/z_00000016/y_00000016/x_00000032"
        parts = fs.getDatasetPathComponents(start)
        assert isinstance(parts, PathComponents)
        assert (
            parts.externalPath
            == root + "/z_00000016/y_00000016/x_00000032/block-([16, 16, 32], [20, 30, 40]).h5"
        )
        assert parts.internalPath == "/cube"
        assert parts.externalDirectory == root + "/z_00000016/y_00000016/x_00000032"
        assert parts.totalPath() == parts.externalPath + "/cube"
        first = fs.getDatasetPathComponents([np.int64(0), np.int64(0), np.int64(0)])
        assert (
            first.externalPath
            == root + "/z_00000008/y_00000000/x_00000016/block-([8, 0, 16], [16, 16, 32]).h5"
        )
        paths = fs.blocks.paths(start)
        assert paths.status_path == root + "/z_00000016/y_00000016/x_00000032/STATUS.txt"
        assert paths.lock_path == root + "/z_00000016/y_00000016/x_00000032/.rbfs.lock"
        assert paths.internal_path == "/cube"
        disk_start, disk_stop = fs.blocks.disk_roi(start)
        assert disk_start.tolist() == [16, 16, 32] and disk_stop.tolist() == [20, 30, 40]


def test_edge_blocks_hold_disk_clipped_bounds(tmp_path):
    # The view ends inside blocks; the files still hold the whole disk-clipped block.
    path = write_desc(tmp_path, view_shape=[10, 20, 20])
    source = volume((10, 20, 20))
    with BlockwiseFileset(path, "a") as fs:
        fill(fs, source)
        parts = fs.getDatasetPathComponents((8, 16, 16))
        assert os.path.basename(parts.externalPath) == "block-([8, 16, 16], [16, 30, 32]).h5"
        with h5py.File(parts.externalPath, "r") as f:
            assert f["cube"].shape == (8, 14, 16)
            np.testing.assert_array_equal(f["cube"][:2, :4, :4], source[8:10, 16:20, 16:20])
            assert not f["cube"][2:, 4:, 4:].any()  # outside the view: zeros, never garbage
        np.testing.assert_array_equal(fs.readData(([0, 0, 0], [10, 20, 20])), source)


def test_two_views_over_one_root_read_the_same_voxels(tmp_path):
    source = volume((20, 30, 40), seed=7)
    full = write_desc(tmp_path, name="full.json")
    with BlockwiseFileset(full, "a") as fs:
        fill(fs, source)
    origin, view_shape = [8, 16, 16], [12, 14, 20]
    part = write_desc(tmp_path, name="part.json", view_origin=origin, view_shape=view_shape)
    with BlockwiseFileset(part) as fs:
        np.testing.assert_array_equal(
            fs.readData(([0, 0, 0], view_shape)), disk_view(source, origin, view_shape)
        )


DIMS = [
    ("yx", [30, 40], [16, 16], [16, 0], [10, 33]),
    ("zyx", [20, 30, 40], [8, 16, 16], [8, 0, 16], [10, 30, 20]),
    ("tzyx", [3, 10, 12, 14], [2, 4, 8, 8], [2, 4, 0, 8], [1, 5, 12, 6]),
    ("tzyxc", [3, 6, 10, 12, 2], [2, 4, 4, 8, 2], [0, 4, 0, 8, 0], [3, 2, 10, 4, 2]),
]


@pytest.mark.parametrize("axes,shape,block_shape,origin,view_shape", DIMS, ids=[d[0] for d in DIMS])
def test_write_read_round_trip_with_view(tmp_path, axes, shape, block_shape, origin, view_shape):
    path = write_desc(
        tmp_path,
        axes=axes,
        shape=shape,
        block_shape=block_shape,
        view_origin=origin,
        view_shape=view_shape,
        dtype="float32",
    )
    data = volume(view_shape, np.float32, seed=len(axes))
    rng = np.random.default_rng(1)
    with BlockwiseFileset(path, "a") as fs:
        # Two overlapping, unaligned writes: read-modify-write must keep the first one's voxels.
        half = [max(1, n // 2) for n in view_shape]
        fs.writeData(([0] * len(axes), half), data[tuple(slice(0, h) for h in half)])
        lo = [n // 3 for n in view_shape]
        fs.writeData((lo, view_shape), data[tuple(slice(a, None) for a in lo)])
        rest = np.zeros(view_shape, dtype=bool)
        rest[tuple(slice(0, h) for h in half)] = True
        rest[tuple(slice(a, None) for a in lo)] = True
        if not rest.all():
            fs.writeData(([0] * len(axes), view_shape), data)
        fs.setBlockStatusesForRoi(([0] * len(axes), view_shape), fs.BLOCK_AVAILABLE)
        np.testing.assert_array_equal(fs.readData(([0] * len(axes), view_shape)), data)
        for _ in range(10):
            a = [int(rng.integers(0, n)) for n in view_shape]
            b = [int(rng.integers(x + 1, n + 1)) for x, n in zip(a, view_shape)]
            np.testing.assert_array_equal(fs.readData((a, b)), data[tuple(slice(x, y) for x, y in zip(a, b))])
        assert fs.verify().ok
    # The data sits at disk coordinates: a view-less description sees it shifted by the origin.
    whole = write_desc(
        tmp_path, name="whole.json", axes=axes, shape=shape, block_shape=block_shape, dtype="float32"
    )
    with BlockwiseFileset(whole) as fs:
        got = fs.readData((origin, [o + n for o, n in zip(origin, view_shape)]))
        np.testing.assert_array_equal(got, data)


def test_read_into_out_array_and_errors(filled):
    path, source = filled
    with BlockwiseFileset(path) as fs:
        out = np.empty((5, 20, 30), dtype=np.uint16)
        assert fs.readData(([1, 2, 3], [6, 22, 33]), out) is out
        np.testing.assert_array_equal(out, source[1:6, 2:22, 3:33])
        fortran = np.empty((5, 20, 30), dtype=np.uint16, order="F")
        fs.readData(([1, 2, 3], [6, 22, 33]), fortran)
        np.testing.assert_array_equal(fortran, source[1:6, 2:22, 3:33])
        strided = np.zeros((10, 20, 30), dtype=np.uint16)[::2]
        fs.readData(([1, 2, 3], [6, 22, 33]), strided)
        np.testing.assert_array_equal(strided, source[1:6, 2:22, 3:33])
        with pytest.raises(ValueError, match="shape"):
            fs.readData(([0, 0, 0], [2, 2, 2]), np.empty((2, 2, 3), dtype=np.uint16))
        with pytest.raises(ValueError, match="dtype"):
            fs.readData(([0, 0, 0], [2, 2, 2]), np.empty((2, 2, 2), dtype=np.float32))
        for roi in [
            ([0, 0, 0], [21, 1, 1]),
            ([-1, 0, 0], [1, 1, 1]),
            ([2, 0, 0], [2, 1, 1]),
            ([0, 0], [1, 1]),
        ]:
            with pytest.raises(OutOfBoundsError):
                fs.readData(roi)


def test_block_not_ready_error_names_view_block_start(tmp_path):
    path = write_desc(tmp_path, view_origin=[8, 0, 16], view_shape=[12, 30, 24])
    with BlockwiseFileset(path, "a") as fs:
        fs.writeData(([0, 0, 0], [8, 16, 16]), np.ones((8, 16, 16), np.uint16))
        with pytest.raises(BlockNotReadyError) as info:
            fs.readData(([0, 0, 0], [2, 2, 2]))  # written, but STATUS not set
        assert info.value.block_start == (0, 0, 0)
        fs.setBlockStatus((0, 0, 0), fs.BLOCK_AVAILABLE)
        assert fs.readData(([0, 0, 0], [2, 2, 2])).sum() == 8
        with pytest.raises(fs.BlockNotReadyError) as info:
            fs.readData(([0, 10, 10], [2, 20, 20]))
        assert info.value.block_start == (0, 0, 16)  # the first missing block, C order


def test_status_round_trip_and_validation(filled):
    path, _ = filled
    with BlockwiseFileset(path, "a") as fs:
        assert fs.getBlockStatus((8, 16, 32)) == fs.BLOCK_AVAILABLE
        fs.setBlockStatus((8, 16, 32), fs.BLOCK_NOT_AVAILABLE)
        assert fs.getBlockStatus((8, 16, 32)) == fs.BLOCK_NOT_AVAILABLE
        assert not os.path.exists(fs.blocks.paths((8, 16, 32)).status_path)
        fs.setBlockStatus((8, 16, 32), fs.BLOCK_NOT_AVAILABLE)  # idempotent
        with pytest.raises(ValueError):
            fs.setBlockStatus((8, 16, 32), 7)
        with pytest.raises(OutOfBoundsError):
            fs.getBlockStatus((1, 0, 0))  # not a block start
        with pytest.raises(OutOfBoundsError):
            fs.getBlockStatus((24, 0, 0))  # outside the view
    empty = write_desc(os.path.dirname(path), name="other.json", dataset_root_dir="other")
    with BlockwiseFileset(empty, "a") as fs:
        with pytest.raises(FileNotFoundError):
            fs.setBlockStatus((0, 0, 0), fs.BLOCK_AVAILABLE)  # no block file to vouch for


def test_read_only_and_closed_errors(filled):
    path, _ = filled
    fs = BlockwiseFileset(path)
    with pytest.raises(ReadOnlyError):
        fs.writeData(([0, 0, 0], [1, 1, 1]), np.zeros((1, 1, 1), np.uint16))
    with pytest.raises(ReadOnlyError):
        fs.setBlockStatus((0, 0, 0), fs.BLOCK_NOT_AVAILABLE)
    with pytest.raises(ReadOnlyError):
        fs.setBlockStatusesForRoi(([0, 0, 0], [1, 1, 1]), fs.BLOCK_NOT_AVAILABLE)
    fs.readData(([0, 0, 0], [20, 30, 40]))
    fs.close()
    fs.close()  # idempotent
    assert fs.closed
    for call in (
        lambda: fs.readData(([0, 0, 0], [1, 1, 1])),
        lambda: fs.getBlockStatus((0, 0, 0)),
        lambda: fs.getOpenHdf5FileForBlock((0, 0, 0)),
        lambda: fs.purgeAllLocks(),
        lambda: fs.__enter__(),
    ):
        with pytest.raises(ClosedError):
            call()
    fs.reopen("a")
    assert fs.mode == "a" and not fs.closed
    fs.writeData(([0, 0, 0], [1, 1, 1]), np.full((1, 1, 1), 9, np.uint16))
    fs.setBlockStatus((0, 0, 0), fs.BLOCK_AVAILABLE)
    assert fs.readData(([0, 0, 0], [1, 1, 1]))[0, 0, 0] == 9
    with pytest.raises(ValueError):
        fs.reopen("w")
    fs.close()


def test_write_is_atomic_clears_status_and_leaves_no_temp_or_lock(filled):
    path, source = filled
    with BlockwiseFileset(path, "a") as fs:
        fs.writeData(([1, 1, 1], [3, 3, 3]), np.full((2, 2, 2), 7, np.uint16))
        assert fs.getBlockStatus((0, 0, 0)) == fs.BLOCK_NOT_AVAILABLE
        assert fs.getBlockStatus((0, 0, 16)) == fs.BLOCK_AVAILABLE
        fs.setBlockStatus((0, 0, 0), fs.BLOCK_AVAILABLE)
        expected = source.copy()
        expected[1:3, 1:3, 1:3] = 7
        np.testing.assert_array_equal(fs.readData(([0, 0, 0], [20, 30, 40])), expected)
        leftovers = [f for f in files_under(fs.root_directory) if f.endswith((".partial", ".lock"))]
        assert leftovers == []


def test_failed_write_keeps_the_old_block_and_no_temp(filled, monkeypatch):
    path, source = filled
    with BlockwiseFileset(path, "a") as fs:

        def broken(*args, **kwargs):
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(fs.blocks.files, "create_dataset", broken)
        with pytest.raises(RuntimeError, match="disk on fire"):
            fs.writeData(([0, 0, 0], [2, 2, 2]), np.zeros((2, 2, 2), np.uint16))
        monkeypatch.undo()
        assert not [f for f in files_under(fs.root_directory) if f.endswith(".partial")]
        with h5py.File(fs.blocks.paths((0, 0, 0)).file_path, "r") as f:
            np.testing.assert_array_equal(f["cube"][()], source[:8, :16, :16])
        assert not fs.isBlockLocked((0, 0, 0))


def test_write_data_shape_must_match(desc_path):
    with BlockwiseFileset(desc_path, "a") as fs:
        with pytest.raises(ValueError, match="shape"):
            fs.writeData(([0, 0, 0], [2, 2, 2]), np.zeros((2, 2, 3), np.uint16))


def test_dataset_creation_honours_description(tmp_path):
    path = write_desc(
        tmp_path,
        chunks=[4, 100, 8],
        compression="gzip",
        compression_opts=3,
        drange=[0, 1000],
        view_shape=[20, 30, 40],
    )
    with BlockwiseFileset(path, "a") as fs:
        fs.writeData(([16, 16, 32], [20, 30, 40]), np.ones((4, 14, 8), np.uint16))
        with h5py.File(fs.blocks.paths((16, 16, 32)).file_path, "r") as f:
            ds = f["cube"]
            assert ds.shape == (4, 14, 8)
            assert ds.chunks == (4, 14, 8)  # clipped to the block
            assert ds.compression == "gzip" and ds.compression_opts == 3
            assert tuple(ds.attrs["drange"]) == (0, 1000)
            try:
                import vigra  # noqa: F401
            except ImportError:
                assert "axistags" not in ds.attrs
            else:
                assert "axistags" in ds.attrs


def test_iter_block_starts_and_block_rois(tmp_path):
    path = write_desc(tmp_path, view_origin=[8, 0, 16], view_shape=[10, 30, 20])
    with BlockwiseFileset(path) as fs:
        starts = fs.iterBlockStarts()
        assert iter(starts) is starts  # a generator, not a list
        assert list(starts) == [(z, y, x) for z in (0, 8) for y in (0, 16) for x in (0, 16)]
        assert list(fs.iterBlockStarts(([9, 17, 1], [10, 18, 2]))) == [(8, 16, 0)]
        rois = fs.getAllBlockRois()
        assert isinstance(rois, list) and len(rois) == 8
        start, stop = fs.getEntireBlockRoi((8, 16, 16))
        assert start.tolist() == [8, 16, 16] and stop.tolist() == [10, 30, 20]  # view-clipped


def test_publish_block_hook(tmp_path):
    path = write_desc(tmp_path, view_shape=[10, 20, 20])
    with BlockwiseFileset(path) as fs:  # read-only mode: the cache layer publishes through the hook
        block = np.arange(8 * 14 * 16, dtype=np.uint16).reshape(8, 14, 16)
        with pytest.raises(ValueError, match="disk-clipped"):
            fs.blocks.publish((8, 16, 16), block[:2, :4, :4])
        with fs.blocks.lock((8, 16, 16)):
            assert fs.isBlockLocked((8, 16, 16))
            fs.blocks.publish((8, 16, 16), block)
        assert not fs.isBlockLocked((8, 16, 16))
        assert fs.getBlockStatus((8, 16, 16)) == fs.BLOCK_AVAILABLE
        np.testing.assert_array_equal(fs.readData(([8, 16, 16], [10, 20, 20])), block[:2, :4, :4])
        out = np.zeros((2, 4, 4), np.uint16)
        fs.blocks.read_into(np.array([8, 16, 16]), np.array([10, 20, 20]), out)
        np.testing.assert_array_equal(out, block[:2, :4, :4])
        assert files_under(fs.root_directory) == [
            "z_00000008/y_00000016/x_00000016/STATUS.txt",
            "z_00000008/y_00000016/x_00000016/block-([8, 16, 16], [16, 30, 32]).h5",
        ]


# ----------------------------------------------------------------------------------------------------------
# handles and threads


def test_handle_cache_is_bounded(tmp_path):
    # Compressed blocks: reads go through HDF5 handles (contiguous ones are read with pread, see below).
    path = write_desc(tmp_path, shape=[10, 10, 20], block_shape=[2, 2, 10], compression="gzip")  # 50 blocks
    source = volume((10, 10, 20))
    with BlockwiseFileset(path, "a") as fs:
        fill(fs, source)
    root = tmp_path / "blocks"
    assert block_fds(root) == 0
    fs = BlockwiseFileset(path, max_open_files=4)
    seen = 0
    for start in fs.iterBlockStarts():
        stop = [s + b for s, b in zip(start, fs.block_shape)]
        np.testing.assert_array_equal(fs.readData((start, stop)), source[tuple(map(slice, start, stop))])
        assert fs.blocks.handles.open_count <= 4
        assert block_fds(root) <= 4
        seen += 1
    assert seen == 50
    assert fs.blocks.handles.open_count == 4 and block_fds(root) == 4
    np.testing.assert_array_equal(fs.readData(([0, 0, 0], [10, 10, 20])), source)  # one read, 50 blocks
    assert block_fds(root) <= 4
    handle = fs.getOpenHdf5FileForBlock((0, 0, 0))
    assert "cube" in handle
    fs.close()
    assert fs.blocks.handles.open_count == 0
    assert block_fds(root) == 0
    assert not handle.id.valid


class _SignallingCondition(threading.Condition):
    """A condition that announces when a thread starts waiting on it."""

    def __init__(self):
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout=None):
        self.waiting.set()
        return super().wait(timeout)


def test_contiguous_blocks_are_read_without_holding_a_file_open(tmp_path):
    # Blocks this package wrote contiguous are read with pread (store/rawread.py): no HDF5 handle is
    # opened or kept, and no descriptor of a block file stays open after a read.
    path = write_desc(tmp_path, shape=[10, 10, 20], block_shape=[2, 2, 10])
    source = volume((10, 10, 20))
    with BlockwiseFileset(path, "a") as fs:
        fill(fs, source)
    root = tmp_path / "blocks"
    with BlockwiseFileset(path, max_open_files=4) as fs:
        for start in fs.iterBlockStarts():
            stop = [s + b for s, b in zip(start, fs.block_shape)]
            np.testing.assert_array_equal(fs.readData((start, stop)), source[tuple(map(slice, start, stop))])
        np.testing.assert_array_equal(fs.readData(([1, 3, 5], [9, 10, 17])), source[1:9, 3:10, 5:17])
        out = np.zeros((10, 10, 20), np.uint16)
        fs.readData(([0, 0, 0], [10, 10, 20]), out_array=out)
        np.testing.assert_array_equal(out, source)
        assert fs.blocks.handles.open_count == 0
        assert block_fds(root) == 0


def test_pinned_handle_is_never_closed_by_eviction(filled):
    path, source = filled
    with BlockwiseFileset(path) as fs:
        first, second = fs.blocks.paths((0, 0, 0)), fs.blocks.paths((0, 0, 16))
    cond = _SignallingCondition()
    handles = HandleCache(1, condition=cond)  # one slot; the condition tells when a reader waits
    entry = handles.acquire(first.file_path)
    result = {}

    def reader():
        other = handles.acquire(second.file_path)
        try:
            result["data"] = other.dataset(second.internal_path)[()]
        finally:
            handles.release(other)

    thread = threading.Thread(target=reader)
    thread.start()
    assert cond.waiting.wait(30), "the second reader should wait for a free slot"
    # The other thread wants a slot, yet our pinned handle stays open and usable.
    assert entry.file.id.valid
    np.testing.assert_array_equal(entry.dataset(first.internal_path)[()], source[:8, :16, :16])
    assert handles.open_count == 1
    handles.release(entry)
    thread.join(30)
    assert not thread.is_alive()
    np.testing.assert_array_equal(result["data"], source[:8, :16, 16:32])
    assert entry.file is None  # evicted once unpinned
    assert handles.open_count == 1
    handles.close_all()
    assert handles.open_count == 0


def test_close_while_pinned_defers_the_close(filled):
    path, _ = filled
    fs = BlockwiseFileset(path)
    paths = fs.blocks.paths((0, 0, 0))
    entry = fs.blocks.handles.acquire(paths.file_path)
    fs.close()
    assert entry.file.id.valid and fs.blocks.handles.open_count == 1
    fs.blocks.handles.release(entry)
    assert entry.file is None and fs.blocks.handles.open_count == 0


def test_replaced_block_file_is_reopened(filled):
    path, source = filled
    with BlockwiseFileset(path) as fs:
        np.testing.assert_array_equal(fs.readData(([0, 0, 0], [8, 16, 16])), source[:8, :16, :16])
        target = fs.blocks.paths((0, 0, 0)).file_path
        temp = target + ".by-hand"
        with h5py.File(temp, "w") as f:
            f.create_dataset("cube", data=np.full((8, 16, 16), 5, np.uint16))
        os.replace(temp, target)  # as another process publishing a new version would
        assert (fs.readData(([0, 0, 0], [8, 16, 16])) == 5).all()


def test_concurrent_reads_from_eight_threads(filled):
    path, source = filled
    rng = np.random.default_rng(11)
    rois = []
    for _ in range(200):
        a = [int(rng.integers(0, n)) for n in source.shape]
        b = [int(rng.integers(x + 1, n + 1)) for x, n in zip(a, source.shape)]
        rois.append((a, b))
    with BlockwiseFileset(path, max_open_files=3) as fs:

        def check(roi):
            got = fs.readData(roi)
            return np.array_equal(got, source[tuple(map(slice, *roi))])

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(check, rois))
        assert all(results)
        assert fs.blocks.handles.open_count <= 3


# ----------------------------------------------------------------------------------------------------------
# locks

HOLDER = """
import sys
from lazyflow_rbfs.locks import BlockLock
lock = BlockLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
"""


def test_is_block_locked_by_another_process_and_after_sigkill(filled):
    path, _ = filled
    with BlockwiseFileset(path) as fs:
        assert not fs.isBlockLocked((8, 16, 16))
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, fs.blocks.paths((8, 16, 16)).lock_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "held"
            assert fs.isBlockLocked((8, 16, 16))
            assert not fs.isBlockLocked((0, 0, 0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            assert not fs.isBlockLocked((8, 16, 16))
        finally:
            proc.kill()
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()


def test_is_block_locked_by_another_thread(filled):
    path, _ = filled
    with BlockwiseFileset(path) as fs:
        held, done = threading.Event(), threading.Event()

        def hold():
            with fs.blocks.lock((0, 0, 16)):
                held.set()
                done.wait(30)

        thread = threading.Thread(target=hold)
        thread.start()
        assert held.wait(30)
        assert fs.isBlockLocked((0, 0, 16))
        done.set()
        thread.join(30)
        assert not fs.isBlockLocked((0, 0, 16))


def test_purge_all_locks_removes_stale_files_only(filled):
    path, source = filled
    with BlockwiseFileset(path) as fs:
        stale = [
            fs.blocks.paths((0, 0, 0)).file_path + ".lock",  # upstream FileLock leftovers
            fs.blocks.paths((8, 16, 32)).file_path + ".lock",
            fs.blocks.paths((0, 16, 0)).file_path + ".4242.deadbeef.partial",  # a killed process's temp
        ]
        for p in stale:
            open(p, "w").close()
        live = fs.blocks.paths((16, 0, 0)).file_path + ".99.cafe.partial"
        open(live, "w").close()
        unrelated = os.path.join(fs.blocks.paths((0, 0, 0)).directory, "notes.txt")
        open(unrelated, "w").close()
        holder = locks.BlockLock(fs.blocks.paths((16, 0, 0)).lock_path)  # a live writer of that block
        holder.acquire()
        try:
            assert fs.purgeAllLocks() == 3
        finally:
            holder.release()
        assert not any(os.path.exists(p) for p in stale)
        assert os.path.exists(live) and os.path.exists(unrelated)
        np.testing.assert_array_equal(fs.readData(([0, 0, 0], [20, 30, 40])), source)
        assert fs.purgeAllLocks() == 1  # the writer is gone now: its temp file is stale
        assert fs.purgeAllLocks() == 0


# ----------------------------------------------------------------------------------------------------------
# summary and verify


def test_status_summary(tmp_path):
    path = write_desc(tmp_path, view_origin=[8, 0, 0], view_shape=[12, 30, 40])  # 2*2*3 = 12 blocks
    with BlockwiseFileset(path, "a") as fs:
        fs.writeData(([0, 0, 0], [8, 16, 16]), np.ones((8, 16, 16), np.uint16))
        fs.setBlockStatus((0, 0, 0), fs.BLOCK_AVAILABLE)
        fs.writeData(([0, 0, 16], [8, 16, 32]), np.ones((8, 16, 16), np.uint16))
        fs.setBlockStatus((0, 0, 16), fs.BLOCK_AVAILABLE)
        fs.writeData(([8, 16, 32], [12, 30, 40]), np.ones((4, 14, 8), np.uint16))  # written, not marked
        temp_only = fs.blocks.paths((8, 0, 0))
        os.makedirs(temp_only.directory)
        open(temp_only.file_path + ".1.ab.partial", "w").close()
        os.makedirs(fs.blocks.paths((0, 16, 0)).directory)  # an empty directory is just missing
        size = sum(os.path.getsize(fs.blocks.paths(s).file_path) for s in [(0, 0, 0), (0, 0, 16)])
        summary = fs.statusSummary()
        assert summary == StatusSummary(total=12, available=2, partial=2, missing=8, available_bytes=size)
        sub = fs.statusSummary(([0, 0, 0], [8, 16, 20]))
        assert (sub.total, sub.available, sub.partial, sub.missing) == (2, 2, 0, 0)


@pytest.mark.timeout(60)
def test_status_summary_streams_over_a_million_blocks(tmp_path):
    path = write_desc(tmp_path, shape=[100, 100, 100], block_shape=[1, 1, 1], dtype="uint8")
    with BlockwiseFileset(path, "a") as fs:
        fs.writeData(([5, 6, 7], [6, 7, 8]), np.ones((1, 1, 1), np.uint8))
        fs.setBlockStatus((5, 6, 7), fs.BLOCK_AVAILABLE)
        summary = fs.statusSummary()
        assert (summary.total, summary.available, summary.missing) == (1_000_000, 1, 999_999)


def test_verify_and_repair(filled):
    path, source = filled
    with BlockwiseFileset(path) as fs:
        assert fs.verify().ok and fs.verify().checked == 18
        missing = fs.blocks.paths((0, 0, 0))
        os.remove(missing.file_path)
        garbage = fs.blocks.paths((0, 0, 16))
        with open(garbage.file_path, "wb") as f:
            f.write(b"not hdf5 at all")
        wrong_shape = fs.blocks.paths((0, 16, 0))
        with h5py.File(wrong_shape.file_path, "w") as f:
            f.create_dataset("cube", data=np.zeros((8, 14, 15), np.uint16))
        wrong_dtype = fs.blocks.paths((8, 0, 0))
        with h5py.File(wrong_dtype.file_path, "w") as f:
            f.create_dataset("cube", data=np.zeros((8, 16, 16), np.float64))
        stray = fs.blocks.paths((16, 16, 32)).file_path + ".77.abcd.partial"
        open(stray, "w").close()

        report = fs.verify()
        assert not report.ok and report.checked == 18
        bad = {b.block_start: b.reason for b in report.bad_blocks}
        assert set(bad) == {(0, 0, 0), (0, 0, 16), (0, 16, 0), (8, 0, 0)}
        assert "missing" in bad[(0, 0, 0)] and "unreadable" in bad[(0, 0, 16)]
        assert "shape" in bad[(0, 16, 0)] and "dtype" in bad[(8, 0, 0)]
        assert report.stray_partials == [stray]
        assert os.path.exists(stray)  # reporting does not delete

        assert fs.verify(roi=([0, 0, 0], [8, 16, 16])).checked == 1
        repaired = fs.verify(repair=True)
        assert repaired.repaired and stray in repaired.removed
        for paths in (missing, garbage, wrong_shape, wrong_dtype):
            assert not os.path.exists(paths.status_path) and not os.path.exists(paths.file_path)
        assert not os.path.exists(stray)
        after = fs.verify()
        assert after.ok and after.checked == 14
        np.testing.assert_array_equal(fs.readData(([8, 16, 16], [20, 30, 40])), source[8:, 16:, 16:])
        with pytest.raises(BlockNotReadyError):
            fs.readData(([0, 0, 0], [1, 1, 1]))


# ----------------------------------------------------------------------------------------------------------
# export


def test_export_roi_to_hdf5(tmp_path):
    source = volume((20, 30, 40), seed=9)
    path = write_desc(tmp_path / "src", view_origin=[8, 0, 16], view_shape=[12, 30, 24])
    view = disk_view(source, [8, 0, 16], [12, 30, 24])
    with BlockwiseFileset(path, "a") as fs:
        fill(fs, view)
        out_dir = tmp_path / "out"
        result = fs.exportRoiToHdf5(([1, 2, 3], [11, 25, 20]), str(out_dir))
        assert result == str(out_dir / "block-([9, 2, 19], [19, 25, 36]).h5") + "/cube"
        with h5py.File(out_dir / "block-([9, 2, 19], [19, 25, 36]).h5", "r") as f:
            np.testing.assert_array_equal(f["cube"][()], view[1:11, 2:25, 3:20])
        same = fs.exportRoiToHdf5(([9, 2, 19], [19, 25, 36]), str(out_dir), use_view_coordinates=False)
        assert same == result
        assert os.listdir(out_dir) == ["block-([9, 2, 19], [19, 25, 36]).h5"]
        with pytest.raises(OutOfBoundsError):
            fs.exportRoiToHdf5(([0, 0, 0], [1, 1, 1]), str(out_dir), use_view_coordinates=False)


def test_failed_export_roi_leaves_nothing(tmp_path):
    path = write_desc(tmp_path / "src")
    with BlockwiseFileset(path, "a") as fs:
        fs.writeData(([0, 0, 0], [8, 16, 16]), np.ones((8, 16, 16), np.uint16))
        fs.setBlockStatus((0, 0, 0), fs.BLOCK_AVAILABLE)
        out_dir = tmp_path / "out"
        with pytest.raises(BlockNotReadyError):
            fs.exportRoiToHdf5(([0, 0, 0], [8, 16, 20]), str(out_dir))  # second block is missing
        assert not out_dir.exists()
        out_dir.mkdir()
        with pytest.raises(BlockNotReadyError):
            fs.exportRoiToHdf5(([0, 0, 0], [8, 16, 20]), str(out_dir))
        assert os.listdir(out_dir) == []


def test_export_subset_is_self_contained(tmp_path):
    source = volume((20, 30, 40), seed=12)
    src_dir = tmp_path / "src"
    path = write_desc(src_dir, view_origin=[8, 0, 0], view_shape=[12, 30, 40], hash_id="abc")
    view = disk_view(source, [8, 0, 0], [12, 30, 40])
    with BlockwiseFileset(path, "a") as fs:
        fill(fs, view)
        # leftovers that must never be exported
        open(fs.blocks.paths((8, 16, 16)).file_path + ".lock", "w").close()
        open(fs.blocks.paths((8, 16, 16)).file_path + ".5.ab.partial", "w").close()
        open(fs.blocks.paths((8, 16, 16)).lock_path, "w").close()
        fs.setBlockStatus((8, 0, 0), fs.BLOCK_NOT_AVAILABLE)  # not available: not exported
    out_dir = tmp_path / "out"
    with BlockwiseFileset(path) as fs:
        with pytest.raises(OutOfBoundsError):
            fs.exportSubset(([1, 0, 0], [12, 30, 40]), str(out_dir))
        with pytest.raises(OutOfBoundsError):
            fs.exportSubset(([0, 0, 0], [12, 30, 20]), str(out_dir))
        assert not out_dir.exists()
        new_path = fs.exportSubset(([8, 16, 16], [12, 30, 40]), str(out_dir))
    assert new_path == str(out_dir / "desc.json")
    exported = files_under(out_dir)
    assert exported == [
        "blocks/z_00000016/y_00000016/x_00000016/STATUS.txt",
        "blocks/z_00000016/y_00000016/x_00000016/block-([16, 16, 16], [20, 30, 32]).h5",
        "blocks/z_00000016/y_00000016/x_00000032/STATUS.txt",
        "blocks/z_00000016/y_00000016/x_00000032/block-([16, 16, 32], [20, 30, 40]).h5",
        "desc.json",
    ]
    desc = json.loads((out_dir / "desc.json").read_text())
    assert desc["_schema_name"] == "blockwise-fileset-description"
    assert desc["view_shape"] == [12, 30, 40] and desc["view_origin"] == [8, 0, 0]
    assert desc["dataset_root_dir"] == "blocks" and "hash_id" not in desc
    shutil.rmtree(src_dir)
    with BlockwiseFileset(new_path) as fs:
        np.testing.assert_array_equal(fs.readData(([8, 16, 16], [12, 30, 40])), view[8:, 16:, 16:])
        with pytest.raises(BlockNotReadyError):
            fs.readData(([0, 0, 0], [1, 1, 1]))


def test_export_subset_with_absolute_root_and_disk_coordinates(tmp_path):
    source = volume((20, 30, 40), seed=13)
    root = tmp_path / "somewhere" / "cache-root"
    path = write_desc(tmp_path / "src", dataset_root_dir=str(root))
    with BlockwiseFileset(path, "a") as fs:
        fill(fs, source)
        new_path = fs.exportSubset(
            ([0, 0, 0], [8, 16, 16]), str(tmp_path / "out"), use_view_coordinates=False
        )
    with open(new_path) as f:
        desc = json.load(f)
    assert desc["dataset_root_dir"] == "cache-root" and desc["view_shape"] == [8, 16, 16]
    shutil.rmtree(root)
    with BlockwiseFileset(new_path) as fs:
        np.testing.assert_array_equal(fs.readData(([0, 0, 0], [8, 16, 16])), source[:8, :16, :16])


def test_failed_export_subset_leaves_nothing(filled, tmp_path, monkeypatch):
    path, _ = filled
    calls = []
    real_replace = os.replace

    def flaky_replace(src, dst, *args, **kwargs):
        # The third block file copied fails as it is renamed into place.
        if str(dst).endswith(".h5"):
            calls.append(dst)
            if len(calls) == 3:
                raise OSError(28, "disk full")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", flaky_replace)
    out_dir = tmp_path / "out"
    with BlockwiseFileset(path) as fs:
        with pytest.raises(CacheWriteError, match="disk full"):
            fs.exportSubset(([0, 0, 0], [20, 30, 40]), str(out_dir))
    assert len(calls) == 3
    assert not out_dir.exists()


def test_get_open_hdf5_file_for_block(filled):
    path, source = filled
    with BlockwiseFileset(path) as fs:
        fs.readData(([0, 0, 0], [1, 1, 1]))  # leaves a cached read handle on the block
        handle = fs.getOpenHdf5FileForBlock((0, 0, 0))
        assert handle.mode == "r"
        np.testing.assert_array_equal(handle["cube"][()], source[:8, :16, :16])
        assert fs.getOpenHdf5FileForBlock((0, 0, 0)) is handle
    assert not handle.id.valid
    with BlockwiseFileset(path, "a") as fs:
        fs.readData(([0, 0, 0], [1, 1, 1]))
        writable = fs.getOpenHdf5FileForBlock((0, 0, 0))
        assert writable.mode == "r+"
        writable["cube"][0, 0, 0] = 4321
        writable.flush()
        assert fs.readData(([0, 0, 0], [1, 1, 1]))[0, 0, 0] == 4321
    assert not writable.id.valid


def test_handles_given_out_share_the_open_file_budget(tmp_path):
    desc = write_desc(tmp_path, shape=[6, 6, 6], dtype="uint8", block_shape=[1, 2, 2])
    root = tmp_path / "blocks"
    data = np.arange(216, dtype=np.uint8).reshape(6, 6, 6)
    with BlockwiseFileset(desc, "a", max_open_files=8) as fs:
        fs.writeData(((0, 0, 0), (6, 6, 6)), data)
        fs.setBlockStatusesForRoi(((0, 0, 0), (6, 6, 6)), fs.BLOCK_AVAILABLE)
    with BlockwiseFileset(desc, "r", max_open_files=8) as fs:
        np.testing.assert_array_equal(fs.readData(((0, 0, 0), (6, 6, 6))), data)  # fills the read cache
        handles = [fs.getOpenHdf5FileForBlock(b) for b in fs.iterBlockStarts()]  # 54 blocks
        assert block_fds(root) <= 8
        last = handles[-1]
        assert last.id.valid and last["/cube"].shape == (1, 2, 2)
        assert fs.getOpenHdf5FileForBlock((5, 4, 4)) is last  # the same handle while it is kept
        assert not handles[0].id.valid  # the least recently requested one was closed for room
        np.testing.assert_array_equal(fs.readData(((0, 0, 0), (6, 6, 6))), data)
        assert block_fds(root) <= 8
    assert block_fds(root) == 0
    with BlockwiseFileset(desc, "r", max_open_files=1) as fs:  # after close the budget is whole again
        fs.getOpenHdf5FileForBlock((0, 0, 0))
        fs.close()
        fs.reopen("r")
        fs.getOpenHdf5FileForBlock((0, 0, 0))
        np.testing.assert_array_equal(fs.readData(((0, 0, 0), (1, 2, 2))), data[:1, :2, :2])
