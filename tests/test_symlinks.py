"""Symbolic links planted in the cache tree: never written through, never followed out of the root.

Each test plants one kind of link (a block directory, ``STATUS.txt``, a block file, the lock file) that
leads outside the cache root, and checks that nothing outside is created, modified or truncated, that
reads never return outside data, and that ``verify`` reports the link and ``verify --repair`` removes it
(never its target).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from lazyflow_rbfs import cli
from lazyflow_rbfs.cache import RESTfulBlockwiseFileset
from lazyflow_rbfs.errors import BlockNotReadyError, CacheWriteError
from lazyflow_rbfs.store import BlockwiseFileset
from lazyflow_rbfs.testing.pytest_plugin import SAMPLE_BLOCK, SAMPLE_SHAPE

FIRST = (0, 0, 0)
FIRST_ROI = ([0, 0, 0], list(SAMPLE_BLOCK))
WHOLE = ([0, 0, 0], list(SAMPLE_SHAPE))


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``directory`` with its bytes and mtime (links not followed)."""
    found = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[path] = (f.read(), os.stat(path).st_mtime_ns)
    return found


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the cache root, holding a precious file."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "precious.txt").write_bytes(b"do not touch\n")
    return path


def _block_dir(fs: BlockwiseFileset, block_start=FIRST) -> Path:
    return Path(fs.getDatasetDirectory(block_start))


def _block_file(fs: BlockwiseFileset, block_start=FIRST) -> Path:
    return Path(fs.getDatasetPathComponents(block_start).externalPath)


def _plant_dir_link(fs: BlockwiseFileset, target: Path, block_start=FIRST) -> Path:
    link = _block_dir(fs, block_start)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    return link


def _outside_hdf5(path: Path, dataset: str, shape, dtype, value: int) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=np.full(shape, value, dtype=dtype))
    return path


# ---------------------------------------------------------------------------------------------------------
# block directory links


def test_block_directory_link_is_never_written_through(composite_description_path, outside, tmp_path):
    before = _snapshot(outside)
    with RESTfulBlockwiseFileset(composite_description_path) as fs:
        link = _plant_dir_link(fs, outside)
        with pytest.raises(CacheWriteError) as info:
            fs.readData(FIRST_ROI)
        assert info.value.errno == errno.ELOOP and info.value.path == str(link)
        assert "verify --repair" in str(info.value)
        # Other blocks are unaffected.
        np.testing.assert_array_equal(fs.readData(([8, 0, 0], [16, 16, 16])).shape, (8, 16, 16))
    assert _snapshot(outside) == before and sorted(os.listdir(outside)) == ["precious.txt"]

    with BlockwiseFileset(
        str(composite_description_path), "a", preparsedDescription=fs.localDescription
    ) as local:
        with pytest.raises(CacheWriteError):
            local.writeData(FIRST_ROI, np.zeros(SAMPLE_BLOCK, np.uint8))
        with pytest.raises(CacheWriteError):
            local.setBlockStatus(FIRST, local.BLOCK_NOT_AVAILABLE)
    assert _snapshot(outside) == before and sorted(os.listdir(outside)) == ["precious.txt"]


def test_block_directory_link_to_a_complete_outside_block_is_never_read(
    composite_description_path, outside, sample_array
):
    with RESTfulBlockwiseFileset(composite_description_path) as fs:
        # Outside the root: a complete, valid-looking block of the right shape, dtype and name, all 7s.
        internal = fs.getDatasetPathComponents(FIRST).internalPath
        _outside_hdf5(outside / _block_file(fs).name, internal, SAMPLE_BLOCK, fs.dtype, 7)
        (outside / "STATUS.txt").write_bytes(b"")
        _plant_dir_link(fs, outside)
        before = _snapshot(outside)
        with BlockwiseFileset(
            str(composite_description_path), preparsedDescription=fs.localDescription
        ) as local:
            with pytest.raises(BlockNotReadyError, match="symbolic link"):
                local.readData(FIRST_ROI)
        with pytest.raises(CacheWriteError, match="symbolic link"):
            fs.readData(FIRST_ROI)
        report = fs.verify()
        assert report.links == [str(_block_dir(fs))] and report.checked == 0
        fs.verify(repair=True)
        np.testing.assert_array_equal(fs.readData(FIRST_ROI), sample_array[:8, :16, :16])
    assert _snapshot(outside) == before


def test_intermediate_directory_link_is_never_written_through(composite_description_path, outside):
    before = _snapshot(outside)
    with RESTfulBlockwiseFileset(composite_description_path) as fs:
        z_dir = _block_dir(fs).parent.parent
        z_dir.parent.mkdir(parents=True, exist_ok=True)
        z_dir.symlink_to(outside, target_is_directory=True)
        with pytest.raises(CacheWriteError) as info:
            fs.readData(FIRST_ROI)
        assert info.value.path == str(z_dir)
    assert _snapshot(outside) == before and sorted(os.listdir(outside)) == ["precious.txt"]


# ---------------------------------------------------------------------------------------------------------
# STATUS.txt links


def test_status_link_never_truncates_an_outside_file(composite_description_path, outside, sample_array):
    precious = outside / "precious.txt"
    before = _snapshot(outside)
    with RESTfulBlockwiseFileset(composite_description_path) as fs:
        desc = fs.localDescription
    with BlockwiseFileset(str(composite_description_path), "a", preparsedDescription=desc) as local:
        local.writeData(FIRST_ROI, sample_array[:8, :16, :16])
        status = _block_dir(local) / "STATUS.txt"
        status.symlink_to(precious)
        local.setBlockStatus(FIRST, local.BLOCK_AVAILABLE)
        assert status.is_file() and not status.is_symlink()
        np.testing.assert_array_equal(local.readData(FIRST_ROI), sample_array[:8, :16, :16])
    assert _snapshot(outside) == before


def test_status_link_never_creates_an_outside_file(composite_description_path, outside, sample_array):
    created = outside / "created.txt"
    with RESTfulBlockwiseFileset(composite_description_path) as fs:
        block_dir = _block_dir(fs)
        block_dir.mkdir(parents=True)
        (block_dir / "STATUS.txt").symlink_to(created)  # dangling: the block is not available
        np.testing.assert_array_equal(fs.readData(FIRST_ROI), sample_array[:8, :16, :16])
        status = block_dir / "STATUS.txt"
        assert status.is_file() and not status.is_symlink()
    assert not os.path.lexists(created)


def test_status_link_to_an_existing_outside_file_is_not_trusted(
    composite_description_path, outside, sample_array
):
    before = _snapshot(outside)
    with RESTfulBlockwiseFileset(composite_description_path) as fs:
        block_dir = _block_dir(fs)
        block_dir.mkdir(parents=True)
        (block_dir / "STATUS.txt").symlink_to(outside / "precious.txt")  # "available", but no block file
        np.testing.assert_array_equal(fs.readData(FIRST_ROI), sample_array[:8, :16, :16])
        assert not (block_dir / "STATUS.txt").is_symlink()
    assert _snapshot(outside) == before


# ---------------------------------------------------------------------------------------------------------
# block file links


def _plant_block_file_link(fs: BlockwiseFileset, outside: Path) -> tuple[Path, Path]:
    block_file = _block_file(fs)
    block_file.parent.mkdir(parents=True, exist_ok=True)
    internal = fs.getDatasetPathComponents(FIRST).internalPath
    evil = _outside_hdf5(outside / "evil.h5", internal, SAMPLE_BLOCK, fs.dtype, 7)
    block_file.symlink_to(evil)
    (block_file.parent / "STATUS.txt").write_bytes(b"")
    return block_file, evil


def test_block_file_link_out_of_the_root_is_never_read(composite_description_path, outside, sample_array):
    with RESTfulBlockwiseFileset(composite_description_path) as fs:
        block_file, evil = _plant_block_file_link(fs, outside)
        before = _snapshot(outside)
        with BlockwiseFileset(
            str(composite_description_path), preparsedDescription=fs.localDescription
        ) as local:
            with pytest.raises(BlockNotReadyError, match="symbolic link"):
                local.readData(FIRST_ROI)
            with pytest.raises(BlockNotReadyError):
                local.readData(WHOLE)
        # The remote cache heals the block: the link is dropped (not its target), the block fetched again.
        np.testing.assert_array_equal(fs.readData(FIRST_ROI), sample_array[:8, :16, :16])
        assert block_file.is_file() and not block_file.is_symlink()
        assert fs.verify(deep=True).ok
    assert _snapshot(outside) == before


def test_block_file_link_is_replaced_not_written_through(composite_description_path, outside, sample_array):
    with RESTfulBlockwiseFileset(composite_description_path) as fs:
        desc = fs.localDescription
    with BlockwiseFileset(str(composite_description_path), "a", preparsedDescription=desc) as local:
        block_file, evil = _plant_block_file_link(local, outside)
        before = _snapshot(outside)
        local.writeData(([0, 0, 0], [1, 1, 1]), np.full((1, 1, 1), 3, np.uint8))
        assert not block_file.is_symlink()
        expected = np.zeros(SAMPLE_BLOCK, np.uint8)  # the outside voxels (7) were not taken in
        expected[0, 0, 0] = 3
        local.setBlockStatus(FIRST, local.BLOCK_AVAILABLE)
        np.testing.assert_array_equal(local.readData(FIRST_ROI), expected)
    assert _snapshot(outside) == before


# ---------------------------------------------------------------------------------------------------------
# lock file links


def test_lock_file_link_is_never_opened(composite_description_path, outside):
    created = outside / "lock-target"
    with RESTfulBlockwiseFileset(composite_description_path) as fs:
        block_dir = _block_dir(fs)
        block_dir.mkdir(parents=True)
        (block_dir / ".rbfs.lock").symlink_to(created)
        assert not fs.isBlockLocked(FIRST)
        with pytest.raises(CacheWriteError) as info:
            fs.readData(FIRST_ROI)
        assert info.value.errno == errno.ELOOP
    assert not os.path.lexists(created)
    assert (block_dir / ".rbfs.lock").is_symlink()  # refused, left for `verify --repair`


# ---------------------------------------------------------------------------------------------------------
# verify and repair


def test_verify_reports_and_repair_removes_planted_links(
    composite_description_path, outside, sample_array, capsys
):
    with RESTfulBlockwiseFileset(composite_description_path) as fs:
        fs.readData(([8, 0, 0], [16, 16, 16]))  # one good block
        z_level = _block_dir(fs, (16, 0, 0)).parent.parent  # a whole z level of blocks
        z_level.symlink_to(outside, target_is_directory=True)
        planted = [_plant_dir_link(fs, outside, (0, 16, 0)), z_level]
        block_file, evil = _plant_block_file_link(fs, outside)
        planted.append(block_file)
        status_dir = _block_dir(fs, (0, 0, 16))
        status_dir.mkdir(parents=True)
        (status_dir / "STATUS.txt").symlink_to(outside / "precious.txt")
        (status_dir / ".rbfs.lock").symlink_to(outside / "lock-target")
        planted += [status_dir / "STATUS.txt", status_dir / ".rbfs.lock"]
        before = _snapshot(outside)

        report = fs.verify()
        assert not report.ok
        assert sorted(report.links) == sorted(str(p) for p in planted)
        reasons = {bad.path: bad.reason for bad in report.bad_blocks}
        assert "symbolic link" in reasons.pop(str(block_file))
        # The STATUS.txt link makes its block look available: its missing file is reported too.
        assert reasons == {str(_block_file(fs, (0, 0, 16))): "block file missing"}

        assert cli.main(["verify", str(composite_description_path)]) == 1
        out, err = capsys.readouterr()
        assert all(str(p) in out for p in planted), out
        assert "planted symbolic links" in err

        report = fs.verify(repair=True)
        assert all(not os.path.lexists(p) for p in planted)
        assert set(map(str, planted)) <= set(report.removed)
        assert fs.verify().ok
        np.testing.assert_array_equal(fs.readData(WHOLE), sample_array)
    assert _snapshot(outside) == before


def test_cache_root_itself_may_be_a_link(cutout_server, tmp_path, sample_array):
    real_root = tmp_path / "elsewhere" / "blocks"
    real_root.mkdir(parents=True)
    (tmp_path / "cache").symlink_to(real_root, target_is_directory=True)
    desc = cutout_server.write_description(tmp_path / "v.json", block_shape=SAMPLE_BLOCK, cache_dir="cache")
    with RESTfulBlockwiseFileset(desc) as fs:
        np.testing.assert_array_equal(fs.readData(WHOLE), sample_array)
    with RESTfulBlockwiseFileset(desc) as fs:
        np.testing.assert_array_equal(fs.readData(WHOLE), sample_array)
        assert fs.blocks_downloaded == 0
        report = fs.verify(deep=True)
        assert report.ok and report.checked == fs.statusSummary().total
    assert any(name.startswith("z_") for name in os.listdir(real_root))
