"""Distributed prefetch and dask arrays on a real LocalCluster of worker processes sharing one cache.

The cutout server runs in this process; the workers (separate processes) reach it over 127.0.0.1 and
share the cache directory under ``tmp_path``.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

from lazyflow_rbfs import geometry  # noqa: E402
from lazyflow_rbfs.cache import RESTfulBlockwiseFileset  # noqa: E402
from lazyflow_rbfs.distributed import (  # noqa: E402
    _BlockSource,
    _spec_of,
    close_worker_filesets,
    prefetch_on_cluster,
    to_dask,
)
from lazyflow_rbfs.errors import PrefetchError  # noqa: E402
from lazyflow_rbfs.testing.pytest_plugin import SAMPLE_BLOCK, SAMPLE_SHAPE  # noqa: E402

pytestmark = pytest.mark.timeout(90)

N_WORKERS = 3
THREADS = 2
ALL_BLOCKS = [
    tuple(int(x) for x in b) for b in geometry.iter_block_starts((0, 0, 0), SAMPLE_SHAPE, SAMPLE_BLOCK)
]
N_BLOCKS = len(ALL_BLOCKS)  # 3 * 3 * 3, with clipped edge blocks on every axis


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=N_WORKERS,
        threads_per_worker=THREADS,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(N_WORKERS, timeout=60)
        yield client
        # Every test has its own cache directory: let the workers forget the filesets of this one.
        client.run(close_worker_filesets)


def leftovers(root: Path) -> list[str]:
    """Lock and temporary files anywhere under ``root``."""
    return [
        os.path.join(d, f)
        for d, _, files in os.walk(root)
        for f in files
        if f.endswith((".lock", ".partial"))
    ]


def check_cache_complete(path: Path, sample: np.ndarray, server) -> None:
    """Every block is available and the cache holds the source volume, with no request needed."""
    before = server.requests
    with RESTfulBlockwiseFileset(path) as fileset:
        missing = [b for b in ALL_BLOCKS if fileset.getBlockStatus(b) != fileset.BLOCK_AVAILABLE]
        assert missing == []
        np.testing.assert_array_equal(fileset.readData(((0, 0, 0), SAMPLE_SHAPE)), sample)
    assert server.requests == before
    assert leftovers(path.parent / "cache") == []


def test_each_block_downloaded_exactly_once(client, cutout_server, composite_description_path, sample_array):
    calls: list[tuple[int, int]] = []
    cutout_server.latency = 0.05  # so that requests overlap
    report = prefetch_on_cluster(
        composite_description_path,
        client,
        batch_size=4,
        max_parallel=1,
        progress=lambda d, t: calls.append((d, t)),
    )
    # max_parallel bounds each worker process, however many of its threads run batches.
    assert 1 <= cutout_server.max_in_flight <= N_WORKERS
    assert (report.total, report.downloaded, report.skipped, report.failed) == (N_BLOCKS, N_BLOCKS, 0, [])
    assert report.errors == {}
    assert cutout_server.requests == N_BLOCKS
    assert len(set(cutout_server.request_log_paths())) == N_BLOCKS
    check_cache_complete(composite_description_path, sample_array, cutout_server)
    # Progress: per finished batch, in this process, ending at (total, total).
    assert calls[-1] == (N_BLOCKS, N_BLOCKS)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert {t for _, t in calls} == {N_BLOCKS}
    # The work was spread: more than one worker process opened the fileset.
    opened = client.run(close_worker_filesets)
    assert sum(1 for n in opened.values() if n > 0) >= 2


def test_roi_and_precached_blocks_are_counted_as_skipped(
    client, cluster, cutout_server, composite_description_path, sample_array
):
    # A roi first (the scheduler given by address: a client of our own is connected and closed).
    roi = ((8, 0, 0), (16, 40, 36))
    report = prefetch_on_cluster(composite_description_path, cluster.scheduler_address, roi=roi, batch_size=2)
    assert (report.total, report.downloaded, report.skipped, report.failed) == (9, 9, 0, [])
    assert cutout_server.requests == 9
    # Two more blocks through a fileset in this process.
    with RESTfulBlockwiseFileset(composite_description_path) as fileset:
        fileset.readData(((0, 0, 0), (8, 16, 32)))
    assert cutout_server.requests == 11

    report = prefetch_on_cluster(composite_description_path, client, batch_size=5)
    assert (report.total, report.downloaded, report.skipped, report.failed) == (N_BLOCKS, 16, 11, [])
    assert cutout_server.requests == N_BLOCKS
    again = prefetch_on_cluster(composite_description_path, client)
    assert (again.total, again.downloaded, again.skipped) == (N_BLOCKS, 0, N_BLOCKS)
    assert cutout_server.requests == N_BLOCKS
    check_cache_complete(composite_description_path, sample_array, cutout_server)


def test_failures_are_aggregated(client, cutout_server, composite_description_path):
    # URL segments are x,y,z: "/8,16/" is the z range 8..16, i.e. the 9 blocks starting at z = 8.
    cutout_server.faults.fail_matching("/8,16/", status=404)
    expected = sorted(b for b in ALL_BLOCKS if b[0] == 8)

    # max_failures=0: this is about aggregating the failures of every batch. With the default, the run
    # could (rightly) stop early whenever the failing batches happen to finish first.
    with pytest.raises(PrefetchError) as info:
        prefetch_on_cluster(composite_description_path, client, batch_size=4, max_failures=0)
    report = info.value.report
    assert sorted(report.failed) == expected
    assert (report.total, report.downloaded, report.skipped) == (N_BLOCKS, N_BLOCKS - 9, 0)
    assert sorted(report.errors) == expected
    assert all("404" in message for message in report.errors.values())
    assert "9 failed" in str(info.value)

    report = prefetch_on_cluster(
        composite_description_path, client, batch_size=4, raise_on_failure=False, max_failures=0
    )
    assert sorted(report.failed) == expected
    assert (report.downloaded, report.skipped) == (0, N_BLOCKS - 9)
    with RESTfulBlockwiseFileset(composite_description_path) as fileset:
        assert [b for b in ALL_BLOCKS if fileset.getBlockStatus(b) != fileset.BLOCK_AVAILABLE] == expected
    assert leftovers(composite_description_path.parent / "cache") == []


def test_a_task_that_fails_for_good_fails_its_whole_batch(client, cutout_server, composite_description_path):
    # The workers cannot open the fileset with these options: every task raises, is retried, then fails.
    # (max_failures=0: every batch runs, rather than stopping early on such systematic failures.)
    report = prefetch_on_cluster(
        composite_description_path,
        client,
        batch_size=10,
        raise_on_failure=False,
        max_failures=0,
        max_open_files=0,
    )
    assert report.total == N_BLOCKS
    assert sorted(report.failed) == sorted(ALL_BLOCKS)
    assert report.downloaded == report.skipped == 0
    assert all("max_open_files" in message for message in report.errors.values())
    assert cutout_server.requests == 0


def test_to_dask_chunks_are_the_cache_blocks(client, cutout_server, composite_description_path, sample_array):
    x = to_dask(composite_description_path)
    assert x.shape == SAMPLE_SHAPE
    assert x.dtype == sample_array.dtype
    assert x.chunks == ((8, 8, 4), (16, 16, 8), (16, 16, 4))
    assert cutout_server.requests == 0  # building the graph does no I/O
    np.testing.assert_array_equal(client.compute(x).result(), sample_array)
    assert cutout_server.requests == N_BLOCKS  # each block once, in the workers
    part = x[3:17, ::3, 30:1:-2]
    np.testing.assert_array_equal(client.compute(part).result(), sample_array[3:17, ::3, 30:1:-2])
    np.testing.assert_array_equal(client.compute(x[5, 7, :]).result(), sample_array[5, 7, :])
    assert cutout_server.requests == N_BLOCKS
    assert leftovers(composite_description_path.parent / "cache") == []


def test_to_dask_of_a_fileset_reads_through_it_in_process(
    cutout_server, composite_description_path, sample_array
):
    with RESTfulBlockwiseFileset(composite_description_path, max_parallel=3) as fileset:
        x = to_dask(fileset)
        assert x.chunks == ((8, 8, 4), (16, 16, 8), (16, 16, 4))
        np.testing.assert_array_equal(x.compute(scheduler="threads"), sample_array)
        assert fileset.blocks_downloaded == N_BLOCKS  # the given fileset did the downloads
    assert cutout_server.requests == N_BLOCKS


def test_to_dask_of_a_million_blocks_is_lazy(cutout_server, tmp_path):
    import json

    import dask

    path = Path(cutout_server.write_description(tmp_path / "big.json", block_shape=(1, 100, 100)))
    description = json.loads(path.read_text())
    description["remote_description"]["bounds"] = [100, 10_000, 10_000]
    description["local_description"]["shape"] = [100, 10_000, 10_000]
    path.write_text(json.dumps(description))

    x = to_dask(path)
    assert x.shape == (100, 10_000, 10_000)
    assert x.numblocks == (100, 100, 100)
    # Nothing per block was built: a small selection's graph holds only the blocks it touches.
    (part,) = dask.optimize(x[5:7, 150:250, 9_950:10_000])
    assert 4 <= len(dict(part.__dask_graph__())) <= 12
    assert cutout_server.requests == 0


def test_block_source_indexing_matches_numpy(cutout_server, composite_description_path, sample_array):
    spec, _ = _spec_of(composite_description_path, {})
    with RESTfulBlockwiseFileset(composite_description_path) as fileset:
        source = _BlockSource(spec, fileset.shape, fileset.dtype, fileset)
        keys = [
            (slice(0, 8), slice(16, 32), slice(0, 16)),
            (3, slice(None, None, 5), slice(-1, 2, -3)),
            (Ellipsis, 7),
            (-1,),
            (slice(4, 4), slice(None), 0),
            (slice(19, None, -4), Ellipsis, slice(1, 35, 11)),
        ]
        for key in keys:
            got = source[key]
            np.testing.assert_array_equal(got, sample_array[key])
            assert got.shape == sample_array[key].shape
        with pytest.raises(IndexError):
            source[20]
        with pytest.raises(IndexError):
            source[0, 0, 0, 0]
        with pytest.raises(TypeError):
            source[[1, 2]]


def test_lazyflow_rbfs_never_imports_dask():
    code = (
        "import sys, lazyflow_rbfs, lazyflow_rbfs.cli\n"
        "lazyflow_rbfs.RESTfulBlockwiseFileset, lazyflow_rbfs.BlockwiseFilesetFactory\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_a_killed_worker_s_blocks_are_completed_by_the_others(
    client, cutout_server, composite_description_path, sample_array
):
    pids = client.run(os.getpid)
    assert len(pids) == N_WORKERS
    cutout_server.pause()
    pool = ThreadPoolExecutor(1)
    try:
        # max_parallel=2 per worker process: with every thread busy, each worker holds exactly 2 requests.
        future = pool.submit(
            prefetch_on_cluster, composite_description_path, client, batch_size=2, max_parallel=2
        )
        saturated = N_WORKERS * 2
        assert cutout_server.wait_for_in_flight(saturated, timeout=60)
        assert cutout_server.requests == saturated
        victim = next(iter(pids.values()))
        pidfd = os.pidfd_open(victim)
        try:
            os.kill(victim, signal.SIGKILL)
            # Resume only once it is dead, so its held requests reach nobody (a pidfd turns readable then).
            assert select.select([pidfd], [], [], 30)[0] == [pidfd]
        finally:
            os.close(pidfd)
    finally:
        cutout_server.resume()
    report = future.result(timeout=60)
    pool.shutdown()

    assert (report.total, report.downloaded, report.skipped, report.failed) == (N_BLOCKS, N_BLOCKS, 0, [])
    # The victim's two in-flight blocks were fetched again by the others; every other block once.
    assert N_BLOCKS < cutout_server.requests <= N_BLOCKS + 2
    assert len(set(cutout_server.request_log_paths())) == N_BLOCKS
    check_cache_complete(composite_description_path, sample_array, cutout_server)


def test_download_all_blocks_and_rbfs_prefetch_hand_blocks_to_the_cluster(
    client, cluster, cutout_server, composite_description_path, sample_array, capsys
):
    from lazyflow_rbfs.cli import main

    path = Path(composite_description_path)
    with RESTfulBlockwiseFileset(path) as fileset:
        report = fileset.downloadAllBlocks(
            2, roi=((0, 0, 0), (8, SAMPLE_SHAPE[1], SAMPLE_SHAPE[2])), scheduler=client
        )
        assert report.downloaded == 9 and report.ok and report.failed == []
        assert fileset.remote.stats.requests == 0  # the workers made the requests
    assert cutout_server.requests == 9
    code = main(
        ["prefetch", str(path), "--scheduler", cluster.scheduler_address, "--batch-size", "4", "-j", "2"]
    )
    assert code == 0, capsys.readouterr().err
    assert "18 downloaded, 9 already cached, 0 failed" in capsys.readouterr().out
    assert cutout_server.requests == N_BLOCKS
    check_cache_complete(path, sample_array, cutout_server)
    with RESTfulBlockwiseFileset(path) as fileset:
        array = fileset.to_dask()
        assert array.chunks[0][0] == SAMPLE_BLOCK[0]
        np.testing.assert_array_equal(array[2:5].compute(scheduler="threads"), sample_array[2:5])


# ---------------------------------------------------------------- systematic failures stop the cluster too


@pytest.fixture
def dead_port():
    """A port where connections are refused: bound (so no server can take it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_a_dead_port_stops_a_distributed_prefetch_early(client, cutout_server, tmp_path, dead_port):
    # 10 x 10 x 9 = 900 small blocks in batches of 4: far more than the batches in flight at once.
    dead = cutout_server.url_format.replace(f":{cutout_server.port}/", f":{dead_port}/")
    path = cutout_server.write_description(
        tmp_path / "dead.json", block_shape=(2, 4, 4), cache_dir="cache", url_format=dead
    )
    with pytest.raises(PrefetchError) as info:
        prefetch_on_cluster(path, client, batch_size=4, retries=0)
    report = info.value.report
    assert report.total == 900 and report.stopped_early
    assert "DownloadError" in report.stop_reason and "first" in report.stop_reason
    # The batches in flight when the rule tripped finish; no other batch is started.
    assert 8 <= len(report.failed) <= 4 * 2 * N_WORKERS * THREADS + 8
    assert report.downloaded == 0 and report.not_attempted == 900 - len(report.failed) - report.skipped
    assert set(report.error_types) == {"DownloadError"}

    report = prefetch_on_cluster(
        path,
        client,
        batch_size=4,
        retries=0,
        roi=((0, 0, 0), (2, 16, 16)),
        max_failures=0,
        raise_on_failure=False,
    )
    assert len(report.failed) == 16 and not report.stopped_early


def test_a_read_only_cache_stops_a_distributed_prefetch_at_once(client, make_cutout_server, tmp_path, tmpfs):
    # Its own URL prefix: a batch of an earlier test still running on a shared worker may reach a new
    # server that got the old one's port; only requests for this test's volume count.
    cutout_server = make_cutout_server(prefix="/read-only-cache-test")
    mount = tmpfs("read-only", 1024, ro=True)
    path = cutout_server.write_description(
        tmp_path / "v.json", block_shape=(2, 4, 4), cache_dir=str(mount / "cache")
    )
    with pytest.raises(PrefetchError) as info:
        # A large max_failures: only the cache rule can stop this one.
        prefetch_on_cluster(path, client, batch_size=16, max_failures=10_000)
    report = info.value.report
    assert report.stopped_early and "cache cannot be written" in report.stop_reason
    assert str(mount) in report.stop_reason
    assert report.not_attempted > 900 // 2
    ours = [p for p in cutout_server.request_log_paths() if p.startswith("/read-only-cache-test/")]
    assert ours == [], ours
