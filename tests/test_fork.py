"""Issue 9, item 10: filesets work across fork.

A forked child shares the open file descriptions of its parent: the flock of a block the parent is
downloading, if the child kept it, would be held by the child's own inherited descriptor and the child
would wait on itself forever. Locks other threads held at the fork are copied locked. These tests fork for
real (``os.fork`` and multiprocessing's fork start method), with the parent mid-download, and bound every
wait with a hang guard.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lazyflow_rbfs import RESTfulBlockwiseFileset
from lazyflow_rbfs.locks import IN_FLIGHT, BlockLock
from lazyflow_rbfs.testing import CutoutServer, sample_volume

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

BLOCK = (8, 32, 32)
SHAPE = (24, 96, 80)
FIRST = ((0, 0, 0), (8, 32, 32))


@pytest.fixture
def volume():
    return sample_volume(SHAPE, seed=5)


@pytest.fixture
def server(volume):
    with CutoutServer(volume) as srv:
        yield srv


@pytest.fixture
def desc(server, tmp_path):
    return Path(server.write_description(tmp_path / "volume.json", block_shape=BLOCK, cache_dir="cache"))


def _read_message(fd: int, timeout: float) -> bytes:
    """One message the child wrote to the pipe ``fd``, or ``b""`` after ``timeout`` (the hang guard)."""
    ready, _, _ = select.select([fd], [], [], timeout)
    return os.read(fd, 65536) if ready else b""


def _fds_on(pid: int, path: str) -> set[int]:
    """Descriptors of process ``pid`` open on ``path`` (Linux ``/proc``)."""
    found = set()
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return found
    for name in names:
        try:
            target = os.readlink(os.path.join(base, name))
        except OSError:
            continue
        if target in (path, path + " (deleted)"):
            found.add(int(name))
    return found


def _wait_for_fds(pid: int, path: str, count: int, timeout: float) -> bool:
    """Until process ``pid`` has ``count`` descriptors open on ``path``; no sleeping."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(_fds_on(pid, path)) >= count:
            return True
        os.sched_yield()
    return False


class _PipeOnWait(logging.Handler):
    """In the child: write ``b"waiting N"`` to a pipe when the cache starts waiting for another's lock;
    N is how many descriptors on the lock file the child had before (inherited ones it kept)."""

    def __init__(self, fd: int, kept: int) -> None:
        super().__init__(logging.DEBUG)
        self.fd = fd
        self.kept = kept
        self.sent = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.sent and "downloaded by another process" in record.getMessage():
            self.sent = True
            os.write(self.fd, b"waiting %d" % self.kept)


def _child_reads_first_block(vol, expected: np.ndarray, fd: int) -> None:
    kept = len(_fds_on(os.getpid(), vol.blocks.paths((0, 0, 0)).lock_path))
    logger = logging.getLogger("lazyflow_rbfs.cache")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(_PipeOnWait(fd, kept))
    data = vol.readData(FIRST)
    os.write(fd, b"ok" if np.array_equal(data, expected) else b"wrong voxels")


def _os_fork_child(vol, expected, fd):
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            _child_reads_first_block(vol, expected, fd)
        except BaseException as exc:  # reported to the parent
            os.write(fd, f"error {type(exc).__name__}: {exc}".encode())
            code = 1
        finally:
            os._exit(code)
    return pid, lambda: os.kill(pid, 9), lambda: os.waitpid(pid, 0)


def _mp_target(vol, expected, fd):
    try:
        _child_reads_first_block(vol, expected, fd)
    except BaseException as exc:  # reported to the parent
        os.write(fd, f"error {type(exc).__name__}: {exc}".encode())


def _mp_fork_child(vol, expected, fd):
    proc = multiprocessing.get_context("fork").Process(target=_mp_target, args=(vol, expected, fd))
    proc.start()
    return proc.pid, proc.kill, lambda: proc.join(30)


@pytest.mark.parametrize("fork", [_os_fork_child, _mp_fork_child], ids=["os.fork", "multiprocessing"])
def test_child_forked_mid_download_reads_the_same_block(desc, server, volume, fork):
    server.faults.stall()  # holds the parent's request until released
    expected = np.ascontiguousarray(volume[0:8, 0:32, 0:32])
    with RESTfulBlockwiseFileset(str(desc)) as vol:
        lock_path = vol.blocks.paths((0, 0, 0)).lock_path
        got = {}
        reader = threading.Thread(target=lambda: got.setdefault("data", vol.readData(FIRST)))
        reader.start()
        assert server.wait_for_requests(1, timeout=30)  # the parent holds the block's lock, downloading
        inherited = _fds_on(os.getpid(), lock_path)
        assert inherited, "the parent should hold the block's lock while downloading"
        r, w = os.pipe()
        pid, kill, reap = fork(vol, expected, w)
        os.close(w)
        answer = b""
        try:
            # Both in position: the child waits for the block the parent is downloading, on its lock file
            # (one more descriptor than it kept from the fork).
            message = _read_message(r, 30)
            assert message.startswith(b"waiting "), message
            assert _wait_for_fds(pid, lock_path, int(message.split()[1]) + 1, 30)
            server.faults.release()
            reader.join(30)
            answer = _read_message(r, 20)  # hang guard: the child waits only as long as the parent downloads
        finally:
            if not answer:
                kill()
            reap()
            os.close(r)
        assert answer == b"ok", answer or "the forked child hung waiting for its parent's block lock"
        np.testing.assert_array_equal(got["data"], expected)
    assert server.requests == 1


def test_a_forked_child_neither_keeps_nor_releases_its_parents_lock(tmp_path):
    path = str(tmp_path / "block" / ".rbfs.lock")
    lock = BlockLock(path)
    lock.acquire()
    to_child_r, to_child_w = os.pipe()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(to_child_w)
            report = []
            report.append(not lock.held)  # the parent's lock is not the child's
            lock.release()  # an inherited instance: must neither unlock nor remove the parent's lock
            report.append(BlockLock(path).locked_elsewhere() and os.path.exists(path))
            os.write(w, b"checked")
            os.read(to_child_r, 1)  # the parent released its lock
            mine = BlockLock(path)
            report.append(mine.acquire(timeout=10))  # not blocked by a descriptor inherited from the parent
            mine.release()
            os.write(w, b"".join(b"1" if ok else b"0" for ok in report))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    os.close(to_child_r)
    try:
        assert _read_message(r, 30) == b"checked"
        assert BlockLock(path).locked_elsewhere(), "the child's copy released or removed the parent's lock"
        lock.release()
        os.write(to_child_w, b"x")
        assert _read_message(r, 30) == b"111"
    finally:
        os.close(to_child_w)  # a child still waiting for the parent goes on
        if lock.held:
            lock.release()
        os.waitpid(pid, 0)
        os.close(r)


def _fork_and_read(vol, roi, expected_sum, block_start) -> tuple[int, int]:
    """Fork a child that reads ``roi`` and a block file through ``getOpenHdf5FileForBlock``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            data = vol.readData(roi)
            ok = int(data.astype(np.int64).sum()) == expected_sum
            f = vol.getOpenHdf5FileForBlock(block_start)
            path = vol.getDatasetPathComponents(block_start).internalPath
            ok = ok and f[path].shape == tuple(vol.blocks.disk_roi(block_start)[1] - block_start)
            os.write(w, b"ok" if ok else b"wrong")
            code = 0
        except BaseException as exc:  # reported to the parent
            os.write(w, f"error {type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def test_eighty_forks_during_reads_never_hang(tmp_path):
    big = sample_volume((32, 256, 256), seed=9)
    block = (4, 32, 32)  # 512 blocks: downloads stay in flight while the parent forks
    with CutoutServer(big, latency=0.002) as srv:
        desc = srv.write_description(tmp_path / "big.json", block_shape=block, cache_dir="cache")
        with RESTfulBlockwiseFileset(desc, max_parallel=4, max_open_files=8) as vol:
            vol.readData(((0, 0, 0), (4, 32, 32)))
            stop = threading.Event()
            errors: list[BaseException] = []
            rng = np.random.default_rng(0)
            starts = [
                (int(z) * 4, int(y) * 32, int(x) * 32)
                for z, y, x in zip(rng.integers(0, 8, 400), rng.integers(0, 8, 400), rng.integers(0, 8, 400))
            ]

            def reader(k: int) -> None:
                try:
                    for z, y, x in starts[k::3]:
                        if stop.is_set():
                            return
                        vol.readData(((z, y, x), (z + 4, y + 48 if y < 224 else 256, x + 32)))
                        vol.getOpenHdf5FileForBlock((0, 0, 0))  # takes the fileset's handle lock
                except BaseException as exc:  # reported below
                    errors.append(exc)

            readers = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
            for t in readers:
                t.start()
            hung = []
            wrong = []
            mid_download = 0
            try:
                for i in range(80):
                    z, y, x = starts[(i * 7) % len(starts)]
                    roi = ((z, y, x), (z + 4, y + 32, x + 32))
                    expected = int(big[z : z + 4, y : y + 32, x : x + 32].astype(np.int64).sum())
                    mid_download += len(IN_FLIGHT) > 0
                    pid, r = _fork_and_read(vol, roi, expected, (z, y, x))
                    answer = _read_message(r, 20)  # hang guard per child
                    if not answer:
                        hung.append(i)
                        os.kill(pid, 9)
                    elif answer != b"ok":
                        wrong.append((i, answer))
                    os.waitpid(pid, 0)
                    os.close(r)
                    if hung:
                        break
            finally:
                stop.set()
                for t in readers:
                    t.join(60)
            assert not hung, f"{len(hung)} of 80 forked children hung (forks {hung[:5]})"
            assert not wrong, wrong[:3]
            assert not errors, errors[:1]
            assert mid_download >= 20, f"only {mid_download} of 80 forks happened during a download"
