"""Issue 9, item 3: a block damaged by hand heals under concurrent readers (threads and processes).

A block whose ``STATUS.txt`` exists but whose file is garbage or truncated must not make any reader fail,
however many threads and processes race its repair: each ends with the source's voxels, and the block is
downloaded again once.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from lazyflow_rbfs import RESTfulBlockwiseFileset
from lazyflow_rbfs.locks import BlockLock
from lazyflow_rbfs.testing import CutoutServer, sample_volume

BLOCK = (8, 32, 32)
SHAPE = (16, 64, 64)  # 2 x 2 x 2 blocks
DAMAGED = (8, 32, 0)  # view start of the block damaged by hand


@pytest.fixture
def volume():
    return sample_volume(SHAPE, seed=11)


@pytest.fixture
def server(volume):
    with CutoutServer(volume) as srv:
        yield srv


@pytest.fixture(params=["garbage", "truncated"])
def damaged(request, server, tmp_path):
    """A filled cache whose block DAMAGED is marked available but broken; the server's counters zeroed."""
    desc = Path(server.write_description(tmp_path / "volume.json", block_shape=BLOCK, cache_dir="cache"))
    with RESTfulBlockwiseFileset(str(desc)) as vol:
        vol.readData(((0, 0, 0), SHAPE))
        path = Path(vol.getDatasetPathComponents(DAMAGED).externalPath)
        assert vol.getBlockStatus(DAMAGED) == vol.BLOCK_AVAILABLE
    if request.param == "garbage":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage, not a block " * 50)
    else:
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    server.reset_stats()
    return desc


def _requests_for_damaged(server):
    return len(server.request_log_paths())  # every other block is cached


def test_threads_sharing_a_fileset_all_read_the_healed_block(damaged, server, volume):
    n = 120
    barrier = threading.Barrier(n)
    failures: list[str] = []
    wrong: list[int] = []

    def read(i: int) -> None:
        try:
            barrier.wait(60)
            if not np.array_equal(vol.readData(((0, 0, 0), SHAPE)), volume):
                wrong.append(i)
        except BaseException as exc:  # reported below
            failures.append(f"{type(exc).__name__}: {exc}")

    with RESTfulBlockwiseFileset(str(damaged)) as vol:
        threads = [threading.Thread(target=read, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not any(t.is_alive() for t in threads), "a reader hung"
    assert failures == [], f"{len(failures)} of {n} readers failed, first: {failures[:1]}"
    assert wrong == []
    assert _requests_for_damaged(server) == 1


def test_threads_with_their_own_filesets_all_read_the_healed_block(damaged, server, volume):
    n = 120
    filesets = [RESTfulBlockwiseFileset(str(damaged), max_parallel=2) for _ in range(n)]
    barrier = threading.Barrier(n)
    failures: list[str] = []
    wrong: list[int] = []

    def read(i: int) -> None:
        try:
            barrier.wait(60)
            if not np.array_equal(filesets[i].readData(((0, 0, 0), SHAPE)), volume):
                wrong.append(i)
        except BaseException as exc:  # reported below
            failures.append(f"{type(exc).__name__}: {exc}")

    try:
        threads = [threading.Thread(target=read, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not any(t.is_alive() for t in threads), "a reader hung"
    finally:
        for fs in filesets:
            fs.close()
    assert failures == [], f"{len(failures)} of {n} readers failed, first: {failures[:1]}"
    assert wrong == []
    assert _requests_for_damaged(server) == 1


def _process_reader(desc: str, expected_sum: int, barrier, results) -> None:
    try:
        with RESTfulBlockwiseFileset(desc, max_parallel=2) as vol:
            barrier.wait(60)
            data = vol.readData(((0, 0, 0), SHAPE))
            results.put((os.getpid(), "ok" if int(data.astype(np.int64).sum()) == expected_sum else "wrong"))
    except BaseException as exc:  # reported to the parent
        results.put((os.getpid(), f"{type(exc).__name__}: {exc}"))


def test_processes_all_read_the_healed_block(damaged, server, volume):
    n = 60
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["lazyflow_rbfs.cache", "h5py", "numpy"])
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    expected = int(volume.astype(np.int64).sum())
    procs = [
        ctx.Process(target=_process_reader, args=(str(damaged), expected, barrier, results)) for _ in range(n)
    ]
    for p in procs:
        p.start()
    outcomes = []
    try:
        for _ in range(n):
            outcomes.append(results.get(timeout=120)[1])  # hang guard
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    failures = [o for o in outcomes if o != "ok"]
    assert failures == [], f"{len(failures)} of {n} processes failed, first: {failures[:1]}"
    assert _requests_for_damaged(server) == 1


def test_blocks_evicted_under_readers_never_fail_a_read(server, volume, tmp_path):
    """The same "look again" path serves blocks removed (evicted) between a reader's check and its read."""
    desc = Path(server.write_description(tmp_path / "volume.json", block_shape=BLOCK, cache_dir="cache"))
    starts = [(z, y, x) for z in (0, 8) for y in (0, 32) for x in (0, 32)]
    done = threading.Condition()
    reads = [0]
    evicting = threading.Event()
    failures: list[str] = []

    def read() -> None:
        try:
            while not evicting.is_set():
                if not np.array_equal(vol.readData(((0, 0, 0), SHAPE)), volume):
                    failures.append("wrong voxels")
                with done:
                    reads[0] += 1
                    done.notify_all()
        except BaseException as exc:  # reported below
            failures.append(f"{type(exc).__name__}: {exc}")
            with done:
                done.notify_all()

    with RESTfulBlockwiseFileset(str(desc)) as vol:
        vol.readData(((0, 0, 0), SHAPE))
        readers = [threading.Thread(target=read) for _ in range(4)]
        for t in readers:
            t.start()
        try:
            for i in range(60):
                paths = vol.blocks.paths(starts[(i * 5) % len(starts)])
                with BlockLock(paths.lock_path):  # evicted as an eviction would: under the block's lock
                    for path in (paths.status_path, paths.file_path):
                        if os.path.exists(path):
                            os.remove(path)
                with done:  # let at least one read happen before the next eviction
                    seen = reads[0]
                    assert done.wait_for(lambda s=seen: reads[0] > s or failures, timeout=60)
                if failures:
                    break
        finally:
            evicting.set()
            for t in readers:
                t.join(60)
    assert failures == [], f"{len(failures)} reads failed, first: {failures[:1]}"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
@pytest.mark.parametrize("reader", ["same fileset", "another fileset"])
def test_a_block_file_overwritten_in_place_while_open_is_never_read_as_data(
    server, volume, tmp_path, damage, reader
):
    """HDF5 shares one open file per inode within a process, and reads past a truncated end as zeros: a
    block file overwritten in place while a handle of this process holds it open must be healed, never
    read (before the fix, both readers returned zeros for the damaged block)."""
    desc = Path(server.write_description(tmp_path / "volume.json", block_shape=BLOCK, cache_dir="cache"))
    region = ((0, 0, 0), SHAPE)
    with RESTfulBlockwiseFileset(str(desc)) as holder:
        holder.readData(region)  # cold: copied from memory as the blocks land
        np.testing.assert_array_equal(holder.readData(region), volume)  # warm: every block file held open
        path = Path(holder.getDatasetPathComponents(DAMAGED).externalPath)
        with open(path, "r+b") as f:  # same inode: damaged in place, not replaced
            if damage == "garbage":
                f.write(b"garbage, not a block " * 50)
            else:
                f.truncate(path.stat().st_size // 2)
        server.reset_stats()
        if reader == "same fileset":
            got = holder.readData(region)
        else:
            with RESTfulBlockwiseFileset(str(desc)) as other:
                got = other.readData(region)
        np.testing.assert_array_equal(got, volume)
        if damage == "truncated":
            assert _requests_for_damaged(server) == 1  # healed: the damaged block was fetched again
        else:
            # Same size, header overwritten: a process that still holds the file open reads its (intact)
            # voxels through HDF5's older state, or heals it; either way the data is right.
            assert _requests_for_damaged(server) <= 1
