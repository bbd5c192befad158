"""WorkerPool: bounded daemon threads, shutdown that never waits, queued work handed back."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from lazyflow_rbfs.pool import PoolClosed, WorkerPool


def test_runs_every_task_on_at_most_size_daemon_threads():
    pool = WorkerPool(3, "t")
    gate = threading.Event()
    running = threading.Semaphore(0)
    finished = threading.Semaphore(0)
    seen: set[str] = set()

    def task():
        seen.add(threading.current_thread().name)
        running.release()
        gate.wait(30)
        finished.release()

    for _ in range(12):
        pool.submit(task)
    for _ in range(3):
        assert running.acquire(timeout=30)
    assert pool.threads == 3 and not running.acquire(timeout=0)  # the other nine wait for a thread
    gate.set()
    for _ in range(12):
        assert finished.acquire(timeout=30)
    assert len(seen) == 3
    assert all(t.daemon for t in threading.enumerate() if t.name in seen)
    pool.shutdown()


def test_shutdown_drops_queued_tasks_and_does_not_wait_for_running_ones():
    pool = WorkerPool(1, "t")
    started, release = threading.Event(), threading.Event()
    ran, dropped = [], []
    pool.submit(lambda: (started.set(), release.wait(30), ran.append("first")))
    for i in range(3):
        pool.submit(lambda i=i: ran.append(i), drop=lambda i=i: dropped.append(i))
    assert started.wait(30)
    pool.shutdown()  # returns while the first task still runs
    assert dropped == [0, 1, 2] and ran == []
    with pytest.raises(PoolClosed):
        pool.submit(lambda: None)
    release.set()
    for t in threading.enumerate():
        if t.name.startswith("t-"):
            t.join(30)
            assert not t.is_alive()
    assert ran == ["first"]


def test_cancel_drops_a_task_that_has_not_started():
    pool = WorkerPool(1, "t")
    started, release = threading.Event(), threading.Event()
    ran = []
    first = pool.submit(lambda: (started.set(), release.wait(30)))
    second = pool.submit(lambda: ran.append("second"), drop=lambda: ran.append("dropped"))
    third = pool.submit(lambda: ran.append("third"))
    assert started.wait(30)
    assert not pool.cancel(first) and pool.cancel(second)
    release.set()
    finished = threading.Event()
    pool.submit(finished.set)
    assert finished.wait(30)
    assert ran == ["third"] and not pool.cancel(third)
    pool.shutdown()


def test_a_task_blocked_forever_does_not_hold_up_the_interpreter_exit(tmp_path):
    script = textwrap.dedent("""
        import threading
        from lazyflow_rbfs.pool import WorkerPool
        started = threading.Event()
        WorkerPool(2, "stuck").submit(lambda: (started.set(), threading.Event().wait()))
        started.wait()
        print("exiting", flush=True)
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0 and proc.stdout == "exiting\n", proc.stderr
