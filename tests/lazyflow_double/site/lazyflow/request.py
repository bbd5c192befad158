"""``lazyflow.request.Request`` on a pool of worker threads (lazyflow runs requests as greenlets on one).

Kept from ``lazyflow/request/request.py``:

* ``Request(fn).wait()`` on a request nobody submitted runs ``fn`` in the waiting thread; ``submit()``
  hands it to the pool and ``wait()`` then blocks until a worker finished it.
* How a failure reaches the waiter: a wait from a non-worker thread, or one that had to run or block on
  the request, re-raises **the original exception object**. A wait from inside another request (here: a
  worker thread) on a request that had **already failed** raises ``type(exc)(exc)`` — same type, the
  original as its only argument — or whatever that constructor raises.
* The workers are started once, all at the first use, and live as long as the process (as lazyflow's
  thread pool), so counting threads around some work sees only what the code under test started.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future, ThreadPoolExecutor

WORKERS = 4
_state = threading.local()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _mark_worker() -> None:
    _state.worker = True


def in_worker_thread() -> bool:
    return getattr(_state, "worker", False)


def pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(WORKERS, "lazyflow-double-worker", initializer=_mark_worker)
            everyone = threading.Barrier(WORKERS)  # occupy every worker at once: all threads start now
            for future in [_pool.submit(everyone.wait) for _ in range(WORKERS)]:
                future.result()
        return _pool


class Request:
    def __init__(self, fn) -> None:
        self.fn = fn
        self._future: Future | None = None
        self._lock = threading.Lock()

    def writeInto(self, destination) -> Request:
        self.fn = functools.partial(self.fn, destination=destination)
        return self

    def submit(self) -> Request:
        with self._lock:
            if self._future is None:
                self._future = pool().submit(self.fn)
        return self

    def wait(self):
        with self._lock:
            future, run_here = self._future, self._future is None
            if run_here:
                self._future = future = Future()
                future.set_running_or_notify_cancel()
        if run_here:
            try:
                result = self.fn()
            except BaseException as exc:
                future.set_exception(exc)
                raise
            future.set_result(result)
            return result
        if in_worker_thread() and future.done() and future.exception() is not None:
            exc = future.exception()
            raise type(exc)(exc).with_traceback(exc.__traceback__)
        return future.result()
