from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from lazyflow_rbfs.errors import LockTimeoutError
from lazyflow_rbfs.locks import BlockLock, InFlight

HOLDER = """
import sys
from lazyflow_rbfs.locks import BlockLock
lock = BlockLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


def start_holder(path):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_excludes_another_process_and_dies_with_it(tmp_path):
    path = tmp_path / "blk" / ".rbfs.lock"
    proc = start_holder(path)
    try:
        lock = BlockLock(path)
        assert lock.locked_elsewhere()
        assert lock.acquire(blocking=False) is False
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # The kernel released the dead holder's lock; its file is still there and harmless.
        assert path.exists()
        assert not lock.locked_elsewhere()
        assert lock.acquire(blocking=False) is True
        lock.release()
        assert not path.exists()
    finally:
        proc.kill()
        proc.wait()


def test_blocking_waiter_wakes_when_holder_releases(tmp_path):
    path = tmp_path / ".rbfs.lock"
    proc = start_holder(path)
    got = threading.Event()

    def waiter():
        with BlockLock(path):
            got.set()

    t = threading.Thread(target=waiter)
    t.start()
    assert not got.wait(0.2)
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "released"
    t.join(30)
    assert got.is_set()
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait(30)


def test_timeout_raises_and_leaves_nothing_held(tmp_path):
    path = tmp_path / ".rbfs.lock"
    proc = start_holder(path)
    try:
        t0 = time.monotonic()
        with pytest.raises(LockTimeoutError) as info:
            BlockLock(path).acquire(timeout=0.3)
        assert time.monotonic() - t0 >= 0.3
        assert info.value.path == str(path)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "released"
        # The abandoned helper thread may take the lock briefly, but must give it back.
        lock = BlockLock(path)
        assert lock.acquire(timeout=30)
        lock.release()
    finally:
        proc.kill()
        proc.wait()


def test_threads_exclude_each_other(tmp_path):
    path = tmp_path / ".rbfs.lock"
    inside = 0
    worst = 0
    mutex = threading.Lock()

    def work():
        nonlocal inside, worst
        for _ in range(50):
            with BlockLock(path):
                with mutex:
                    inside += 1
                    worst = max(worst, inside)
                with mutex:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert worst == 1
    assert not path.exists()


def _count_in_critical_section(path, counter_path, rounds):
    for _ in range(rounds):
        with BlockLock(path):
            value = int(open(counter_path).read())
            with open(counter_path, "w") as f:
                f.write(str(value + 1))


def test_processes_exclude_each_other(tmp_path):
    path = tmp_path / ".rbfs.lock"
    counter = tmp_path / "counter"
    counter.write_text("0")
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_count_in_critical_section, args=(str(path), str(counter), 40)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert int(counter.read_text()) == 160


def test_release_without_holding_is_an_error(tmp_path):
    with pytest.raises(RuntimeError):
        BlockLock(tmp_path / "x").release()


def test_inflight_dedupes_and_wakes_all_waiters():
    table = InFlight()
    fut, owner = table.claim("a")
    fut2, owner2 = table.claim("a")
    assert owner and not owner2 and fut is fut2
    results = []
    waiters = [threading.Thread(target=lambda: results.append(fut2.result(timeout=30))) for _ in range(4)]
    for w in waiters:
        w.start()
    table.finish("a", result=7)
    for w in waiters:
        w.join(30)
    assert results == [7, 7, 7, 7]
    fut3, owner3 = table.claim("a")
    assert owner3 and fut3 is not fut
    table.finish("a", exc=ValueError("x"))
    with pytest.raises(ValueError):
        fut3.result()
    assert len(table) == 0


def test_inflight_is_reset_in_forked_child():
    from lazyflow_rbfs.locks import IN_FLIGHT

    IN_FLIGHT.claim("pending-in-parent")
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if len(IN_FLIGHT) == 0 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        IN_FLIGHT.finish("pending-in-parent")
