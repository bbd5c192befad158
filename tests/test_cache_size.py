"""Issue 12: a size-bounded cache with cross-process LRU eviction (max_cache_bytes, rbfs gc/purge/status).

Real HTTP server on 127.0.0.1, real processes, real HDF5 block files.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lazyflow_rbfs import RESTfulBlockwiseFileset
from lazyflow_rbfs.cache.limit import CacheLimit
from lazyflow_rbfs.cli import main
from lazyflow_rbfs.errors import ArgumentError, DescriptionError, PrefetchError
from lazyflow_rbfs.store import BlockwiseFileset
from lazyflow_rbfs.store.eviction import PAUSE_ENV, iter_entries, parse_size, walk_footprint
from lazyflow_rbfs.store.ledger import LEDGER_FILE_NAME, Ledger
from lazyflow_rbfs.testing import CutoutServer, sample_volume

REPO = Path(__file__).resolve().parents[1]
SHAPE = (16, 64, 64)
BLOCK = (8, 32, 32)  # 2 x 2 x 2 blocks
STARTS = [(z, y, x) for z in (0, 8) for y in (0, 32) for x in (0, 32)]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


@pytest.fixture
def volume():
    return sample_volume(SHAPE, seed=5)


@pytest.fixture
def server(volume):
    with CutoutServer(volume) as srv:
        yield srv


def _desc(server, tmp_path, max_cache_bytes=None, shape_block=BLOCK) -> str:
    path = server.write_description(tmp_path / "volume.json", block_shape=shape_block, cache_dir="cache")
    if max_cache_bytes is not None:
        data = json.loads(Path(path).read_text())
        data["local_description"]["max_cache_bytes"] = max_cache_bytes
        Path(path).write_text(json.dumps(data))
    return path


def _block_roi(start):
    return (start, tuple(s + b for s, b in zip(start, BLOCK)))


def _block_bytes(server, tmp_path) -> int:
    """Size of one block file of this volume (they are all alike: uncompressed, same shape)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    with RESTfulBlockwiseFileset(_desc(server, probe)) as fs:
        fs.readData(_block_roi(STARTS[0]))
        size = os.path.getsize(fs.getDatasetPathComponents(STARTS[0]).externalPath)
    server.reset_stats()
    return size


def _cached(fs) -> set[tuple[int, ...]]:
    return {b for b in STARTS if fs.getBlockStatus(b) == fs.BLOCK_AVAILABLE}


# ------------------------------------------------------------------ sizes and the description field


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500M", 500 << 20),
        ("50G", 50 << 30),
        ("2T", 2 << 40),
        ("12345", 12345),
        ("1.5K", 1536),
        ("8KiB", 8192),
    ],
)
def test_sizes_parse_with_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "-5M", "5X", "five"])
def test_bad_sizes_are_refused_with_the_value_named(text):
    with pytest.raises(ArgumentError, match="500M"):
        parse_size(text)


def test_the_description_field_sets_the_limit_and_is_validated(server, tmp_path):
    path = _desc(server, tmp_path, max_cache_bytes="3 * 1024")
    desc = RESTfulBlockwiseFileset.readDescription(path)
    assert desc.local_description.max_cache_bytes == 3072
    with RESTfulBlockwiseFileset(path) as fs:
        assert fs.cache_limit.limit == 3072
    with RESTfulBlockwiseFileset(path, max_cache_bytes="1M") as fs:  # the option wins
        assert fs.cache_limit.limit == 1 << 20
    bad = _desc(server, tmp_path, max_cache_bytes=-1)
    with pytest.raises(DescriptionError) as info:
        RESTfulBlockwiseFileset.readDescription(bad)
    assert info.value.field == "local_description.max_cache_bytes"


def test_an_option_that_is_not_a_size_is_refused(server, tmp_path):
    with pytest.raises(ArgumentError, match="max_cache_bytes"):
        RESTfulBlockwiseFileset(_desc(server, tmp_path), max_cache_bytes=-3)


# ------------------------------------------------------------------ use tracking


def test_a_read_records_the_use_in_status_mtime_without_a_write_per_read(server, tmp_path):
    path = _desc(server, tmp_path)
    with RESTfulBlockwiseFileset(path) as fs:
        fs.readData(((0, 0, 0), SHAPE))
        status = Path(fs.blocks.paths(STARTS[3]).status_path)
    old = time.time() - 3600
    os.utime(status, (old, old))
    with RESTfulBlockwiseFileset(path) as fs:
        fs.readData(_block_roi(STARTS[3]))
        assert abs(status.stat().st_mtime - time.time()) < 60  # recorded by the read
        os.utime(status, (old, old))
        for _ in range(5):
            fs.readData(_block_roi(STARTS[3]))
        assert status.stat().st_mtime == pytest.approx(old)  # recorded recently: no write per read
    assert server.requests == len(STARTS)


def test_use_tracking_never_touches_a_file_a_planted_status_link_points_to(server, tmp_path):
    path = _desc(server, tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("not the cache's")
    old = time.time() - 3600
    os.utime(outside, (old, old))
    with RESTfulBlockwiseFileset(path) as fs:
        fs.readData(_block_roi(STARTS[0]))
        status = Path(fs.blocks.paths(STARTS[0]).status_path)
    status.unlink()
    status.symlink_to(outside)
    with RESTfulBlockwiseFileset(path) as fs:
        fs.readData(_block_roi(STARTS[0]))
    assert outside.stat().st_mtime == pytest.approx(old)
    assert outside.read_text() == "not the cache's"


def test_a_read_of_many_blocks_records_every_use_and_never_follows_a_planted_directory_link(server, tmp_path):
    """A read of several blocks records them in one pass over the tree; a block directory replaced by a
    link to a directory outside the cache is not entered (its use is simply not recorded)."""
    path = _desc(server, tmp_path)
    with RESTfulBlockwiseFileset(path) as fs:
        fs.readData(((0, 0, 0), SHAPE))
        statuses = {b: Path(fs.blocks.paths(b).status_path) for b in STARTS}
    old = time.time() - 3600
    planted = STARTS[5]  # its y directory is shared with STARTS[4]: replace its block directory only
    outside = tmp_path / "outside"
    Path(statuses[planted]).parent.rename(outside)
    Path(statuses[planted]).parent.symlink_to(outside, target_is_directory=True)
    outside_status = outside / "STATUS.txt"
    for status in [*statuses.values(), outside_status]:
        os.utime(status, (old, old), follow_symlinks=False)
    with RESTfulBlockwiseFileset(path) as fs:
        roi_without_planted = ((0, 0, 0), (8, 64, 64))  # the four blocks of z = 0
        fs.readData(roi_without_planted)
        for b in STARTS[:4]:
            assert abs(statuses[b].stat().st_mtime - time.time()) < 60, b  # recorded by the one read
        for b in STARTS[4:]:
            assert statuses[b].stat().st_mtime == pytest.approx(old), b  # not read: not recorded
        fs.blocks.usage.used_all(STARTS[4:])  # as a read of z = 8 would, with one block behind a link
    assert outside_status.stat().st_mtime == pytest.approx(old)  # the link was not followed
    for b in STARTS[4:]:
        if b != planted:
            assert abs(statuses[b].stat().st_mtime - time.time()) < 60, b


# ------------------------------------------------------------------ LRU eviction, one process


def test_least_recently_read_blocks_go_first_and_an_evicted_block_costs_one_request(server, volume, tmp_path):
    size = _block_bytes(server, tmp_path)
    path = _desc(server, tmp_path, max_cache_bytes=3 * size + size // 2)  # room for 3 blocks
    a, b, c, d = STARTS[:4]
    for start in (a, b, c):  # each read by a fileset of its own: its first use is always recorded
        with RESTfulBlockwiseFileset(path) as fs:
            fs.readData(_block_roi(start))
    with RESTfulBlockwiseFileset(path) as fs:
        assert _cached(fs) == {a, b, c}
        fs.readData(_block_roi(a))  # a is now the most recently read
    with RESTfulBlockwiseFileset(path) as fs:
        fs.readData(_block_roi(d))
        assert _cached(fs) == {a, c, d}  # b, the least recently read, went
        assert fs.cache_limit.footprint().bytes <= 3 * size + size // 2
    server.reset_stats()
    with RESTfulBlockwiseFileset(path) as fs:
        got = fs.readData(_block_roi(b))
        assert np.array_equal(got, volume[tuple(slice(s, s + n) for s, n in zip(b, BLOCK))])
        assert _cached(fs) == {a, d, b}  # c was now the least recently read
    assert server.requests == 1  # the evicted block cost exactly one request


def test_a_block_read_after_the_evictor_listed_it_is_not_evicted(server, tmp_path):
    """The evictor keeps the oldest blocks of its last walk; each is looked at again under its lock."""
    size = _block_bytes(server, tmp_path)
    path = _desc(server, tmp_path, max_cache_bytes=3 * size + size // 2)
    a, b, c, d, e = STARTS[:5]
    for start in (a, b, c):
        with RESTfulBlockwiseFileset(path) as fs:
            fs.readData(_block_roi(start))
    with RESTfulBlockwiseFileset(path) as evicting:
        evicting.readData(_block_roi(d))  # walks the root (a, b, c listed, oldest first), evicts a
        assert _cached(evicting) == {b, c, d}
        with RESTfulBlockwiseFileset(path) as other:
            other.readData(_block_roi(b))  # b is read after the walk that listed it as the oldest
        evicting.readData(_block_roi(e))
        assert _cached(evicting) == {b, d, e}


def test_a_read_larger_than_the_limit_returns_correct_voxels(server, volume, tmp_path):
    size = _block_bytes(server, tmp_path)
    path = _desc(server, tmp_path, max_cache_bytes=2 * size)
    with RESTfulBlockwiseFileset(path, max_parallel=3) as fs:
        for _ in range(2):
            assert np.array_equal(fs.readData(((0, 0, 0), SHAPE)), volume)
            assert fs.cache_limit.footprint().bytes <= 2 * size
            assert walk_footprint(fs.blocks)[0] == fs.cache_limit.footprint().bytes


def test_a_prefetch_larger_than_the_limit_says_the_cache_could_not_hold_the_region(server, tmp_path):
    size = _block_bytes(server, tmp_path)
    path = _desc(server, tmp_path, max_cache_bytes=3 * size)
    with RESTfulBlockwiseFileset(path, max_parallel=2) as fs:
        report = fs.downloadAllBlocks()
        assert report.downloaded == len(STARTS) and report.ok
        assert report.not_held == len(STARTS) - len(_cached(fs)) >= len(STARTS) - 3
        assert "could not hold the whole region" in report.summary()
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    with RESTfulBlockwiseFileset(_desc(server, roomy, max_cache_bytes=100 * size)) as fs:
        report = fs.downloadAllBlocks()
        assert report.not_held == 0 and "could not hold" not in report.summary()


def test_a_prefetch_with_failures_still_raises_prefetch_error(tmp_path, volume):
    with CutoutServer(volume) as srv:
        path = _desc(srv, tmp_path, max_cache_bytes=1 << 20)
        srv.faults.add("status", count=None, status=404)  # every request fails
        with RESTfulBlockwiseFileset(path, retries=0) as fs:
            with pytest.raises(PrefetchError):
                fs.downloadAllBlocks(max_failures=0)


def test_an_eviction_the_file_system_refuses_never_fails_the_download(server, volume, tmp_path):
    size = _block_bytes(server, tmp_path)
    path = _desc(server, tmp_path, max_cache_bytes=2 * size)
    with RESTfulBlockwiseFileset(path) as fs:
        fs.readData(_block_roi(STARTS[0]))
        stuck = fs.getDatasetPathComponents(STARTS[0]).externalPath
    if subprocess.run(["chattr", "+i", stuck], capture_output=True).returncode != 0:
        pytest.skip("this file system cannot make a file immutable (chattr +i)")
    try:
        with RESTfulBlockwiseFileset(path) as fs:
            got = fs.readData(((0, 0, 0), SHAPE))  # every publish wants STATUS[0]'s block gone
            assert np.array_equal(got, volume)
    finally:
        subprocess.run(["chattr", "-i", stuck], check=True)


# ------------------------------------------------------------------ the ledger


def test_a_damaged_or_missing_ledger_is_rebuilt_by_a_walk(server, tmp_path):
    path = _desc(server, tmp_path)
    with RESTfulBlockwiseFileset(path) as fs:
        fs.readData(((0, 0, 0), SHAPE))
        expected = walk_footprint(fs.blocks)
        assert (fs.cache_limit.footprint().bytes, fs.cache_limit.footprint().blocks) == expected
        ledger = Path(fs.root_directory) / LEDGER_FILE_NAME
    for damage in ("garbage", "missing", "wrong count"):
        if damage == "garbage":
            ledger.write_bytes(b"\x00garbage" * 20)
        elif damage == "missing":
            ledger.unlink()
        else:  # a valid-looking record whose checksum does not match
            ledger.write_bytes(ledger.read_bytes().replace(b"bytes=", b"bytes=9"))
        with RESTfulBlockwiseFileset(path) as fs:
            fp = fs.cache_limit.footprint()
            assert (fp.bytes, fp.blocks) == expected and fp.trusted, damage


# ------------------------------------------------------------------ many processes under a limit

BIG_SHAPE = (32, 128, 128)  # 4 x 4 x 4 = 64 blocks


def _random_reader(desc: str, seed: int, limit: int, rounds: int, results) -> None:
    try:
        volume = sample_volume(BIG_SHAPE, seed=7)
        rng = np.random.default_rng(seed)
        with RESTfulBlockwiseFileset(desc, max_parallel=4, max_cache_bytes=limit) as fs:
            for _ in range(rounds):
                start = [int(rng.integers(0, n - 1)) for n in BIG_SHAPE]
                stop = [
                    int(rng.integers(s + 1, min(n, s + 2 * b + 1) + 1))
                    for s, n, b in zip(start, BIG_SHAPE, BLOCK)
                ]
                got = fs.readData((start, stop))
                ok = np.array_equal(got, volume[tuple(slice(s, e) for s, e in zip(start, stop))])
                results.put(("read", ok, walk_footprint(fs.blocks)[0]))
        results.put(("done", True, 0))
    except BaseException as exc:  # reported to the parent
        results.put(("error", f"{type(exc).__name__}: {exc}", 0))


def test_three_processes_under_a_limit_read_correct_voxels_and_the_footprint_stays_bounded(tmp_path):
    volume = sample_volume(BIG_SHAPE, seed=7)
    with CutoutServer(volume) as srv:
        path = srv.write_description(tmp_path / "big.json", block_shape=BLOCK, cache_dir="cache")
        with RESTfulBlockwiseFileset(path) as fs:  # one block's file size (all are alike)
            fs.readData(((0, 0, 0), BLOCK))
            size = os.path.getsize(fs.getDatasetPathComponents((0, 0, 0)).externalPath)
        nblocks = 64
        limit = int(0.4 * nblocks * size)
        bound = limit + 3 * 4 * size  # plus the downloads in flight: max_parallel blocks per process
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_random_reader, args=(path, seed, limit, 12, results)) for seed in range(3)
        ]
        for p in procs:
            p.start()
        samples, wrong, errors, done = [], 0, [], 0
        try:
            while done < len(procs):
                kind, value, footprint = results.get(timeout=300)  # hang guard
                if kind == "read":
                    wrong += not value
                    samples.append(footprint)
                    samples.append(walk_footprint(fs.blocks)[0])  # sampled by this process too
                elif kind == "error":
                    errors.append(value)
                    done += 1
                else:
                    done += 1
        finally:
            for p in procs:
                p.join(60)
                if p.is_alive():
                    p.kill()
        assert errors == [] and wrong == 0
        assert len(samples) == 2 * 3 * 12
        assert max(samples) <= bound, (max(samples), limit, bound)
        with RESTfulBlockwiseFileset(path, max_cache_bytes=limit) as fs:
            fp = fs.cache_limit.footprint()
            assert fp.bytes <= bound and (fp.bytes, fp.blocks) == walk_footprint(fs.blocks)
            assert srv.requests > nblocks  # the cache could not hold everything: blocks were evicted


# ------------------------------------------------------------------ a process killed mid-eviction


def test_a_process_killed_mid_eviction_leaves_a_cache_the_next_process_uses_and_repairs(
    server, volume, tmp_path
):
    size = _block_bytes(server, tmp_path)
    path = _desc(server, tmp_path)
    with RESTfulBlockwiseFileset(path) as fs:
        fs.readData(((0, 0, 0), SHAPE))
        root = fs.root_directory
    server.reset_stats()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lazyflow_rbfs", "gc", path, "--max-cache-size", str(4 * size)],
        env=_env(**{PAUSE_ENV: "1"}),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = proc.stderr.readline().decode()  # the handshake: a STATUS.txt removed, not its block file
        assert line.startswith("rbfs-test: evicting "), line + proc.stderr.read().decode()
        half = line.split("evicting ", 1)[1].strip()
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(60)
    # Left behind: a block file without STATUS.txt and a ledger whose change was never finished.
    assert not os.path.exists(os.path.join(half, "STATUS.txt"))
    assert any(name.endswith(".h5") for name in os.listdir(half))
    left = Ledger(root, walk=lambda: (0, 0)).read()
    assert left is not None and left.pending == 1
    with RESTfulBlockwiseFileset(path) as fs:  # the next process repairs the ledger and uses the cache
        fp = fs.cache_limit.footprint()
        assert fp.trusted and (fp.bytes, fp.blocks) == walk_footprint(fs.blocks)
        assert np.array_equal(fs.readData(((0, 0, 0), SHAPE)), volume)
    assert server.requests == 1  # only the half-evicted block is fetched again


# ------------------------------------------------------------------ the command line


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_rbfs_gc_evicts_least_recently_read_blocks_and_dry_run_removes_nothing(server, tmp_path, capsys):
    size = _block_bytes(server, tmp_path)
    path = _desc(server, tmp_path)
    with RESTfulBlockwiseFileset(path) as fs:
        for start in STARTS:  # in this order: STARTS[0] is the least recently read
            fs.readData(_block_roi(start))
            status = fs.blocks.paths(start).status_path
            # one second apart on disk, whatever the file system's timestamp resolution
            t = time.time() - 100 + STARTS.index(start)
            os.utime(status, (t, t))
    code, out, _ = _run(capsys, "gc", path, "--max-cache-size", 5 * size, "--dry-run")
    assert code == 0 and "would evict 3 blocks" in out
    with BlockwiseFileset(
        path, "r", preparsedDescription=RESTfulBlockwiseFileset.readDescription(path).local_description
    ) as fs:
        assert _cached(fs) == set(STARTS)
    code, out, _ = _run(capsys, "gc", path, "--max-cache-size", f"{5 * size}")
    assert code == 0 and "evicted 3 least recently read blocks" in out
    with RESTfulBlockwiseFileset(path) as fs:
        assert _cached(fs) == set(STARTS[3:])
        assert fs.cache_limit.footprint().bytes == walk_footprint(fs.blocks)[0] <= 5 * size


def test_rbfs_gc_without_a_limit_is_a_usage_error(server, tmp_path, capsys):
    code, _, err = _run(capsys, "gc", _desc(server, tmp_path))
    assert code == 2 and "--max-cache-size" in err


def test_rbfs_purge_drops_the_blocks_of_a_region(server, volume, tmp_path, capsys):
    path = _desc(server, tmp_path)
    with RESTfulBlockwiseFileset(path) as fs:
        fs.readData(((0, 0, 0), SHAPE))
    code, out, _ = _run(capsys, "purge", path, "--roi", "0:8,:,:")
    assert code == 0 and "purged 4 blocks" in out
    with RESTfulBlockwiseFileset(path) as fs:
        assert _cached(fs) == {b for b in STARTS if b[0] == 8}
        assert fs.cache_limit.footprint().bytes == walk_footprint(fs.blocks)[0]
        server.reset_stats()
        assert np.array_equal(fs.readData(((0, 0, 0), SHAPE)), volume)
    assert server.requests == 4


def test_rbfs_status_shows_footprint_limit_and_lru_age(server, tmp_path, capsys):
    path = _desc(server, tmp_path, max_cache_bytes="1M")
    with RESTfulBlockwiseFileset(path) as fs:
        fs.readData(((0, 0, 0), SHAPE))
        nbytes = walk_footprint(fs.blocks)[0]
        old = time.time() - 7200
        os.utime(fs.blocks.paths(STARTS[2]).status_path, (old, old))
    code, out, _ = _run(capsys, "status", path)
    assert code == 0
    assert f"({nbytes} bytes) in 8 block files; limit 1.0 MB ({1 << 20} bytes)" in out
    assert "least recently used block: 2.0 h ago" in out
    code, out, _ = _run(capsys, "status", path, "--json")
    payload = json.loads(out)
    assert payload["footprint_bytes"] == nbytes and payload["max_cache_bytes"] == 1 << 20
    assert 7100 < payload["lru_age_seconds"] < 7300


def test_max_cache_size_on_the_download_commands(server, tmp_path, capsys):
    size = _block_bytes(server, tmp_path)
    path = _desc(server, tmp_path)
    code, out, _ = _run(capsys, "prefetch", path, "--max-cache-size", 2 * size, "--no-progress")
    assert code == 0 and "could not hold the whole region" in out
    code, _, _ = _run(
        capsys, "read", path, "--roi", ":,:,:", "-o", tmp_path / "out.npy", "--max-cache-size", 2 * size
    )
    assert code == 0
    with RESTfulBlockwiseFileset(path) as fs:
        assert len(_cached(fs)) <= 2
    code, _, err = _run(
        capsys, "read", path, "--roi", ":,:,:", "-o", tmp_path / "o.npy", "--max-cache-size", "lots"
    )
    assert code == 2 and "500M" in err


def test_gc_never_follows_a_planted_block_directory_link(server, tmp_path, capsys):
    path = _desc(server, tmp_path)
    with RESTfulBlockwiseFileset(path) as fs:
        fs.readData(((0, 0, 0), SHAPE))
        victim = Path(fs.blocks.paths(STARTS[7]).directory)
    outside = tmp_path / "outside"
    victim.rename(outside)
    victim.symlink_to(outside, target_is_directory=True)
    before = sorted(p.name for p in outside.iterdir())
    code, _, _ = _run(capsys, "gc", path, "--max-cache-size", 0)
    assert code == 0
    assert sorted(p.name for p in outside.iterdir()) == before  # nothing removed through the link
    with RESTfulBlockwiseFileset(path) as fs:
        assert list(iter_entries(fs.blocks, whole_root=True)) == []
        assert CacheLimit(fs.blocks, None).footprint().bytes == 0


def test_a_parallel_fill_over_the_limit_ends_within_it(tmp_path):
    """Threads that publish while another evicts do not wait for it; the evictor looks again when it lets
    go, so when the fill is over, the cache is within its limit (ledger and walk agree)."""
    shape, block = (16, 128, 128), (4, 16, 16)  # 256 small blocks
    volume = sample_volume(shape, seed=9)
    with CutoutServer(volume) as srv:
        probe = tmp_path / "probe"
        probe.mkdir()
        with RESTfulBlockwiseFileset(_desc(srv, probe, shape_block=block)) as fs:
            fs.readData(((0, 0, 0), block))
            size = os.path.getsize(fs.getDatasetPathComponents((0, 0, 0)).externalPath)
        for round_ in range(3):
            where = tmp_path / f"fill{round_}"
            where.mkdir()
            limit = 40 * size + size // 2
            with RESTfulBlockwiseFileset(
                _desc(srv, where, max_cache_bytes=limit, shape_block=block), max_parallel=8, fsync=False
            ) as fs:
                report = fs.downloadAllBlocks()
                assert report.ok and report.downloaded == 256
                walked, _ = walk_footprint(fs.blocks)
                assert fs.cache_limit.footprint().bytes == walked <= limit
                np.testing.assert_array_equal(fs.readData(((0, 0, 0), shape)), volume)


def test_changes_under_way_in_one_process_share_one_pending_mark(tmp_path):
    """Threads changing block files at once count once in the record's ``pending`` (the process does), and
    the deltas of every change are applied; the mark is dropped when the last change ends."""
    import threading

    root = tmp_path / "root"
    root.mkdir()
    ledger = Ledger(str(root), lambda: (0, 0))
    ledger.reconcile(wait=True, force=True)
    threads_n = 8
    inside = threading.Barrier(threads_n + 1)
    leave = threading.Barrier(threads_n + 1)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with ledger.change() as change:
                change.add(100 + i, 1)
                inside.wait(timeout=30)
                leave.wait(timeout=30)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    inside.wait(timeout=30)
    during = ledger.read()
    assert during is not None and during.pending == 1 and not during.trusted
    # While this process has changes under way, no rebuild can take the exclusive lock.
    with ledger.exclusive(wait=False) as held:
        assert not held
    leave.wait(timeout=30)
    for t in threads:
        t.join(timeout=30)
    assert not errors
    after = ledger.read()
    assert after is not None and after.trusted
    assert (after.bytes, after.blocks) == (sum(100 + i for i in range(threads_n)), threads_n)
    with ledger.exclusive(wait=False) as held:
        assert held


def test_the_ledger_makes_its_root_only_when_missing_and_again_after_it_was_removed(tmp_path):
    import shutil

    root = tmp_path / "cache"
    ledger = Ledger(str(root), lambda: (0, 0))
    with ledger.change() as change:  # the first change makes the root
        change.add(10, 1)
    assert ledger.read().bytes == 10
    shutil.rmtree(root)
    with ledger.change() as change:  # removed meanwhile: made again, counted from there (untrusted)
        change.add(5, 1)
    after = ledger.read()
    assert (after.bytes, after.blocks, after.pending) == (5, 1, 0) and not after.trusted


def test_recording_the_uses_of_many_blocks_holds_a_few_directories_open_at_a_time(tmp_path, monkeypatch):
    """One pass over 512 blocks in 64 leaf rows holds at most the root and one path of directories."""
    vol = sample_volume((16, 64, 64), seed=2)
    block = (2, 8, 8)
    with CutoutServer(vol) as srv:
        path = srv.write_description(tmp_path / "volume.json", block_shape=block, cache_dir="cache")
        with RESTfulBlockwiseFileset(path) as fs:
            fs.readData(((0, 0, 0), vol.shape))
    starts = [(z, y, x) for z in range(0, 16, 2) for y in range(0, 64, 8) for x in range(0, 64, 8)]
    old = time.time() - 3600
    with RESTfulBlockwiseFileset(path) as fs:
        statuses = [Path(fs.blocks.paths(s).status_path) for s in starts]
        for status in statuses:
            os.utime(status, (old, old))
        live: set[int] = set()
        most = [0]
        real_open, real_close = os.open, os.close

        def tracked_open(*args, **kwargs):
            fd = real_open(*args, **kwargs)
            live.add(fd)
            most[0] = max(most[0], len(live))
            return fd

        def tracked_close(fd):
            live.discard(fd)
            real_close(fd)

        monkeypatch.setattr(os, "open", tracked_open)
        monkeypatch.setattr(os, "close", tracked_close)
        fs.blocks.usage.used_all(list(reversed(starts)))  # any order: visited in directory order
        monkeypatch.undo()
    assert most[0] <= 4  # the root and the z, y, x directories of one block
    assert all(abs(s.stat().st_mtime - time.time()) < 60 for s in statuses)
