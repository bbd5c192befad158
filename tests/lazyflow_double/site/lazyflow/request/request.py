"""Requests on a fixed pool of worker threads (lazyflow runs them as greenlets on such a pool).

Modelled from ``lazyflow/request/request.py``:

* ``Request(fn).wait()`` on a request nobody started runs ``fn`` directly in the waiting thread.
* ``submit()`` hands it to the pool; ``wait()`` then blocks until a worker finished it.
* How a failure reaches the waiter: a wait from a "foreign" (non-worker) thread, and a wait that had to
  block or run the request itself, re-raise **the original exception object**
  (``raise_with_traceback(exc_value, tb)``). A wait *from inside another request* (here: from a worker
  thread) on a request that had **already failed** raises ``type(exc)(exc)`` instead
  (``raise_with_traceback(exc_type(exc_value), tb)``): an exception of the same type whose only argument
  is the original, with no ``__cause__``; if that type cannot be built from one instance of itself, the
  constructor's own error (e.g. ``TypeError``) is what the waiter gets.
* ``writeInto(array)`` makes the workload fill ``array``.
* The worker threads are started once, eagerly, and live as long as the pool (like lazyflow's ThreadPool),
  so counting threads before and after some work measures only what the code under test started.
"""

from __future__ import annotations

import functools
import queue
import threading
from concurrent.futures import Future

_local = threading.local()


class _WorkerPool:
    def __init__(self, num_workers: int) -> None:
        self.num_workers = num_workers
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"lazyflow-double-worker-{i}", daemon=True)
            for i in range(num_workers)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        _local.is_worker = True
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiter
                future.set_exception(exc)
            else:
                future.set_result(result)

    def submit(self, fn) -> Future:
        future: Future = Future()
        self._queue.put((fn, future))
        return future

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()


class Request:
    """A unit of work; see the module docstring."""

    #: Worker threads of the global pool.
    num_workers = 4
    #: Slot requests of at least this many elements are split into pieces executed concurrently.
    split_threshold = 4096

    _pool: _WorkerPool | None = None
    _pool_lock = threading.Lock()

    class CancellationException(Exception):
        pass

    @classmethod
    def reset_thread_pool(cls, num_workers: int = 4) -> None:
        with cls._pool_lock:
            if cls._pool is not None:
                cls._pool.stop()
            cls.num_workers = num_workers
            cls._pool = _WorkerPool(num_workers) if num_workers > 0 else None

    @classmethod
    def global_pool(cls) -> _WorkerPool | None:
        with cls._pool_lock:
            if cls._pool is None and cls.num_workers > 0:
                cls._pool = _WorkerPool(cls.num_workers)
            return cls._pool

    @staticmethod
    def in_worker_thread() -> bool:
        return getattr(_local, "is_worker", False)

    def __init__(self, fn) -> None:
        self.fn = fn
        self._mutex = threading.Lock()
        self._future: Future | None = None

    def writeInto(self, destination) -> Request:
        self.fn = functools.partial(self.fn, destination=destination)
        return self

    def submit(self) -> Request:
        with self._mutex:
            if self._future is None:
                pool = self.global_pool()
                if pool is None:
                    self._future = Future()
                    self._run_into(self._future)
                else:
                    self._future = pool.submit(self.fn)
        return self

    def _run_into(self, future: Future) -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(self.fn())
        except BaseException as exc:  # noqa: BLE001
            future.set_exception(exc)

    def wait(self, timeout: float | None = None):
        with self._mutex:
            future = self._future
            direct = future is None
            if direct:
                self._future = future = Future()
        if direct:
            # Direct execution in the calling thread: the exception propagates unchanged.
            future.set_running_or_notify_cancel()
            try:
                result = self.fn()
            except BaseException as exc:
                future.set_exception(exc)
                raise
            future.set_result(result)
            return result
        if self.in_worker_thread() and future.done() and future.exception() is not None:
            exc = future.exception()
            raise type(exc)(exc).with_traceback(exc.__traceback__)
        return future.result(timeout)

    def notify_finished(self, fn) -> None:
        self.submit()
        self._future.add_done_callback(lambda f: f.exception() is None and fn(f.result()))

    def notify_failed(self, fn) -> None:
        self.submit()
        self._future.add_done_callback(lambda f: f.exception() is not None and fn(f.exception(), None))


class RequestPool:
    """Submit several requests, then wait for all of them."""

    def __init__(self) -> None:
        self._requests: list[Request] = []

    def add(self, request: Request) -> None:
        self._requests.append(request)

    def wait(self) -> None:
        for request in self._requests:
            request.submit()
        for request in self._requests:
            request.wait()
