"""RESTfulBlockwiseFileset against a real cutout server on 127.0.0.1: correctness, concurrency, faults."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from lazyflow_rbfs import BlockwiseFilesetFactory, RESTfulBlockwiseFileset, geometry
from lazyflow_rbfs.errors import (
    ClosedError,
    DownloadError,
    InvalidResponseError,
    LockTimeoutError,
    OutOfBoundsError,
    PrefetchError,
    ReadOnlyError,
    RemoteTimeoutError,
)
from lazyflow_rbfs.locks import BlockLock
from lazyflow_rbfs.testing import CutoutServer, sample_volume
from tests.procfs import HAVE_PROC, open_files_under

BLOCK = (8, 32, 32)
SHAPE = (24, 96, 80)  # 3 x 3 x 3 blocks, the last x block is 16 wide


@pytest.fixture
def volume():
    return sample_volume(SHAPE, seed=3)


@pytest.fixture
def server(volume):
    with CutoutServer(volume) as srv:
        yield srv


@pytest.fixture
def desc(server, tmp_path):
    return Path(server.write_description(tmp_path / "volume.json", block_shape=BLOCK, cache_dir="cache"))


def status_files(root: Path) -> list[Path]:
    return sorted(root.rglob("STATUS.txt"))


def n_blocks(start, stop, block=BLOCK):
    return int(np.prod([(-(-e // b)) - (s // b) for s, e, b in zip(start, stop, block)]))


def test_reads_equal_the_source_and_download_each_block_once(desc, server, volume):
    rng = np.random.default_rng(0)
    with RESTfulBlockwiseFileset(str(desc), max_parallel=4) as vol:
        assert tuple(vol.shape) == SHAPE and np.dtype(vol.dtype) == volume.dtype and vol.axes == "zyx"
        for _ in range(30):
            start = [int(rng.integers(0, s)) for s in SHAPE]
            stop = [int(rng.integers(a + 1, s + 1)) for a, s in zip(start, SHAPE)]
            got = vol.readData((start, stop))
            np.testing.assert_array_equal(got, volume[tuple(slice(a, b) for a, b in zip(start, stop))])
        np.testing.assert_array_equal(vol[...], volume)
        np.testing.assert_array_equal(vol[3, 10:50, -5:], volume[3, 10:50, -5:])
    assert server.requests == n_blocks((0, 0, 0), SHAPE)
    assert len(status_files(desc.parent / "cache")) == n_blocks((0, 0, 0), SHAPE)


def test_out_array_is_filled_in_place(desc, volume):
    out = np.zeros((8, 40, 40), dtype=volume.dtype)
    with RESTfulBlockwiseFileset(str(desc)) as vol:
        assert vol.readData(((4, 30, 30), (12, 70, 70)), out) is out
    np.testing.assert_array_equal(out, volume[4:12, 30:70, 30:70])


@pytest.mark.parametrize("roi", [((0, 0, 0), (25, 10, 10)), ((-1, 0, 0), (2, 2, 2)), ((5, 5, 5), (5, 6, 6))])
def test_bad_roi_raises_before_any_request(desc, server, roi):
    with RESTfulBlockwiseFileset(str(desc)) as vol, pytest.raises(OutOfBoundsError):
        vol.readData(roi)
    assert server.requests == 0


def test_eight_threads_download_each_block_exactly_once(desc, server, volume):
    barrier = threading.Barrier(8)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def reader(i):
        try:
            barrier.wait(30)
            start = (0, (i % 3) * 16, (i % 2) * 16)
            results[i] = vol.readData((start, (SHAPE[0], start[1] + 64, start[2] + 64)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    with RESTfulBlockwiseFileset(str(desc), max_parallel=3) as vol:
        threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors
    for i, got in results.items():
        y, x = (i % 3) * 16, (i % 2) * 16
        np.testing.assert_array_equal(got, volume[:, y : y + 64, x : x + 64])
    distinct = set(server.request_log_paths())
    assert server.requests == len(distinct) == n_blocks((0, 0, 0), (SHAPE[0], 96, 80))
    assert server.max_in_flight <= 3


def _read_in_subprocess(desc, start, stop, out_path):
    with RESTfulBlockwiseFileset(desc, max_parallel=2) as vol:
        np.save(out_path, vol.readData((start, stop)))


def test_three_processes_download_each_block_exactly_once(desc, server, volume, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    rois = [((0, 0, 0), (24, 64, 64)), ((0, 32, 16), (24, 96, 80)), ((8, 0, 0), (24, 96, 80))]
    procs = []
    for i, (start, stop) in enumerate(rois):
        p = ctx.Process(target=_read_in_subprocess, args=(str(desc), start, stop, str(tmp_path / f"{i}.npy")))
        procs.append(p)
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    for i, (start, stop) in enumerate(rois):
        got = np.load(tmp_path / f"{i}.npy")
        np.testing.assert_array_equal(got, volume[tuple(slice(a, b) for a, b in zip(start, stop))])
    union = set()
    for start, stop in rois:
        union |= set(geometry.iter_block_starts(np.array(start), np.array(stop), np.array(BLOCK)))
    assert server.requests == len(union) == 26


def test_second_reader_waits_on_the_in_flight_download(desc, server, volume):
    server.pause()
    with RESTfulBlockwiseFileset(str(desc)) as vol:
        first = {}
        second = {}
        t1 = threading.Thread(target=lambda: first.setdefault("a", vol.readData(((0, 0, 0), (8, 32, 32)))))
        t1.start()
        assert server.wait_for_requests(1, timeout=30)
        t2 = threading.Thread(target=lambda: second.setdefault("a", vol.readData(((2, 2, 2), (6, 30, 30)))))
        t2.start()
        t2.join(0.3)
        assert t2.is_alive(), "the second reader must wait for the block in flight, not fail or read zeros"
        server.resume()
        t1.join(30)
        t2.join(30)
    np.testing.assert_array_equal(first["a"], volume[0:8, 0:32, 0:32])
    np.testing.assert_array_equal(second["a"], volume[2:6, 2:30, 2:30])
    assert server.requests == 1


def test_max_parallel_bounds_requests_in_flight(server, tmp_path, volume):
    server.latency = 0.02
    desc = Path(server.write_description(tmp_path / "v.json", block_shape=(4, 16, 16), cache_dir="c"))
    with RESTfulBlockwiseFileset(str(desc), max_parallel=3) as vol:
        np.testing.assert_array_equal(vol[...], volume)
    assert server.requests == 6 * 6 * 5
    assert 1 < server.max_in_flight <= 3


def test_transient_errors_are_retried(desc, server, volume):
    server.faults.fail_next(2, status=503)
    with RESTfulBlockwiseFileset(str(desc), retries=3) as vol:
        np.testing.assert_array_equal(vol[0:8, 0:32, 0:32], volume[0:8, 0:32, 0:32])
    assert server.requests == 3


def test_permanent_error_raises_download_error_and_caches_nothing(desc, server, volume):
    server.faults.fail_next(100, status=500)
    with RESTfulBlockwiseFileset(str(desc), retries=1) as vol:
        with pytest.raises(DownloadError) as info:
            vol.readData(((0, 0, 0), (8, 32, 32)))
        assert info.value.status == 500
        assert info.value.url.startswith(server.url)
        assert server.requests == 2
        assert status_files(desc.parent / "cache") == []
        server.faults.clear()
        np.testing.assert_array_equal(vol[0:8, 0:32, 0:32], volume[0:8, 0:32, 0:32])


def test_stalled_server_raises_remote_timeout(desc, server):
    server.faults.stall(30)
    try:
        with RESTfulBlockwiseFileset(str(desc), timeout=(2, 0.3), retries=0) as vol:
            with pytest.raises(RemoteTimeoutError) as info:
                vol.readData(((0, 0, 0), (1, 1, 1)))
            assert info.value.url
    finally:
        server.faults.clear()
        server.resume()


@pytest.mark.parametrize("fault", ["html", "truncate", "wrong_shape", "wrong_dtype"])
def test_invalid_responses_cache_nothing_and_recovery_works(desc, server, volume, fault):
    getattr(server.faults, fault)(True)
    with RESTfulBlockwiseFileset(str(desc), retries=0) as vol:
        with pytest.raises(InvalidResponseError if fault != "truncate" else DownloadError):
            vol.readData(((0, 0, 0), (8, 32, 32)))
        cache = desc.parent / "cache"
        assert status_files(cache) == []
        assert [p for p in cache.rglob("*.h5")] == []
        server.faults.clear()
        np.testing.assert_array_equal(vol[0:8, 0:32, 0:32], volume[0:8, 0:32, 0:32])


KILLED_READER = """
import sys
from lazyflow_rbfs import RESTfulBlockwiseFileset
vol = RESTfulBlockwiseFileset(sys.argv[1])
vol.readData(((0, 0, 0), (8, 32, 32)))
"""


def test_process_killed_mid_download_leaves_nothing_trusted_and_blocks_no_one(desc, server, volume):
    server.pause()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_READER, str(desc)])
    try:
        assert server.wait_for_requests(1, timeout=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
        server.resume()
    assert status_files(desc.parent / "cache") == []
    with RESTfulBlockwiseFileset(str(desc), lock_timeout=30) as vol:
        np.testing.assert_array_equal(vol[0:8, 0:32, 0:32], volume[0:8, 0:32, 0:32])
    assert len(status_files(desc.parent / "cache")) == 1


def hold_first_block_lock_in_another_process(desc):
    """Start a process holding the lock of block (0, 0, 0); returns ``(lock_path, process)`` once held."""
    with RESTfulBlockwiseFileset(str(desc)) as probe:
        lock_path = os.path.join(probe.getDatasetDirectory((0, 0, 0)), ".rbfs.lock")  # documented layout
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from lazyflow_rbfs.locks import BlockLock; l = BlockLock(sys.argv[1]); l.acquire();"
            " print('held', flush=True); sys.stdin.readline()",
            lock_path,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with RESTfulBlockwiseFileset(str(desc)) as probe:
        assert probe.isBlockLocked((0, 0, 0)), f"{lock_path} is not the lock of block (0, 0, 0)"
    return lock_path, holder


def test_lock_timeout_when_another_process_holds_the_block(desc, server, tmp_path):
    lock_path, holder = hold_first_block_lock_in_another_process(desc)
    try:
        with RESTfulBlockwiseFileset(str(desc), lock_timeout=0.5) as vol:
            assert vol.isBlockLocked((0, 0, 0))
            with pytest.raises(LockTimeoutError):
                vol.readData(((0, 0, 0), (1, 1, 1)))
        assert server.requests == 0
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone the lock is free again (our abandoned waiter may hold it for an instant).
    free = BlockLock(lock_path)
    assert free.acquire(timeout=30)
    free.release()


def test_edge_blocks_hold_disk_clipped_bounds_and_views_share_one_cache(server, volume, tmp_path):
    # The view ends inside its last blocks; their files still hold the blocks clipped to the disk shape.
    narrow = server.write_description(
        tmp_path / "narrow.json",
        block_shape=BLOCK,
        cache_dir="shared",
        view_origin=(8, 32, 32),
        view_shape=(10, 40, 48),
    )
    wide = server.write_description(tmp_path / "wide.json", block_shape=BLOCK, cache_dir="shared")
    with RESTfulBlockwiseFileset(str(narrow)) as vol:
        np.testing.assert_array_equal(vol[...], volume[8:18, 32:72, 32:80])
        corner = vol.getDatasetPathComponents((8, 32, 32))  # view block; disk block (16, 64, 64)
        assert corner.externalPath.endswith(
            "z_00000016/y_00000064/x_00000064/block-([16, 64, 64], [24, 96, 80]).h5"
        )
        with h5py.File(corner.externalPath, "r") as f:
            assert f[corner.internalPath].shape == (8, 32, 16)
            np.testing.assert_array_equal(f[corner.internalPath][...], volume[16:24, 64:96, 64:80])
    requests_after_narrow = server.requests
    assert requests_after_narrow == 8
    with RESTfulBlockwiseFileset(str(wide)) as vol:
        np.testing.assert_array_equal(vol[8:24, 32:96, 32:80], volume[8:24, 32:96, 32:80])
        assert server.requests == requests_after_narrow  # all cached by the narrow view
        np.testing.assert_array_equal(vol[...], volume)
    assert server.requests == 27


def test_download_all_blocks_reports_skips_and_progress(desc, server, volume):
    seen = []
    with RESTfulBlockwiseFileset(str(desc)) as vol:
        vol.readData(((0, 0, 0), (8, 32, 32)))
        report = vol.downloadAllBlocks(4, progress=lambda done, total: seen.append((done, total)))
        assert (report.total, report.downloaded, report.skipped, report.failed) == (27, 26, 1, [])
        assert seen[-1] == (27, 27) and len(seen) == 27
        again = vol.downloadAllBlocks(4)
        assert (again.downloaded, again.skipped) == (0, 27)
        np.testing.assert_array_equal(vol[...], volume)
    assert server.requests == 27


def test_download_all_blocks_continues_past_failures(desc, server):
    server.faults.fail_matching("/8,16/", status=404)  # every block whose z range is 8..16
    with RESTfulBlockwiseFileset(str(desc), retries=0) as vol:
        with pytest.raises(PrefetchError) as info:
            vol.downloadAllBlocks(4, roi=((0, 0, 0), (24, 64, 64)))
        report = info.value.report
        assert report.downloaded == 8 and len(report.failed) == 4
        assert all(b[0] == 8 for b in report.failed)
        assert len(status_files(desc.parent / "cache")) == 8


def test_factory_and_read_only(desc):
    fs = BlockwiseFilesetFactory.create(str(desc), "r")
    try:
        assert isinstance(fs, RESTfulBlockwiseFileset)
    finally:
        fs.close()
    with pytest.raises(ReadOnlyError):
        RESTfulBlockwiseFileset(str(desc), mode="a")


def test_closed_fileset_refuses_io(desc):
    vol = RESTfulBlockwiseFileset(str(desc))
    vol.close()
    vol.close()
    with pytest.raises(ClosedError):
        vol.readData(((0, 0, 0), (1, 1, 1)))
    with pytest.raises(ClosedError):
        vol.downloadAllBlocks(2)


#: Cache-level files of the size bound (issue 12): kept, at the root only, never per block.
CACHE_LEVEL_FILES = (".rbfs-ledger", ".rbfs-ledger.active", ".rbfs-evicting")


def test_no_lock_or_temp_files_remain(desc):
    with RESTfulBlockwiseFileset(str(desc)) as vol:
        vol.downloadAllBlocks(4)
    leftovers = [
        p
        for p in (desc.parent / "cache").rglob("*")
        # the volume record stays, and so do the cache-level footprint ledger and its lock files
        if p.is_file() and p.name not in ("STATUS.txt", ".rbfs-volume.json", *CACHE_LEVEL_FILES)
    ]
    assert all(p.suffix == ".h5" for p in leftovers), leftovers
    assert not any(p.name.endswith(".lock") for p in leftovers)
    assert os.path.exists(desc)


def test_download_blocks_takes_an_explicit_batch(desc, server, volume):
    with RESTfulBlockwiseFileset(str(desc)) as vol:
        batch = [(0, 0, 0), (8, 32, 64), (16, 64, 32)]
        report = vol.downloadBlocks(iter(batch), 2, total=3)
        assert (report.total, report.downloaded, report.skipped) == (3, 3, 0)
        assert [vol.getBlockStatus(b) for b in batch] == [1, 1, 1]
        assert vol.getBlockStatus((8, 0, 0)) == 0
    assert server.requests == 3


def test_fileset_pickles_as_a_reopen(desc, volume):
    import pickle

    with RESTfulBlockwiseFileset(str(desc), max_parallel=3, retries=1) as vol:
        clone = pickle.loads(pickle.dumps(vol))
    try:
        assert clone.max_parallel == 3 and clone is not vol
        np.testing.assert_array_equal(clone[0:8, 0:10, 0:10], volume[0:8, 0:10, 0:10])
    finally:
        clone.close()


def test_export_subset_downloads_what_it_needs_and_stands_alone(desc, server, volume, tmp_path):
    from lazyflow_rbfs import BlockwiseFileset

    with RESTfulBlockwiseFileset(str(desc)) as vol:
        with pytest.raises(OutOfBoundsError):
            vol.exportSubset(((0, 0, 5), (8, 32, 32)), str(tmp_path / "bad"))
        assert server.requests == 0
        exported = vol.exportSubset(((8, 32, 32), (24, 96, 80)), str(tmp_path / "export"))
    assert server.requests == 2 * 2 * 2
    import shutil

    shutil.rmtree(desc.parent / "cache")
    with BlockwiseFileset(exported) as local:
        np.testing.assert_array_equal(local.readData(((8, 32, 32), (24, 96, 80))), volume[8:24, 32:96, 32:80])


def test_report_failed_is_a_plain_list_and_ok_says_none_failed():
    import pickle

    from lazyflow_rbfs.cache import PrefetchReport

    report = PrefetchReport(total=3, downloaded=1)
    assert report.ok and report.failed == [] and len(report.failed) == 0 and type(report.failed) is list
    report.record_failure((0, 0, 8), "DownloadError: 404", "DownloadError")
    assert not report.ok and report.failed == [(0, 0, 8)] and report.failed != [(0, 0, 0)]
    assert report.done == 2 and report.error_types == {"DownloadError": 1}
    clone = pickle.loads(pickle.dumps(report))
    assert type(clone.failed) is list and clone.failed == [(0, 0, 8)] and clone == report


def test_download_all_blocks_max_parallel_is_honoured_above_the_fileset_default(server, tmp_path, volume):
    server.pause()
    desc = Path(server.write_description(tmp_path / "v.json", block_shape=(4, 16, 16), cache_dir="c"))
    with RESTfulBlockwiseFileset(str(desc), max_parallel=2) as vol:
        done = threading.Event()
        t = threading.Thread(target=lambda: (vol.downloadAllBlocks(5), done.set()))
        t.start()
        try:
            # Five requests reach the paused server at once, although the fileset was opened with 2.
            assert server.wait_for_in_flight(5, timeout=30)
        finally:
            server.resume()
        t.join(60)
        assert done.is_set()
        np.testing.assert_array_equal(vol[...], volume)
    assert server.max_in_flight == 5


@pytest.mark.skipif(not HAVE_PROC, reason="needs /proc")
def test_cold_read_copies_downloaded_blocks_from_memory_not_back_from_disk(server, tmp_path, volume):
    # Compressed blocks, read through HDF5 handles, which stay open: an open file shows a read from disk.
    # (Contiguous blocks are read with pread and closed at once: test_store's
    # test_contiguous_blocks_are_read_without_holding_a_file_open.)
    desc = Path(
        server.write_description(
            tmp_path / "volume.json", block_shape=BLOCK, cache_dir="cache", compression="gzip"
        )
    )
    with RESTfulBlockwiseFileset(str(desc)) as vol:
        got = vol.readData(((3, 10, 20), (20, 90, 70)))
        # nothing was read back from the files just written (reads keep the block files they open open)
        assert open_files_under(vol.root_directory) == []
        np.testing.assert_array_equal(got, volume[3:20, 10:90, 20:70])
        again = vol.readData(((3, 10, 20), (20, 90, 70)))  # warm: from the block files
        assert open_files_under(vol.root_directory) != []
        np.testing.assert_array_equal(again, got)
    assert open_files_under(desc.parent / "cache") == []


def _read_new_block_in_child(vol, expected_sum, conn):
    try:
        data = vol.readData(((8, 0, 0), (16, 32, 32)))  # a block the parent never fetched
        conn.send(("ok", int(data.sum()) == expected_sum))
    except BaseException as exc:  # reported to the parent
        conn.send(("error", repr(exc)))


def test_fileset_used_before_fork_works_in_the_forked_child(desc, volume):
    ctx = multiprocessing.get_context("fork")
    with RESTfulBlockwiseFileset(str(desc), max_parallel=2) as vol:
        vol.readData(((0, 0, 0), (8, 32, 32)))  # the download pool and HTTP sessions now exist
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_read_new_block_in_child, args=(vol, int(volume[8:16, :32, :32].sum()), child)
        )
        proc.start()
        proc.join(60)  # deadlock guard: a child inheriting a dead pool would wait forever
        alive = proc.is_alive()
        if alive:
            proc.kill()
        assert not alive, "the forked child hung in readData"
        assert parent.recv() == ("ok", True)


def test_close_while_other_threads_read_and_prefetch_ends_them_cleanly(desc, server):
    server.pause()
    vol = RESTfulBlockwiseFileset(str(desc), max_parallel=1)
    outcomes = {}

    def run(name, fn):
        try:
            fn()
            outcomes[name] = "ok"
        except ClosedError:
            outcomes[name] = "closed"
        except PrefetchError as exc:
            reasons = set(exc.report.errors.values())
            outcomes[name] = "closed" if all("ClosedError" in r for r in reasons) else reasons
        except BaseException as exc:  # any other outcome fails the test below
            outcomes[name] = repr(exc)

    reader = threading.Thread(target=run, args=("read", lambda: vol.readData(((0, 0, 0), SHAPE))))
    prefetch = threading.Thread(target=run, args=("prefetch", lambda: vol.downloadAllBlocks(1)))
    reader.start()
    prefetch.start()
    assert server.wait_for_requests(1, timeout=30)
    assert any(t.name.startswith("rbfs-download") for t in threading.enumerate()), "the check below can fail"
    closer = threading.Thread(target=vol.close)
    closer.start()
    server.resume()
    for t in (closer, reader, prefetch):
        t.join(60)
        assert not t.is_alive(), "close() or a reader hung"
    assert outcomes["read"] in ("ok", "closed") and outcomes["prefetch"] in ("ok", "closed"), outcomes
    # close() does not wait for them, but once the server answers, the download threads end on their own.
    for t in threading.enumerate():
        if t.name.startswith(("rbfs-download", "rbfs-prefetch")):
            t.join(30)
            assert not t.is_alive(), f"{t.name} outlived its closed fileset"
    with pytest.raises(ClosedError):
        vol.readData(((0, 0, 0), (1, 1, 1)))


def test_report_reads_like_a_mapping_too():
    from lazyflow_rbfs.cache import PrefetchReport

    report = PrefetchReport(total=4, downloaded=3, skipped=1)
    assert report["downloaded"] == 3 and report["failed"] == []
    assert dict(report)["skipped"] == 1 and set(dict(report)) == set(report.keys())
    with pytest.raises(KeyError):
        report["nonsense"]


@pytest.mark.parametrize("damage", ["delete", "garbage"])
def test_cache_heals_a_block_marked_available_whose_file_is_gone_or_broken(desc, server, volume, damage):
    with RESTfulBlockwiseFileset(str(desc)) as vol:
        vol.readData(((0, 0, 0), (8, 32, 32)))
        path = vol.getDatasetPathComponents((0, 0, 0)).externalPath
    if damage == "delete":
        os.remove(path)
    else:
        Path(path).write_bytes(b"not an HDF5 file")
    with RESTfulBlockwiseFileset(str(desc)) as vol:
        np.testing.assert_array_equal(vol[0:8, 0:32, 0:32], volume[0:8, 0:32, 0:32])
    assert server.requests == 2  # the damaged block was fetched again, once


def test_store_reports_a_missing_block_file_as_block_not_ready(desc, volume):
    from lazyflow_rbfs import BlockwiseFileset
    from lazyflow_rbfs.errors import BlockNotReadyError

    local_desc = RESTfulBlockwiseFileset.readDescription(str(desc)).local_description
    with RESTfulBlockwiseFileset(str(desc)) as vol:
        vol.readData(((0, 0, 0), (8, 32, 32)))
        path = vol.getDatasetPathComponents((0, 0, 0)).externalPath
    os.remove(path)
    with BlockwiseFileset(str(desc), preparsedDescription=local_desc) as local:
        with pytest.raises(BlockNotReadyError, match="verify --repair") as info:
            local.readData(((0, 0, 0), (1, 1, 1)))
        assert tuple(info.value.block_start) == (0, 0, 0)


def test_auth_headers_reach_the_server_but_never_disk_or_logs(desc, server, volume, caplog, tmp_path):
    import logging

    caplog.set_level(logging.DEBUG)
    secret = "Token 5ecret-never-written"
    server.faults.fail_next(1, status=503)  # an error path too
    with RESTfulBlockwiseFileset(str(desc), headers={"Authorization": secret}, retries=2) as vol:
        np.testing.assert_array_equal(vol[...], volume)
        assert secret not in repr(vol) and secret not in repr(vol.remote)
    assert all(r.headers.get("Authorization") == secret for r in server.request_log)
    assert secret not in caplog.text and caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_cold_read_does_not_hold_every_downloaded_block_until_the_end(tmp_path):
    import tracemalloc

    big = np.random.default_rng(1).integers(0, 255, (64, 512, 1024), dtype=np.uint8)  # 32 MiB
    with CutoutServer(big) as srv:
        path = srv.write_description(tmp_path / "big.json", block_shape=(32, 128, 256), cache_dir="c")
        with RESTfulBlockwiseFileset(path, max_parallel=2) as vol:
            out = np.empty(big.shape, big.dtype)
            tracemalloc.start()
            try:
                vol.readData(((0, 0, 0), big.shape), out)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    np.testing.assert_array_equal(out, big)
    # Each 1 MiB block is copied into the output as it lands and dropped; keeping all 32 of them (as a
    # read-back-later design would) needs at least the output's size again.
    assert peak < 0.75 * out.nbytes, peak / 2**20


class _WaitSeen:
    """A logging handler that sets an Event when the cache starts waiting on another process's lock."""

    def __init__(self):
        import logging

        self.event = threading.Event()
        self.handler = logging.Handler()
        self.handler.emit = lambda record: (
            self.event.set() if "downloaded by another process" in record.getMessage() else None
        )
        self.logger = logging.getLogger("lazyflow_rbfs.cache")

    def __enter__(self):
        import logging

        self.level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self.handler)
        return self.event

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


def test_close_does_not_wait_for_another_process_holding_a_block_lock(desc, server):
    lock_path, holder = hold_first_block_lock_in_another_process(desc)
    try:
        vol = RESTfulBlockwiseFileset(str(desc))  # lock_timeout=None: would wait as long as the holder lives
        outcome = {}

        def read():
            try:
                vol.readData(((0, 0, 0), (1, 1, 1)))
                outcome["read"] = "ok"
            except ClosedError:
                outcome["read"] = "closed"

        with _WaitSeen() as waiting:
            reader = threading.Thread(target=read)
            reader.start()
            assert waiting.wait(30), "the worker never started waiting for the held lock"
        closer = threading.Thread(target=vol.close)
        closer.start()
        closer.join(30)
        reader.join(30)
        assert not closer.is_alive(), "close() waited for another process's lock"
        assert outcome == {"read": "closed"}
        assert server.requests == 0
    finally:
        holder.kill()
        holder.wait()
    free = BlockLock(lock_path)  # the abandoned helper gave the lock back once the holder died
    assert free.acquire(timeout=30)
    free.release()


def test_reopen_after_close_downloads_again(desc, server, volume):
    vol = RESTfulBlockwiseFileset(str(desc))
    vol.readData(((0, 0, 0), (8, 32, 32)))
    vol.close()
    vol.reopen("r")
    try:
        np.testing.assert_array_equal(vol[8:16, 0:32, 0:32], volume[8:16, 0:32, 0:32])
    finally:
        vol.close()
    assert server.requests == 2


def test_ensuring_a_list_that_names_a_block_twice_downloads_it_once_and_hands_over_each_block(desc, server):
    """The fetcher's wait loop takes each finished download once, even when a block is listed twice."""
    starts = [(0, 0, 0), (0, 0, 0), (0, 0, BLOCK[2]), (0, 0, BLOCK[2])]
    handed: list[tuple[int, ...]] = []
    with RESTfulBlockwiseFileset(str(desc), max_parallel=4) as vol:
        vol._fetcher.ensure(starts, on_data=lambda start, data: handed.append(tuple(start)))
        assert all(vol.getBlockStatus(s) == vol.BLOCK_AVAILABLE for s in starts)
    assert server.requests == 2
    assert sorted(handed) == [(0, 0, 0), (0, 0, BLOCK[2])]
