"""File-system writes that either complete or leave nothing, and that report every failure.

Every file this package creates goes through here:

* :func:`write_file` (and :func:`write_bytes`, :func:`copy_file`) writes a temp file
  ``<name>.<pid>.<random>.partial`` next to the target with checked writes (a short write is continued,
  an error raised), fsyncs it, renames it onto the target and fsyncs the directory. On any failure the
  temp file is removed and the target is unchanged.
* :func:`open_dir` opens a directory below a root one component at a time, never following a symbolic
  link, so names can then be used relative to that directory (``dir_fd``) without being resolved again.
* :func:`create_empty` and :func:`remove` create a marker file (``STATUS.txt``) and remove an entry,
  never through a symbolic link.

Failures of the file system (full disk, read-only mount, quota, permissions) are raised as
:class:`~lazyflow_rbfs.errors.CacheWriteError` naming the path (chained from the ``OSError``); other
exceptions, such as a :class:`~lazyflow_rbfs.errors.RbfsError` raised while producing the content, pass
through unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from lazyflow_rbfs.errors import CacheWriteError, RbfsError

__all__ = [
    "PARTIAL_SUFFIX",
    "temp_name",
    "write_all",
    "pwrite_all",
    "write_file",
    "write_bytes",
    "copy_file",
    "open_dir",
    "link_error",
    "opened_dir",
    "create_empty",
    "remove",
    "fsync_dir",
]

logger = logging.getLogger(__name__)

#: Suffix of temp files; ``verify`` and ``purge-locks`` recognise (and remove) stray ones by it.
PARTIAL_SUFFIX = ".partial"

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_COPY_BUFFER = 1 << 20


def temp_name(name: str) -> str:
    """The temp file name for ``name``: ``<name>.<pid>.<random>.partial``."""
    return f"{name}.{os.getpid()}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}"


def write_all(fd: int, data: Any) -> None:
    """Write every byte of ``data`` (bytes-like) to ``fd`` at its position, continuing short writes."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        if written <= 0:  # a regular file never does this; do not spin if one does
            raise OSError(errno.EIO, "the file system accepted no bytes")
        view = view[written:]


def pwrite_all(fd: int, data: Any, offset: int) -> None:
    """Write every byte of ``data`` (bytes-like) to ``fd`` at ``offset``, continuing short writes."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.EIO, "the file system accepted no bytes")
        view = view[written:]
        offset += written


def _as_write_error(exc: BaseException, shown: str, action: str) -> BaseException:
    """``exc`` as raised to the caller: ``OSError``s of the file system become ``CacheWriteError``."""
    if isinstance(exc, OSError) and not isinstance(exc, RbfsError):
        return CacheWriteError.from_os_error(exc, shown, action)
    return exc


def fsync_dir(path: str | None = None, *, dir_fd: int | None = None) -> None:
    """Make a directory's entries durable (after a rename or create). File systems that cannot fsync a
    directory (``EINVAL``) are skipped."""
    fd = dir_fd if dir_fd is not None else os.open(path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        if dir_fd is None:
            os.close(fd)


def _reserve(fd: int, size: int) -> None:
    # Claim the space up front: a full disk is reported here, before anything is produced.
    if size <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS):
            return  # the file system cannot reserve; the writes themselves will report a full disk
        raise


def _unlink_quietly(name: str, dir_fd: int | None) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:  # cleaning up must not hide the original failure
        logger.warning("could not remove the temporary file %s: %s", name, exc)


def write_file(
    path: str,
    fill: Callable[[int], Any],
    *,
    dir_fd: int | None = None,
    fsync: bool = True,
    reserve: int = 0,
    mode: int = 0o666,
    keep_mode: bool = False,
    shown: str | None = None,
) -> None:
    """Create or replace ``path`` atomically with what ``fill(fd)`` writes into a temp file.

    Parameters
    ----------
    path
        The target. With ``dir_fd``, a name relative to that open directory (see :func:`open_dir`).
    fill
        Called with the temp file's descriptor (read-write, empty, position 0); writes the content, e.g.
        with :func:`write_all` or :func:`pwrite_all`. ``OSError``s it raises are failures to write
        ``path``; other exceptions (``RbfsError`` included) pass through. Either way nothing is left.
    dir_fd
        Directory descriptor ``path`` is relative to; the temp file and the rename use it too.
    fsync
        fsync the file before the rename and the directory after it (``False``: faster, but a power
        loss may lose or empty the file; a killed process never leaves a partial one either way).
    reserve
        Bytes to allocate up front (``posix_fallocate``) so a full disk is reported before ``fill`` runs.
    mode
        Permission bits of a new file (the umask applies).
    keep_mode
        Give the new file the permission bits of the file it replaces, if any.
    shown
        The path to name in errors (default ``path``).

    Raises
    ------
    CacheWriteError
        The file system refused: full disk, read-only, quota, permissions, a symbolic link in the way.
    """
    shown = path if shown is None else shown
    temp = temp_name(path)
    try:
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
        fd = os.open(temp, flags, mode, dir_fd=dir_fd)  # readable too: HDF5 reads back what it writes
    except OSError as exc:
        raise CacheWriteError.from_os_error(exc, shown, "create a temporary file to write") from exc
    try:
        try:
            _reserve(fd, reserve)
            fill(fd)
            if keep_mode:
                with contextlib.suppress(FileNotFoundError):
                    os.fchmod(fd, os.stat(path, dir_fd=dir_fd).st_mode & 0o7777)
            if fsync:
                os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        os.close(fd)  # network file systems report write errors here
        os.replace(temp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException as exc:
        _unlink_quietly(temp, dir_fd)
        error = _as_write_error(exc, shown, "write")
        if error is exc:
            raise
        raise error from exc
    if fsync:
        try:
            fsync_dir(os.path.dirname(os.path.abspath(path)) if dir_fd is None else None, dir_fd=dir_fd)
        except OSError as exc:
            raise CacheWriteError.from_os_error(exc, shown, "make durable the directory entry of") from exc


def write_bytes(path: str, data: Any, **options: Any) -> None:
    """:func:`write_file` with the bytes-like ``data`` as the content."""
    write_file(path, lambda fd: write_all(fd, data), **options)


def copy_file(source: str, path: str, **options: Any) -> None:
    """:func:`write_file` with a copy of the file ``source`` as the content (``source`` is read with its
    symbolic links followed: check it first if that matters)."""
    with open(source, "rb") as src:
        size = os.fstat(src.fileno()).st_size
        options.setdefault("reserve", size)

        def fill(fd: int) -> None:
            buffer = bytearray(_COPY_BUFFER)
            view = memoryview(buffer)
            while True:
                n = src.readinto(buffer)
                if not n:
                    return
                write_all(fd, view[:n])

        write_file(path, fill, **options)


def _is_link(name: str, dir_fd: int | None) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def link_error(path: str, what: str = "a symbolic link inside the cache root") -> CacheWriteError:
    """The error for a symbolic link where this package writes: never written through, never followed."""
    return CacheWriteError(
        f"refusing to use {path}: it is {what}, and the cache never writes through or follows one; "
        "run `rbfs verify --repair` to remove planted links",
        path=path,
        errno=errno.ELOOP,
    )


def open_dir(root: str, parts: Sequence[str], *, create: bool) -> int:
    """Open the directory ``root/parts[0]/parts[1]/...`` and return its descriptor (close it yourself).

    ``root`` is opened as given (it may itself be a symbolic link: where the cache lives is the user's
    choice); every component of ``parts`` is opened with ``O_NOFOLLOW`` relative to its parent, so a
    symbolic link planted below ``root`` is refused, never followed. With ``create`` missing directories
    are made (``root`` with its parents).

    Raises
    ------
    FileNotFoundError
        A directory is missing and ``create`` is false.
    CacheWriteError
        A component is a symbolic link or not a directory, or the file system refused to create one.
    """
    flags = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC
    try:
        fd = os.open(root, flags)
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.makedirs(root, exist_ok=True)
            fd = os.open(root, flags)
        except OSError as exc:
            raise CacheWriteError.from_os_error(exc, root, "create the directory") from exc
    except OSError as exc:
        raise CacheWriteError.from_os_error(exc, root, "open the directory") from exc
    path = root
    for name in parts:
        path = os.path.join(path, name)
        try:
            try:
                child = os.open(name, flags | _O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o777, dir_fd=fd)
                child = os.open(name, flags | _O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            os.close(fd)
            raise
        except OSError as exc:
            link = exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(name, fd)
            os.close(fd)
            if link:
                raise link_error(path) from exc
            action = "create the directory" if create else "open the directory"
            raise CacheWriteError.from_os_error(exc, path, action) from exc
        os.close(fd)
        fd = child
    return fd


@contextlib.contextmanager
def opened_dir(root: str, parts: Sequence[str], *, create: bool) -> Iterator[int]:
    """:func:`open_dir` as a context manager that closes the descriptor."""
    fd = open_dir(root, parts, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def create_empty(name: str, *, dir_fd: int, fsync: bool = True, shown: str | None = None) -> None:
    """Create the empty marker file ``name`` in the directory ``dir_fd`` (an existing one is kept).

    A symbolic link at ``name`` is removed, never opened. With ``fsync`` the file and the directory are
    fsynced, so the marker is durable when this returns.
    """
    shown = name if shown is None else shown
    flags = os.O_WRONLY | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC
    try:
        try:
            fd = os.open(name, flags, 0o666, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno != errno.ELOOP or not _is_link(name, dir_fd):
                raise
            logger.warning("removed the symbolic link %s planted in the cache; creating a file there", shown)
            os.unlink(name, dir_fd=dir_fd)
            fd = os.open(name, flags, 0o666, dir_fd=dir_fd)
        try:
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if fsync:
            fsync_dir(dir_fd=dir_fd)
    except OSError as exc:
        raise CacheWriteError.from_os_error(exc, shown, "create") from exc


def remove(name: str, *, dir_fd: int | None = None, shown: str | None = None) -> bool:
    """Remove the file (or symbolic link, never its target) ``name``; ``False`` if it did not exist."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise CacheWriteError.from_os_error(exc, name if shown is None else shown, "remove") from exc
    return True
