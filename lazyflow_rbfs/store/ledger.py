"""The footprint ledger: how many bytes of block files a cache root holds, known without a walk.

One small file per cache root, ``<root>/.rbfs-ledger``, holds a fixed-size text record::

    rbfs-ledger 1 bytes=<n> blocks=<n> pending=<n> dirty=<0|1> crc=<crc32 of the fields>

Every change of the block files (a publish, an eviction, a repair) runs inside :meth:`Ledger.change`:

1. take a *shared* ``flock`` on ``<root>/.rbfs-ledger.active`` (held for the whole change);
2. under an exclusive ``flock`` on the ledger file, read the record and write it back with
   ``pending + 1`` (one ``pwrite`` of one record: a killed process never tears it);
3. change the files;
4. under the exclusive lock again, apply the byte and block deltas and ``pending - 1``.

A process killed inside a change leaves ``pending > 0`` behind, and the kernel drops its shared lock.
Whoever later gets the *exclusive* lock on ``.rbfs-ledger.active`` (no change can be under way then)
and finds ``pending > 0``, ``dirty``, or a missing or damaged record, rebuilds the record by walking
the tree (:meth:`Ledger.reconcile`). That walk is exact: no change can start while it runs. Readers
never take part: the ledger costs two small locked writes per published block, not per read.

Blocks written by programs that do not know the ledger (upstream lazyflow) are not counted until the
next rebuild (``rbfs gc`` rebuilds whenever no change is under way).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from lazyflow_rbfs import locks
from lazyflow_rbfs.errors import CacheWriteError

__all__ = ["Footprint", "Ledger", "LEDGER_FILE_NAME", "ACTIVE_FILE_NAME"]

logger = logging.getLogger(__name__)

LEDGER_FILE_NAME = ".rbfs-ledger"
ACTIVE_FILE_NAME = ".rbfs-ledger.active"
_MAGIC = "rbfs-ledger 1"
_RECORD_SIZE = 128


@dataclass(frozen=True)
class Footprint:
    """What a ledger record says: ``bytes`` and number of ``blocks`` (block files), changes ``pending``
    (in progress, or left by a killed process), ``dirty`` (counted without a walk: not trusted)."""

    bytes: int = 0
    blocks: int = 0
    pending: int = 0
    dirty: bool = False

    @property
    def trusted(self) -> bool:
        """Whether no change was left unfinished and the count came from a walk plus deltas."""
        return self.pending == 0 and not self.dirty


def _encode(fp: Footprint) -> bytes:
    fields = f"bytes={fp.bytes} blocks={fp.blocks} pending={fp.pending} dirty={int(fp.dirty)}"
    text = f"{_MAGIC} {fields} crc={zlib.crc32(fields.encode()):08x}"
    return text.encode().ljust(_RECORD_SIZE - 1) + b"\n"


def _decode(data: bytes) -> Footprint | None:
    """The record in ``data``, or ``None`` if it is missing or damaged."""
    try:
        text = data.decode("ascii").strip()
        if not text.startswith(_MAGIC + " "):
            return None
        fields, crc = text[len(_MAGIC) + 1 :].rsplit(" crc=", 1)
        if f"{zlib.crc32(fields.encode()):08x}" != crc:
            return None
        values = dict(item.split("=", 1) for item in fields.split())
        fp = Footprint(
            bytes=int(values["bytes"]),
            blocks=int(values["blocks"]),
            pending=int(values["pending"]),
            dirty=values["dirty"] == "1",
        )
    except (UnicodeDecodeError, ValueError, KeyError):
        return None
    if fp.bytes < 0 or fp.blocks < 0 or fp.pending < 0:
        return None
    return fp


class Change:
    """The byte and block deltas of one :meth:`Ledger.change` (added by the caller as it goes)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.blocks = 0
        #: The record as left by this change (set when the change ends).
        self.after: Footprint | None = None

    def add(self, nbytes: int, blocks: int) -> None:
        self.bytes += nbytes
        self.blocks += blocks


#: Every ledger of this process, so a forked child gets fresh mutexes (a thread of the parent may have held
#: one at the fork).
_LEDGERS: weakref.WeakSet[Ledger] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's changes are the parent's: its shared lock's descriptor was closed at the fork (see
    # locks.FileLock), and its pending mark is dropped by the parent.
    for ledger in list(_LEDGERS):
        ledger._mutex = threading.Lock()
        ledger._active_mutex = threading.Lock()
        ledger._active_count = 0
        ledger._active_lock = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Ledger:
    """The footprint ledger of the cache root ``root`` (see the module docstring).

    ``walk()`` returns ``(bytes, blocks)`` of every block file under the root; it is called to rebuild
    the record.
    """

    def __init__(self, root: str, walk: Callable[[], tuple[int, int]]) -> None:
        self.root = root
        self.path = os.path.join(root, LEDGER_FILE_NAME)
        self.active_path = os.path.join(root, ACTIVE_FILE_NAME)
        self._walk = walk
        # Threads of this process take turns in user space before the record's flock: with many threads
        # (max_parallel) contending for the flock itself, each holder also waits for the GIL between its
        # system calls, and the lock convoys (measured: the largest wait of a cold fill).
        self._mutex = threading.Lock()
        # The changes under way in this process share one shared lock on ``.rbfs-ledger.active`` and one
        # ``pending`` in the record (the first to begin takes them, the last to end drops them), so a
        # change costs one update of the record, not two plus a lock file of its own.
        self._active_mutex = threading.Lock()
        self._active_count = 0
        self._active_lock: locks.FileLock | None = None
        _LEDGERS.add(self)

    # -- the record --

    @staticmethod
    def _read_fd(fd: int) -> Footprint | None:
        return _decode(os.pread(fd, _RECORD_SIZE, 0))

    @staticmethod
    def _write_fd(fd: int, fp: Footprint) -> None:
        os.pwrite(fd, _encode(fp), 0)

    def read(self) -> Footprint | None:
        """The record now, or ``None`` when it is missing or damaged (no walk: about 10 µs)."""
        if not os.path.isdir(self.root):
            return Footprint()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, OSError):
            return None
        try:
            return self._read_fd(fd)
        finally:
            os.close(fd)

    def _update(self, nbytes: int, blocks: int, pending: int) -> Footprint:
        try:
            return self._update_record(nbytes, blocks, pending)
        except CacheWriteError:
            raise
        except OSError as exc:  # a full, read-only or over-quota file system
            raise CacheWriteError.from_os_error(exc, self.path, "update the cache footprint ledger") from exc

    def _update_record(self, nbytes: int, blocks: int, pending: int) -> Footprint:
        with self._mutex, self._record_lock() as lock:
            old = self._read_fd(lock.fd)
            if old is None:  # missing or damaged: count from here on, but do not trust it until a walk
                old = Footprint(dirty=True)
            new = Footprint(
                bytes=max(old.bytes + nbytes, 0),
                blocks=max(old.blocks + blocks, 0),
                pending=max(old.pending + pending, 0),
                dirty=old.dirty,
            )
            self._write_fd(lock.fd, new)
        return new

    @contextlib.contextmanager
    def change(self) -> Iterator[Change]:
        """Wrap a change of block files; the caller adds its deltas to the yielded :class:`Change`.

        The deltas are applied when the block ends, also when it raises (what was changed is counted).
        While any change of this process is under way, the process holds ``.rbfs-ledger.active`` shared
        and counts once in the record's ``pending`` (a process killed meanwhile leaves it raised, and the
        next one rebuilds the record by a walk).
        """
        self._begin()
        delta = Change()
        try:
            yield delta
        finally:
            delta.after = self._end(delta)

    def _make_root(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise CacheWriteError.from_os_error(exc, self.root, "create the directory") from exc

    def _lock_file(self, path: str, *, shared: bool) -> locks.FileLock:
        """A held :class:`locks.FileLock` on ``path`` under the root, making the root only if it is missing
        (one ``open`` per lock, not a ``makedirs`` first: a change takes two of these)."""
        lock = locks.FileLock(path)
        try:
            lock.acquire(shared=shared)
        except CacheWriteError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise
            self._make_root()
            lock.acquire(shared=shared)
        return lock

    @contextlib.contextmanager
    def _record_lock(self) -> Iterator[locks.FileLock]:
        lock = self._lock_file(self.path, shared=False)
        try:
            yield lock
        finally:
            lock.release()

    def _begin(self) -> None:
        with self._active_mutex:
            if self._active_count == 0:
                active = self._lock_file(self.active_path, shared=True)
                try:
                    self._update(0, 0, +1)
                except BaseException:
                    active.release()
                    raise
                self._active_lock = active
            self._active_count += 1

    def _end(self, delta: Change) -> Footprint:
        with self._active_mutex:
            self._active_count -= 1
            last = self._active_count == 0
            try:
                return self._update(delta.bytes, delta.blocks, -1 if last else 0)
            finally:
                if last and self._active_lock is not None:
                    self._active_lock.release()
                    self._active_lock = None

    # -- rebuilding --

    @contextlib.contextmanager
    def exclusive(self, *, wait: bool) -> Iterator[bool]:
        """Hold the exclusive lock on ``.rbfs-ledger.active`` (no change can be under way) if it can be
        had (without waiting unless ``wait``); yields whether it is held."""
        active = locks.FileLock(self.active_path)
        held = os.path.isdir(self.root) and active.acquire(shared=False, blocking=wait)
        try:
            yield held
        finally:
            active.release()

    def write(self, footprint: Footprint) -> Footprint:
        """Replace the record (call only inside :meth:`exclusive`, with the count of a walk)."""
        try:
            with locks.FileLock(self.path) as lock:
                self._write_fd(lock.fd, footprint)
        except CacheWriteError:
            raise
        except OSError as exc:
            raise CacheWriteError.from_os_error(exc, self.path, "write the cache footprint ledger") from exc
        return footprint

    def reconcile(self, *, wait: bool = False, force: bool = False) -> Footprint | None:
        """Rebuild the record by a walk if it is not trusted (or ``force``); the record after.

        Needs the exclusive lock on ``.rbfs-ledger.active`` (no change under way): without ``wait`` it
        returns the record unchanged (possibly ``None``) when some change is under way.
        """
        if not os.path.isdir(self.root):
            return Footprint()
        active = locks.FileLock(self.active_path)
        if not active.acquire(shared=False, blocking=wait):
            return self.read()
        try:
            with locks.FileLock(self.path) as lock:
                current = self._read_fd(lock.fd)
            if current is not None and current.trusted and not force:
                return current
            nbytes, blocks = self._walk()
            rebuilt = self.write(Footprint(bytes=nbytes, blocks=blocks))
        finally:
            active.release()
        if current is None or not current.trusted:
            why = (
                "missing or damaged"
                if current is None
                else f"counted without a walk ({current})"
                if current.dirty
                else f"left unfinished by a killed process ({current})"
            )
            logger.info("rebuilt the cache footprint ledger %s (it was %s): %s", self.path, why, rebuilt)
        return rebuilt
