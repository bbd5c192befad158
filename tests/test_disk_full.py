"""File-system failures: full disks (small tmpfs mounts), read-only caches, and the CLI's outputs.

Publishing onto a full disk used to kill the process inside h5py's file close (SIGSEGV/SIGBUS) or, when
it survived, to rename a truncated block into place and mark it available. Everything that may crash
therefore runs in a child process: a crash shows as a negative return code instead of killing pytest.
The mounts need root; without it (or without tmpfs) the tests skip.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from lazyflow_rbfs import description as descmod
from lazyflow_rbfs.cache import RESTfulBlockwiseFileset
from lazyflow_rbfs.errors import CacheWriteError
from lazyflow_rbfs.store import BlockwiseFileset
from tests.mounts import remount

REPO = Path(__file__).resolve().parents[1]
SHAPE = (16, 64, 64)
BLOCK = (8, 64, 64)  # 32 KiB of uint8 per block: an HDF5 block file of about 34 KiB
FREE_KIB = range(4, 41, 4)


# ---------------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """Incompressible voxels, so the block files have a predictable size."""
    array = np.random.default_rng(9).integers(0, 256, size=SHAPE, dtype=np.uint8)
    array.setflags(write=False)
    return array


def _local_description(path: Path, root: Path) -> str:
    desc = {
        "_schema_name": "blockwise-fileset-description",
        "_schema_version": 1.1,
        "name": "full-disk",
        "format": "hdf5",
        "axes": "zyx",
        "shape": list(SHAPE),
        "dtype": "uint8",
        "block_shape": list(BLOCK),
        "block_file_name_format": "block-{roiString}.h5/cube",
        "dataset_root_dir": str(root),
    }
    path.write_text(json.dumps(desc))
    return str(path)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _assert_nothing_untrusted(root: Path, expected: np.ndarray) -> None:
    """No temp file left; every block marked available holds exactly the expected voxels."""
    files = _files(root)
    assert not [p for p in files if p.name.endswith(".partial")], files
    for status in [p for p in files if p.name == "STATUS.txt"]:
        (block_file,) = [p for p in status.parent.iterdir() if p.suffix == ".h5"]
        with h5py.File(block_file, "r") as f:
            z = int(status.parent.parent.parent.name.split("_")[1])
            np.testing.assert_array_equal(f["cube"][()], expected[z : z + BLOCK[0]])


CHILD = r"""
import contextlib, io, json, sys
import numpy as np
from lazyflow_rbfs.errors import CacheWriteError

def run(job):
    kind = job["kind"]
    if kind == "remote":
        from lazyflow_rbfs.cache import RESTfulBlockwiseFileset
        with RESTfulBlockwiseFileset(job["desc"], retries=0) as fs:
            fs.readData(job["roi"])
    elif kind == "write":
        from lazyflow_rbfs.store import BlockwiseFileset
        data = np.random.default_rng(job["seed"]).integers(0, 256, size=(8, 64, 64), dtype=np.uint8)
        with BlockwiseFileset(job["desc"], "a") as fs:
            fs.writeData(job["roi"], data)
            fs.setBlockStatus(job["roi"][0], fs.BLOCK_AVAILABLE)
    elif kind == "export_h5":
        from lazyflow_rbfs.store import BlockwiseFileset
        with BlockwiseFileset(job["desc"]) as fs:
            fs.exportRoiToHdf5(job["roi"], job["dir"])
    elif kind == "export_subset":
        from lazyflow_rbfs.store import BlockwiseFileset
        with BlockwiseFileset(job["desc"]) as fs:
            fs.exportSubset(job["roi"], job["dir"])
    elif kind == "cli":
        from lazyflow_rbfs import cli
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(job["argv"])
        return {"code": code, "stderr": err.getvalue()}
    return {}

for job in json.loads(sys.argv[1]):
    try:
        result = run(job)
        result["error"] = None
    except CacheWriteError as exc:
        result = {"error": "CacheWriteError", "path": exc.path, "errno": exc.errno, "message": str(exc)}
    except BaseException as exc:
        result = {"error": type(exc).__name__, "message": str(exc)}
    print(json.dumps(result), flush=True)
"""


def _run_child(jobs: list[dict]) -> list[dict]:
    """Run the jobs in one child process; fail (not crash) if it died of a signal."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(jobs)], capture_output=True, text=True, env=env, timeout=300
    )
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, (
        f"the child process died (return code {proc.returncode}) after {len(results)} of {len(jobs)} jobs; "
        f"stderr: {proc.stderr[-2000:]}"
    )
    assert len(results) == len(jobs), proc.stderr[-2000:]
    return results


def _assert_write_error(result: dict, under: Path) -> None:
    assert result["error"] == "CacheWriteError", result
    assert result["errno"] in (errno.ENOSPC, errno.EDQUOT), result
    assert result["path"].startswith(str(under)), result
    assert result["path"] in result["message"], result


# ---------------------------------------------------------------------------------------------------------
# publishing blocks onto a full disk


def test_publish_on_a_full_disk_raises_and_marks_nothing(tmpfs, make_cutout_server, volume, tmp_path):
    server = make_cutout_server(volume)
    jobs, mounts = [], []
    for kib in FREE_KIB:
        remote_root = tmpfs(f"remote-{kib}k", kib)
        local_root = tmpfs(f"local-{kib}k", kib)
        desc = server.write_description(
            tmp_path / f"remote-{kib}.json", block_shape=BLOCK, cache_dir=remote_root
        )
        local = _local_description(tmp_path / f"local-{kib}.json", local_root)
        jobs.append({"kind": "remote", "desc": desc, "roi": [[0, 0, 0], [8, 64, 64]]})
        jobs.append({"kind": "write", "desc": local, "roi": [[8, 0, 0], [16, 64, 64]], "seed": kib})
        mounts.append((kib, remote_root, desc, local_root, local))
    results = iter(_run_child(jobs))

    outcomes = set()
    for kib, remote_root, desc, local_root, local in mounts:
        remote, write = next(results), next(results)
        written = np.random.default_rng(kib).integers(0, 256, size=BLOCK, dtype=np.uint8)
        expected_local = np.zeros(SHAPE, np.uint8)
        expected_local[8:] = written
        for result, root, expected in ((remote, remote_root, volume), (write, local_root, expected_local)):
            outcomes.add(result["error"])
            if result["error"] is not None:
                _assert_write_error(result, root)
            _assert_nothing_untrusted(root, expected)
        with RESTfulBlockwiseFileset(desc) as fs:
            assert fs.verify().ok
            available = fs.getBlockStatus((0, 0, 0)) == fs.BLOCK_AVAILABLE
        assert available == (remote["error"] is None)
        with BlockwiseFileset(local) as fs:
            assert fs.verify().ok

        # With space again, the same caches recover.
        remount(remote_root, "size=1m")
        remount(local_root, "size=1m")
        with RESTfulBlockwiseFileset(desc) as fs:
            np.testing.assert_array_equal(fs.readData(([0, 0, 0], list(SHAPE))), volume)
            assert fs.verify(deep=True).ok
        with BlockwiseFileset(local, "a") as fs:
            fs.writeData(([8, 0, 0], list(SHAPE)), written)
            fs.setBlockStatus((8, 0, 0), fs.BLOCK_AVAILABLE)
            np.testing.assert_array_equal(fs.readData(([8, 0, 0], list(SHAPE))), written)
    # The sizes cover both sides: blocks that do not fit, and blocks that just fit.
    assert outcomes == {"CacheWriteError", None}


def test_fsync_option_is_kept_through_pickling(composite_description_path):
    import pickle

    with RESTfulBlockwiseFileset(composite_description_path, fsync=False) as fs:
        fs.readData(([0, 0, 0], [8, 16, 16]))
        clone = pickle.loads(pickle.dumps(fs))
    with clone:
        assert clone.open_options["fsync"] is False
        assert clone.readData(([0, 0, 0], [8, 16, 16])).shape == (8, 16, 16)
        assert clone.verify(deep=True).ok
    with pytest.raises(ValueError, match="fsync"):
        BlockwiseFileset(str(composite_description_path), fsync="yes")


# ---------------------------------------------------------------------------------------------------------
# read-only caches


def test_read_only_cache_raises_cache_write_error(tmpfs, make_cutout_server, volume, tmp_path):
    server = make_cutout_server(volume)
    root = tmpfs("ro-cache", 1024)
    desc = server.write_description(tmp_path / "ro.json", block_shape=BLOCK, cache_dir=root)
    with RESTfulBlockwiseFileset(desc) as fs:
        fs.readData(([0, 0, 0], [8, 64, 64]))  # one block cached while writable
    remount(root, "ro")
    with RESTfulBlockwiseFileset(desc) as fs:
        # Cached blocks still read; a block that needs storing is a CacheWriteError naming the path.
        np.testing.assert_array_equal(fs.readData(([0, 0, 0], [8, 64, 64])), volume[:8])
        with pytest.raises(CacheWriteError) as info:
            fs.readData(([8, 0, 0], [16, 64, 64]))
    assert info.value.errno == errno.EROFS
    assert isinstance(info.value, OSError) and info.value.path.startswith(str(root))
    assert info.value.path in str(info.value)

    local = _local_description(tmp_path / "local.json", root)
    with BlockwiseFileset(local, "a") as fs:
        with pytest.raises(CacheWriteError) as info:
            fs.writeData(([8, 0, 0], [9, 1, 1]), np.ones((1, 1, 1), np.uint8))
        assert info.value.errno == errno.EROFS
        with pytest.raises(CacheWriteError):
            fs.setBlockStatus((0, 0, 0), fs.BLOCK_NOT_AVAILABLE)
    with pytest.raises(CacheWriteError) as info:
        descmod.write_description(root / "copy.json", descmod.read_local(local), "local")
    assert info.value.errno == errno.EROFS and info.value.path == str(root / "copy.json")


# ---------------------------------------------------------------------------------------------------------
# exports onto a full disk


@pytest.fixture
def filled_local(tmp_path: Path, volume: np.ndarray) -> str:
    """A complete local fileset of ``volume`` (on the ordinary disk)."""
    path = _local_description(tmp_path / "filled.json", tmp_path / "filled-blocks")
    with BlockwiseFileset(path, "a") as fs:
        fs.writeData(([0, 0, 0], list(SHAPE)), volume)
        fs.setBlockStatusesForRoi(([0, 0, 0], list(SHAPE)), fs.BLOCK_AVAILABLE)
    return path


def test_exports_onto_a_full_disk_leave_nothing(tmpfs, filled_local):
    jobs, dirs = [], []
    for kib in (4, 16, 40, 64):
        out_h5 = tmpfs(f"export-h5-{kib}k", kib)
        out_subset = tmpfs(f"export-subset-{kib}k", kib)
        whole = [[0, 0, 0], list(SHAPE)]
        jobs.append({"kind": "export_h5", "desc": filled_local, "roi": whole, "dir": str(out_h5)})
        jobs.append({"kind": "export_subset", "desc": filled_local, "roi": whole, "dir": str(out_subset)})
        dirs += [out_h5, out_subset]
    for fmt in ("single-hdf5", "blockwise-subset"):
        out = tmpfs(f"cli-export-{fmt}", 16)
        argv = ["export", filled_local, "--roi", ":,:,:", "-o", str(out), "--format", fmt]
        jobs.append({"kind": "cli", "argv": argv})
        dirs.append(out)
    for job, result, out in zip(jobs, _run_child(jobs), dirs):
        if job["kind"] == "cli":
            assert result["error"] is None and result["code"] == 1, result
            lines = result["stderr"].strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("rbfs: error: ") and str(out) in lines[0], lines
        else:
            _assert_write_error(result, out)
        assert _files(out) == [], _files(out)


def test_block_files_are_ordinary_hdf5(tmp_path, volume):
    """Blocks written without HDF5 touching the disk are the files upstream lazyflow writes and reads."""
    desc = json.loads(Path(_local_description(tmp_path / "d.json", tmp_path / "blocks")).read_text())
    desc["drange"] = [0, 255]
    (tmp_path / "d.json").write_text(json.dumps(desc))
    for fsync in (True, False):
        with BlockwiseFileset(str(tmp_path / "d.json"), "a", fsync=fsync) as fs:
            fs.writeData(([0, 0, 0], list(SHAPE)), volume)
            for start in fs.iterBlockStarts():
                fs.setBlockStatus(start, fs.BLOCK_AVAILABLE)
            path = fs.getDatasetPathComponents((8, 0, 0))
            assert fs.verify(deep=True).ok
        with h5py.File(path.externalPath, "r") as f:
            dataset = f[path.internalPath]
            assert dataset.chunks is None and dataset.compression is None
            assert tuple(dataset.attrs["drange"]) == (0, 255)
            np.testing.assert_array_equal(dataset[()], volume[8:])
            assert os.path.getsize(path.externalPath) < volume[8:].nbytes + 8192


# ---------------------------------------------------------------------------------------------------------
# the CLI's outputs


def test_cli_read_onto_a_full_disk_is_one_error_line(tmpfs, filled_local):
    out_dir = tmpfs("cli-out", 16)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in ("x.h5", "x.npy"):
        target = out_dir / name
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "lazyflow_rbfs",
                "read",
                filled_local,
                "-o",
                str(target),
                "--roi",
                ":,:,:",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("rbfs: error: "), proc.stderr
        assert str(target) in lines[0] and "disk is full" in lines[0], lines[0]
        assert _files(out_dir) == []


def test_cli_read_never_crashes_on_an_almost_full_disk(tmpfs, filled_local, volume):
    jobs, outs = [], []
    for kib in range(4, 68, 4):
        out_dir = tmpfs(f"cli-{kib}k", kib)
        for name in ("x.h5", "x.npy"):
            argv = ["read", filled_local, "-o", str(out_dir / name), "--roi", "0:4,:,:"]
            jobs.append({"kind": "cli", "argv": argv})
            outs.append(out_dir / name)
    for result, out in zip(_run_child(jobs), outs):
        assert result["error"] is None, result
        if result["code"] == 0:  # it fitted: the output is complete
            if out.suffix == ".npy":
                np.testing.assert_array_equal(np.load(out), volume[:4])
            else:
                with h5py.File(out, "r") as f:
                    np.testing.assert_array_equal(f["data"][()], volume[:4])
                    assert list(f["data"].attrs["roi_stop"]) == [4, 64, 64]
        else:
            assert result["code"] == 1 and str(out) in result["stderr"], result
            assert result["stderr"].count("rbfs: error:") == 1, result
            assert not out.exists()
        assert not [p for p in _files(out.parent) if p.name.endswith(".partial")]


def test_cli_outputs_are_complete(tmp_path, filled_local, volume):
    from lazyflow_rbfs import cli

    for name in ("a.npy", "b.h5"):
        out = tmp_path / name
        assert cli.main(["read", filled_local, "-o", str(out), "--roi", "1:15,3:60,:"]) == 0
        if name.endswith(".npy"):
            loaded = np.load(out)
        else:
            with h5py.File(out, "r") as f:
                loaded = f["data"][()]
                assert f["data"].attrs["axes"] == "zyx"
        np.testing.assert_array_equal(loaded, volume[1:15, 3:60, :])
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".npy", ".h5")) == ["a.npy", "b.h5"]
