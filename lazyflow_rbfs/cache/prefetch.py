"""The prefetch engine and its report: many blocks, bounded parallelism, early stop, interrupts.

:func:`run_prefetch` is the body of :meth:`RESTfulBlockwiseFileset.downloadBlocks
<lazyflow_rbfs.cache.RESTfulBlockwiseFileset.downloadBlocks>`; it drives a
:class:`~lazyflow_rbfs.cache.fetcher.BlockFetcher` through its public methods. :class:`PrefetchReport`,
:class:`SystematicFailures` (when to stop early), :func:`finish_report` and :func:`progress_reporter`
are shared with :mod:`lazyflow_rbfs.distributed`, which depends on this module and never the reverse.

Prefetching on a ``dask.distributed`` cluster is an optional extra. The cache reaches it through one
seam, :func:`scheduler_backend`, which imports the module named by :data:`SCHEDULER_BACKEND` by name
when a ``scheduler`` is given (see docs/INTERNALS.md, "How distributed plugs in").
"""

from __future__ import annotations

import errno
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from lazyflow_rbfs.cache.fetcher import Abandoned, BlockFetcher
from lazyflow_rbfs.errors import ArgumentError, CacheWriteError, ClosedError, PrefetchError, RbfsError

__all__ = [
    "PrefetchReport",
    "PrefetchInterrupted",
    "SystematicFailures",
    "MAX_ERROR_DETAILS",
    "DEFAULT_MAX_FAILURES",
    "check_max_failures",
    "finish_report",
    "progress_reporter",
    "ProgressBar",
    "run_prefetch",
    "scheduler_backend",
]

logger = logging.getLogger(__name__)

#: How many failed blocks a :class:`PrefetchReport` describes in full (all are counted).
MAX_ERROR_DETAILS = 100

#: Default ``max_failures`` of a prefetch: it stops when the first this many blocks it attempts all fail
#: with the same error class (see :meth:`RESTfulBlockwiseFileset.downloadBlocks`).
DEFAULT_MAX_FAILURES = 8

#: ``errno`` values of an ``OSError`` from the cache's file system that fail every block alike.
_CACHE_WRITE_ERRNOS = frozenset(
    code
    for code in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, getattr(errno, "EDQUOT", None))
    if code is not None
)

#: The module that prefetches on a ``dask.distributed`` cluster (the ``distributed`` extra). It provides
#: ``prefetch_on_cluster(fileset, scheduler, **options)``, ``DEFAULT_WAIT_FOR_WORKERS`` and
#: ``to_dask(fileset, **options)``.
SCHEDULER_BACKEND = "lazyflow_rbfs.distributed"


def scheduler_backend() -> ModuleType:
    """The ``dask.distributed`` backend module, imported on first use (the one optional-extra seam).

    The cache names the backend instead of importing it, so ``cache`` never depends on ``distributed``
    (which depends on this module); only a call with a ``scheduler`` (or ``to_dask``) loads it.
    """
    try:
        return importlib.import_module(SCHEDULER_BACKEND)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in ("dask", "distributed"):
            raise
        raise ModuleNotFoundError(
            f"this needs dask.distributed, which is not installed ({exc}): pip install "
            "'lazyflow_rbfs[distributed]'",
            name=exc.name,
        ) from exc


class PrefetchInterrupted(KeyboardInterrupt):
    """A Ctrl-C stopped :meth:`RESTfulBlockwiseFileset.downloadBlocks`; ``report`` says how far it got.

    A :class:`KeyboardInterrupt`, so ``except KeyboardInterrupt`` catches it as before. Blocks neither
    done nor failed (``report.total - report.done``) were not fetched.
    """

    def __init__(self, message: str, report: PrefetchReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class PrefetchReport:
    """What :meth:`RESTfulBlockwiseFileset.downloadAllBlocks` did.

    Attributes
    ----------
    total
        Blocks in the region.
    downloaded
        Blocks this call fetched and published (a block another process or thread published while this
        call waited for it counts as skipped).
    skipped
        Blocks that were already available.
    failed
        Starts (view coordinates) of the blocks that could not be fetched, a plain list
        (``len(report.failed)`` counts them; :attr:`ok` says whether there are none).
    errors
        ``block start → error message`` for the first :data:`MAX_ERROR_DETAILS` failures.
    seconds
        Wall time of the call.
    error_types
        ``error class name → number of failed blocks`` (all failures counted).
    stop_reason
        Why the call stopped before attempting every block (its failures were systematic), or ``None``.
        Blocks it did not get to are neither failed nor skipped: see :attr:`not_attempted`.
    not_held
        With a cache size limit (``max_cache_bytes``): blocks of the region this call downloaded or found
        cached that the cache no longer holds at its end, because the region does not fit in the limit
        (they were evicted again to make room). ``0`` when the cache holds the whole region.
    """

    total: int = 0
    downloaded: int = 0
    skipped: int = 0
    failed: list[tuple[int, ...]] = field(default_factory=list)
    errors: dict[tuple[int, ...], str] = field(default_factory=dict)
    seconds: float = 0.0
    error_types: dict[str, int] = field(default_factory=dict)
    stop_reason: str | None = None
    not_held: int = 0

    _KEYS = (
        "total",
        "downloaded",
        "skipped",
        "failed",
        "errors",
        "seconds",
        "error_types",
        "stop_reason",
        "not_held",
    )

    def __getitem__(self, key: str) -> Any:
        """``report["downloaded"]`` works like ``report.downloaded`` (mapping-style access)."""
        if key not in self._KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> tuple[str, ...]:
        return self._KEYS

    @property
    def done(self) -> int:
        return self.downloaded + self.skipped + len(self.failed)

    @property
    def ok(self) -> bool:
        """``True`` when no block failed."""
        return not self.failed

    @property
    def stopped_early(self) -> bool:
        """``True`` if the call gave up on systematic failures (:attr:`stop_reason` says why)."""
        return self.stop_reason is not None

    @property
    def not_attempted(self) -> int:
        """Blocks of :attr:`total` the call did not download, find cached or see fail: it stopped early."""
        return max(self.total - self.done, 0)

    def record_failure(self, block_start: tuple[int, ...], message: str, error_type: str) -> None:
        """Count one failed block (its message kept for the first :data:`MAX_ERROR_DETAILS`)."""
        self.failed.append(block_start)
        if len(self.errors) < MAX_ERROR_DETAILS:
            self.errors[block_start] = message
        self.error_types[error_type] = self.error_types.get(error_type, 0) + 1

    def summary(self) -> str:
        text = (
            f"{self.total} blocks: {self.downloaded} downloaded, {self.skipped} already cached, "
            f"{len(self.failed)} failed"
        )
        if self.not_attempted:
            text += f", {self.not_attempted} not attempted"
        text += f", in {self.seconds:.1f} s"
        if self.stop_reason:
            text += f"; stopped early: {self.stop_reason}"
        if self.not_held:
            text += (
                f"; the cache could not hold the whole region: {self.not_held} of its blocks were evicted "
                "again to stay within max_cache_bytes"
            )
        if self.failed:
            first = self.failed[0]
            text += f"; first failure at block {list(first)}: {self.errors.get(first, '?')}"
        return text


class SystematicFailures:
    """Decides when a prefetch gives up because every block it has not tried yet would fail as well.

    * The cache cannot be written (:class:`~lazyflow_rbfs.errors.CacheWriteError`, or an ``OSError`` of
      the cache's file system saying it is full, read-only, over quota or forbidden): at the first one.
    * The first ``max_failures`` blocks attempted (downloaded or failed; blocks found cached do not count)
      all failed with the same error class: a dead server, a wrong URL. Once a block was downloaded, or
      two error classes were seen among those first blocks, later failures never stop the call (they are
      about single blocks: a missing region, a flaky response).

    ``max_failures`` ``0`` or ``None`` never stops early. Not thread-safe: callers hold their own lock.
    """

    def __init__(self, max_failures: int | None) -> None:
        self.limit = max_failures or 0
        self.attempts = 0
        self.kinds: set[str] = set()
        self.armed = self.limit > 0

    def cache_failure(self, exc: BaseException) -> str | None:
        """The reason to stop if ``exc`` says the cache cannot be written at all."""
        if self.limit <= 0:
            return None
        if isinstance(exc, CacheWriteError) or (
            isinstance(exc, OSError) and not isinstance(exc, RbfsError) and exc.errno in _CACHE_WRITE_ERRNOS
        ):
            return (
                f"the cache cannot be written ({type(exc).__name__}: {exc}); downloading more blocks would "
                "only throw them away"
            )
        return None

    def observe(self, downloaded: int, failures: Mapping[str, int]) -> str | None:
        """Count finished blocks (``failures``: error class name → count); the reason to stop, once."""
        if not self.armed:
            return None
        self.attempts += downloaded + sum(failures.values())
        self.kinds.update(kind for kind, n in failures.items() if n)
        if downloaded or len(self.kinds) > 1:
            self.armed = False
            return None
        if self.attempts < self.limit:
            return None
        self.armed = False
        (kind,) = self.kinds
        return (
            f"the first {self.attempts} blocks attempted all failed with {kind} (max_failures={self.limit})"
        )


def check_max_failures(max_failures: Any) -> int:
    """``max_failures`` checked: an int >= 0 (``None`` is 0, never stop early)."""
    if max_failures is None:
        return 0
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        raise ArgumentError(
            f"max_failures must be None or an integer >= 0 (0: never stop early), got {max_failures!r}"
        )
    return max_failures


def run_prefetch(
    fetcher: BlockFetcher,
    block_starts: Iterable[Any],
    *,
    max_parallel: int,
    total: int,
    progress: bool | Callable[[int, int], Any],
    raise_on_failure: bool,
    max_failures: int,
    bytes_received: Callable[[], int] | None = None,
) -> PrefetchReport:
    """Make the given blocks (view block starts, consumed lazily) available through ``fetcher``.

    At most ``max_parallel`` downloads run at once, on a pool of this call's own; cached blocks are
    skipped. Stops early on systematic failures (:class:`SystematicFailures` with ``max_failures``);
    a Ctrl-C raises :class:`PrefetchInterrupted` carrying the report. See
    :meth:`~lazyflow_rbfs.cache.RESTfulBlockwiseFileset.downloadBlocks`.
    """
    rule = SystematicFailures(max_failures)
    report = PrefetchReport(total=total)
    bar, tick = progress_reporter(progress, report.total, bytes_received=bytes_received)
    t0 = time.monotonic()
    mutex = threading.Lock()
    window = threading.Semaphore(max_parallel * 4)
    stop = threading.Event()  # set when the failures are systematic: start no further block
    dropped = [0]

    def watch(block_start: tuple[int, ...]) -> None:
        # Holds one window slot until record() has counted the block.
        # A pool that was shut down (close(), an interrupt, an early stop) between the loop's check
        # and here ends the claim with Abandoned: record() sorts it out.
        future, owner = fetcher.claim(pool, block_start)
        future.add_done_callback(lambda f, b=block_start, o=owner: record(b, o, f))

    def record(block_start: tuple[int, ...], owner: bool, future: Future) -> None:
        exc = future.exception()
        if isinstance(exc, Abandoned) and not fetcher.closing:
            if pool.closed:
                # This call was interrupted or stopped early and its pool dropped the queued download:
                # the block is neither done nor failed (not attempted).
                with mutex:
                    dropped[0] += 1
                window.release()
                return
            try:
                watch(block_start)  # someone else dropped it: fetch it ourselves (keeps the slot)
                return
            except BaseException as again:  # noqa: BLE001 - counted as this block's failure
                exc = again
        try:
            if isinstance(exc, Abandoned):
                exc = ClosedError("the fileset was closed during the download")
            reason = None
            with mutex:
                if exc is not None:
                    kind = type(exc).__name__
                    report.record_failure(block_start, f"{kind}: {exc}", kind)
                    if not isinstance(exc, ClosedError):  # closing is not a failure of the blocks
                        reason = rule.cache_failure(exc) or rule.observe(0, {kind: 1})
                elif owner and future.result()[0] == "downloaded":
                    report.downloaded += 1
                    rule.observe(1, {})
                else:
                    report.skipped += 1
                if reason is not None and report.stop_reason is None:
                    report.stop_reason = reason
                    stop.set()
                    pool.refuse()  # from here on no queued download starts (they end as not attempted)
                else:
                    reason = None
                done, failed = report.done, len(report.failed)
        finally:
            window.release()
        if exc is not None:
            logger.warning("block %s failed: %s", list(block_start), exc)
        if reason is not None:
            logger.warning("stopping the prefetch early: %s", reason)
            # Drop the queued downloads now (never waits: running ones finish and are recorded).
            pool.shutdown()
        tick(done, failed)

    pool = fetcher.open_prefetch_pool(max_parallel)
    stopped_before_the_end = False
    interrupted: KeyboardInterrupt | None = None
    try:
        for block_start in block_starts:
            if fetcher.closing:
                break
            if stop.is_set():
                stopped_before_the_end = True
                break
            block_start = tuple(int(x) for x in block_start)
            if fetcher.available(block_start):
                with mutex:
                    report.skipped += 1
                    done, failed = report.done, len(report.failed)
                tick(done, failed)
                continue
            window.acquire()
            try:
                watch(block_start)
            except BaseException:
                window.release()
                raise
        # Wait for the tail: every submission holds a window slot until it is recorded.
        for _ in range(max_parallel * 4):
            window.acquire()
    except KeyboardInterrupt as exc:
        interrupted = exc
    finally:
        # Never waits: after an interrupt the queued blocks are dropped and the ones in flight go on
        # alone (close() abandons them).
        fetcher.close_prefetch_pool(pool)
        report.seconds = time.monotonic() - t0
        report.total = max(report.total, report.done)
        if report.stop_reason is not None and not (stopped_before_the_end or dropped[0]):
            report.stop_reason = None  # the stop came with the last blocks: nothing was left out
        if bar is not None:
            bar.close()
    if interrupted is not None:
        logger.info("prefetch interrupted: %s", report.summary())
        raise PrefetchInterrupted(f"prefetch interrupted: {report.summary()}", report) from interrupted
    return finish_report(report, raise_on_failure, "prefetch")


def finish_report(report: PrefetchReport, raise_on_failure: bool, what: str) -> PrefetchReport:
    """Log a finished prefetch; raise :class:`PrefetchError` carrying it if blocks failed (and asked to)."""
    logger.info("%s finished: %s", what, report.summary())
    if report.failed and raise_on_failure:
        raise PrefetchError(f"{what} incomplete: {report.summary()}", report=report)
    return report


class ProgressBar:
    """A tqdm bar of blocks on a terminal that also shows failed blocks and the download speed.

    ``rbfs prefetch``, ``read`` and ``export`` show it; a prefetch given ``progress=True`` makes one for
    itself. One bar may span several prefetches (``rbfs read`` downloads slab by slab): pass it as
    ``progress`` and each call adds a :meth:`section` of its own. The postfix reads ``failed=N`` (only
    once a block failed) and ``MB/s`` (bytes received since the bar started, from ``bytes_received``).

    Parameters
    ----------
    total
        Blocks the bar counts up to.
    bytes_received
        ``() -> int``: body bytes received so far (e.g. ``lambda: fileset.remote.stats.bytes_received``);
        without it no speed is shown.
    file
        Where to draw (default stderr).
    desc
        A short label in front of the bar.
    """

    def __init__(
        self,
        total: int,
        *,
        bytes_received: Callable[[], int] | None = None,
        file: Any = None,
        desc: str | None = None,
    ) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=total, unit="block", dynamic_ncols=True, smoothing=0.05, file=file, desc=desc, leave=True
        )
        self._bytes = bytes_received
        self._bytes0 = bytes_received() if bytes_received is not None else 0
        self._t0 = time.monotonic()
        self._mutex = threading.Lock()
        self._shown = 0
        self._base_done = 0
        self._base_failed = 0
        self.failed = 0

    @property
    def done(self) -> int:
        """Blocks counted so far (all sections)."""
        return self._shown

    def postfix(self) -> str:
        """The text after the bar: failures (if any) and MB/s."""
        parts = [f"failed={self.failed}"] if self.failed else []
        if self._bytes is not None:
            seconds = max(time.monotonic() - self._t0, 1e-9)
            parts.append(f"{(self._bytes() - self._bytes0) / seconds / 1e6:.1f} MB/s")
        return ", ".join(parts)

    def set(self, done: int, failed: int = 0) -> None:
        """Show ``done`` blocks counted (never goes back) of which ``failed`` failed."""
        with self._mutex:
            self.failed = max(self.failed, failed)
            self._bar.set_postfix_str(self.postfix(), refresh=False)
            if done > self._shown:
                self._bar.update(done - self._shown)
                self._shown = done
            else:
                self._bar.refresh()

    def section(self, total: int) -> Callable[..., None]:
        """A ``tick(done, failed=0)`` for one prefetch of ``total`` blocks, counted after the earlier ones."""
        with self._mutex:
            self._base_done, self._base_failed = self._shown, self.failed
            base_done, base_failed = self._base_done, self._base_failed
        if base_done + total > self._bar.total:
            self._bar.total = base_done + total
        return lambda done, failed=0: self.set(base_done + done, base_failed + failed)

    def close(self) -> None:
        with self._mutex:
            self._bar.set_postfix_str(self.postfix(), refresh=False)
            self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def progress_reporter(progress: Any, total: int, *, bytes_received: Callable[[], int] | None = None):
    """Return ``(bar to close or None, tick(done, failed=0))`` for ``progress``.

    ``progress`` is a bool (``True``: a :class:`ProgressBar` of this call, showing failures and, with
    ``bytes_received``, MB/s), a callable ``progress(done, total)``, or a :class:`ProgressBar` the caller
    owns (this call adds a section to it and leaves it open).
    """
    if isinstance(progress, ProgressBar):
        return None, progress.section(total)
    if callable(progress):
        return None, lambda done, failed=0: progress(done, total)
    if progress:
        bar = ProgressBar(total, bytes_received=bytes_received)
        return bar, bar.set
    return None, lambda done, failed=0: None
