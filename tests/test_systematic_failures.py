"""A prefetch stops early when its failures are systematic, and says why (issue 9, "Also").

Systematic: the first ``max_failures`` blocks it attempts all fail with the same error class (a dead port,
a wrong URL), or the cache cannot be written at all (read-only, full disk). Mixed or transient failures
never stop it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lazyflow_rbfs import RESTfulBlockwiseFileset
from lazyflow_rbfs.cache import DEFAULT_MAX_FAILURES
from lazyflow_rbfs.cli import main
from lazyflow_rbfs.errors import ArgumentError, PrefetchError
from lazyflow_rbfs.testing import CutoutServer, sample_volume

pytestmark = pytest.mark.timeout(60)

SHAPE = (64, 128, 128)
BLOCK = (8, 16, 16)
NBLOCKS = 8 * 8 * 8  # 512


@pytest.fixture
def volume() -> np.ndarray:
    return sample_volume(SHAPE, seed=11)


@pytest.fixture
def server(volume):
    with CutoutServer(volume) as srv:
        yield srv


@pytest.fixture
def dead_description(server, tmp_path: Path) -> Iterator[Path]:
    """A description of ``server``'s volume whose URLs point at a port where connections are refused
    (bound for the test, so that no other server can take it, but not listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        remote = server.url_format.replace(f":{server.port}/", f":{sock.getsockname()[1]}/")
        yield Path(
            server.write_description(
                tmp_path / "dead.json", block_shape=BLOCK, cache_dir="cache", url_format=remote
            )
        )


def test_a_dead_port_stops_the_prefetch_after_the_first_failures(dead_description):
    with RESTfulBlockwiseFileset(dead_description, max_parallel=4, retries=1) as vol:
        with pytest.raises(PrefetchError) as info:
            vol.downloadAllBlocks()
    report = info.value.report
    assert report.stopped_early
    # The first DEFAULT_MAX_FAILURES failed; only the downloads already running when that was decided
    # ended too. Nothing else was attempted.
    assert DEFAULT_MAX_FAILURES <= len(report.failed) <= DEFAULT_MAX_FAILURES + 4
    assert report.downloaded == report.skipped == 0
    assert report.not_attempted == NBLOCKS - len(report.failed)
    assert report.total == NBLOCKS
    assert f"first {DEFAULT_MAX_FAILURES} blocks" in report.stop_reason
    assert "DownloadError" in report.stop_reason
    assert "stopped early" in report.summary() and "not attempted" in report.summary()
    assert "stopped early" in str(info.value)
    assert report.error_types == {"DownloadError": len(report.failed)}


def test_max_failures_sets_how_many_and_zero_never_stops(dead_description):
    with RESTfulBlockwiseFileset(dead_description, max_parallel=2, retries=0) as vol:
        report = vol.downloadAllBlocks(max_failures=3, raise_on_failure=False)
        assert report.stopped_early and 3 <= len(report.failed) <= 3 + 2
        assert "first 3 blocks" in report.stop_reason
        roi = ((0, 0, 0), (8, 64, 64))  # 16 blocks
        report = vol.downloadAllBlocks(max_failures=0, roi=roi, raise_on_failure=False)
        assert not report.stopped_early and report.stop_reason is None
        assert len(report.failed) == 16 and report.not_attempted == 0
        report = vol.downloadAllBlocks(max_failures=None, roi=roi, raise_on_failure=False)
        assert not report.stopped_early and len(report.failed) == 16
        for bad in (-1, 2.5, True, "8"):
            with pytest.raises(ArgumentError, match="max_failures"):
                vol.downloadAllBlocks(max_failures=bad)


def test_failures_mixed_with_successes_never_stop_the_prefetch(server, tmp_path, volume):
    desc = server.write_description(tmp_path / "v.json", block_shape=BLOCK, cache_dir="cache")
    # Transient: the first requests fail, then the server recovers.
    server.faults.fail_next(3, status=503)
    # Persistent but partial: a whole slab of 64 blocks in the middle of the volume is missing.
    server.faults.fail_matching("/24,32/", status=404)
    with RESTfulBlockwiseFileset(desc, max_parallel=4, retries=0) as vol:
        report = vol.downloadAllBlocks(raise_on_failure=False)
        assert not report.stopped_early and report.stop_reason is None
        assert report.not_attempted == 0
        assert report.downloaded + len(report.failed) == NBLOCKS
        assert 64 <= len(report.failed) <= 64 + 3
        assert all(b[0] == 24 for b in report.failed if "404" in report.errors.get(b, "404"))
        np.testing.assert_array_equal(vol[0:8], volume[0:8])


def test_the_last_of_all_blocks_failing_is_not_an_early_stop(server, tmp_path):
    desc = server.write_description(tmp_path / "v.json", block_shape=BLOCK, cache_dir="cache")
    server.faults.fail_matching("/hdf5/", status=500)
    with RESTfulBlockwiseFileset(desc, retries=0) as vol:
        # Exactly max_failures blocks, all failing: nothing was left out, so nothing "stopped early".
        report = vol.downloadAllBlocks(roi=((0, 0, 0), (8, 32, 64)), max_failures=8, raise_on_failure=False)
    assert len(report.failed) == 8 and not report.stopped_early and report.not_attempted == 0


def test_rbfs_prefetch_prints_why_it_stopped_and_exits_1(dead_description, capsys):
    code = main(["prefetch", str(dead_description), "--retries", "0", "--max-failures", "5", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rbfs: error: "), lines
    assert "stopped early" in lines[0] and "first 5 blocks" in lines[0] and "--max-failures" in lines[0]
    assert "not attempted" in out
    code = main(["prefetch", str(dead_description), "--max-failures", "-1"])
    assert code == 2 and "--max-failures" in capsys.readouterr().err


@pytest.fixture
def read_only_dir(tmpfs):
    """A read-only file system (a tmpfs mounted ``ro``): needs root; skipped otherwise."""
    return tmpfs("read-only", 1024, ro=True)


def test_a_read_only_cache_stops_the_prefetch_at_the_first_failure(server, tmp_path, read_only_dir):
    desc = server.write_description(
        tmp_path / "v.json", block_shape=BLOCK, cache_dir=str(read_only_dir / "cache")
    )
    with RESTfulBlockwiseFileset(desc, max_parallel=4, retries=0) as vol:
        # max_failures does not matter here: a cache that cannot be written fails every block.
        with pytest.raises(PrefetchError) as info:
            vol.downloadAllBlocks(max_failures=1000)
    report = info.value.report
    assert report.stopped_early
    assert 1 <= len(report.failed) <= 4  # the downloads already running, nothing queued after them
    assert report.not_attempted == NBLOCKS - len(report.failed)
    assert "cache" in report.stop_reason and str(read_only_dir) in report.stop_reason
    assert server.requests <= 4
