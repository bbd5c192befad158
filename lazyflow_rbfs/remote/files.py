"""Reading a source from the file system: ``file://`` URLs and plain paths, with the HTTP client's interface.

A local copy of a zarr, N5 or precomputed volume, or one on a slow network file system, is read through the
same formats and the same cache as one behind a server. :class:`FileClient` answers
:meth:`~FileClient.get` like :class:`~lazyflow_rbfs.remote.http.HttpClient` does, so a format never knows
which one it has:

* a file that does not exist is a :class:`DownloadError` with ``status`` 404, as a server or a bucket
  answers (formats decide what a missing chunk means);
* a byte range reads exactly those bytes (a shorter file is an :class:`InvalidResponseError`);
* ``max_bytes`` bounds what is read, as it bounds a body;
* transient errors of network file systems (``EIO``, ``ETIMEDOUT``, ``ESTALE``, ...) are retried with the
  same backoff, other errors are not;
* every path read stays inside the client's ``root``, symbolic links resolved: a key built from a
  source's metadata can never make the client read another file of the machine.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from urllib.parse import unquote, urlsplit

from lazyflow_rbfs.errors import ArgumentError, ClosedError, DownloadError, InvalidResponseError
from lazyflow_rbfs.locations import is_file_url
from lazyflow_rbfs.remote.http import HttpClient, HttpStats, check_client_options, normalize_timeout
from lazyflow_rbfs.remote.ranges import ByteRange
from lazyflow_rbfs.remote.retry import delay

__all__ = ["FileClient", "file_path", "open_client", "TRANSIENT_ERRNOS"]

logger = logging.getLogger(__name__)

#: Errors of network file systems that a later attempt may not meet.
TRANSIENT_ERRNOS = frozenset(
    code
    for code in (
        errno.EIO,
        errno.EAGAIN,
        errno.EINTR,
        errno.ETIMEDOUT,
        getattr(errno, "ESTALE", None),
        getattr(errno, "ECONNRESET", None),
        getattr(errno, "EHOSTDOWN", None),
    )
    if code is not None
)


def file_path(url: str) -> str:
    """The local path of a ``file://`` URL (percent-escapes undone), or of a plain path.

    Raises
    ------
    ArgumentError
        A ``file://`` URL naming another host, or a relative one.
    """
    text = str(url)
    if "://" not in text:
        return os.path.abspath(text)
    parts = urlsplit(text)
    if parts.scheme.lower() != "file":
        raise ArgumentError(f"expected a file:// URL or a path, got {url!r}")
    if parts.netloc not in ("", "localhost"):
        raise ArgumentError(f"file URL {url!r} names host {parts.netloc!r}; only local files can be read")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ArgumentError(f"file URL {url!r} is not absolute (expected file:///absolute/path)")
    return path


class FileClient:
    """Read files under ``root`` with :class:`~lazyflow_rbfs.remote.http.HttpClient`'s ``get`` interface.

    Parameters
    ----------
    root:
        A ``file://`` URL or a path: the folder of the source. Nothing outside it is read.
    retries, backoff:
        As for the HTTP client: attempts after the first one for transient errors, and the backoff.
    timeout, max_parallel, headers, public_headers:
        Accepted for the HTTP client's signature; local reads have no timeout and no headers.
    """

    def __init__(
        self,
        root: str,
        *,
        timeout: float | tuple[float, float] = (5, 60),
        retries: int = 3,
        backoff: float = 0.2,
        max_parallel: int = 8,
        headers: object = None,
        public_headers: object = None,
    ) -> None:
        self.timeout = normalize_timeout(timeout)
        check_client_options(retries=retries, max_parallel=max_parallel, backoff=backoff)
        self.retries = retries
        self.backoff = float(backoff)
        self.max_parallel = max_parallel
        self.root = os.path.realpath(file_path(root))
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._requests = 0
        self._retries = 0
        self._bytes = 0
        self._errors = 0

    def __repr__(self) -> str:
        return f"<FileClient root={self.root!r} retries={self.retries}>"

    # -- the HTTP client's interface ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    def close(self) -> None:
        """Later reads raise :class:`ClosedError`; a read in progress finishes (local reads are short)."""
        self._closing.set()

    def __enter__(self) -> FileClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def header_names(self) -> list[str]:
        return []

    def raise_max_parallel(self, max_parallel: int) -> None:
        self.max_parallel = max(self.max_parallel, int(max_parallel))

    @property
    def stats(self) -> HttpStats:
        with self._lock:
            return HttpStats(
                requests=self._requests,
                retries=self._retries,
                bytes_received=self._bytes,
                errors=self._errors,
            )

    def record_error(self) -> None:
        with self._lock:
            self._errors += 1

    # -- reading --------------------------------------------------------------------------------------

    def path_of(self, url: str) -> str:
        """The path ``url`` names, checked to be inside :attr:`root` (links resolved).

        Raises
        ------
        DownloadError
            ``url`` is not a local file URL or path, or it leads outside the root.
        """
        try:
            path = file_path(url)
        except ArgumentError as exc:
            raise DownloadError(str(exc), url=url, status=None) from None
        real = os.path.realpath(path)
        if real != self.root and not real.startswith(self.root.rstrip(os.sep) + os.sep):
            raise DownloadError(
                f"refusing to read {path}: it is outside the source's folder {self.root}"
                + (f" (it resolves to {real})" if real != os.path.abspath(path) else ""),
                url=url,
                status=None,
            )
        return real

    def get(
        self,
        url: str,
        *,
        max_bytes: int | None = None,
        byte_range: tuple[int, int | None] | ByteRange | None = None,
    ) -> bytes:
        """The bytes of the file ``url`` names (all of them, or ``byte_range``), like ``HttpClient.get``.

        Raises
        ------
        DownloadError
            ``status`` 404: no such file. Otherwise (``status`` ``None``) the file could not be read after
            retries, or it is outside the root.
        InvalidResponseError
            The file is larger than ``max_bytes``, or shorter than ``byte_range``.
        ClosedError
            The client was closed.
        """
        wanted = None if byte_range is None else ByteRange.parse(byte_range)
        if self._closing.is_set():
            raise self._abandoned(url)
        with self._lock:
            self._requests += 1
        attempts = 0
        while True:
            attempts += 1
            try:
                body = self._read(url, max_bytes, wanted)
            except OSError as exc:
                if isinstance(exc, DownloadError):
                    self.record_error()
                    raise
                if exc.errno in TRANSIENT_ERRNOS and attempts <= self.retries:
                    wait = delay(attempts, self.backoff, None)
                    logger.debug("reading %s failed (%s); retrying in %.2f s", url, exc, wait)
                    if self._closing.wait(wait):
                        raise self._abandoned(url) from None
                    continue
                self.record_error()
                raise self._error(url, exc, attempts) from exc
            with self._lock:
                self._retries += attempts - 1
                self._bytes += len(body)
            return body

    def _abandoned(self, url: str) -> ClosedError:
        return ClosedError(f"reading {url} abandoned: the remote volume is closed; open a new one to read")

    def _error(self, url: str, exc: OSError, attempts: int) -> DownloadError:
        path = exc.filename or url
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return DownloadError(f"no such file: {path}", url=url, status=404)
        return DownloadError(
            f"reading {path} failed after {attempts} attempt(s): {exc.strerror or exc}", url=url, status=None
        )

    def _read(self, url: str, max_bytes: int | None, wanted: ByteRange | None) -> bytes:
        path = self.path_of(url)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(fd).st_size
            if wanted is None:
                start, length = 0, size
            elif wanted.suffix is not None:
                length = min(wanted.suffix, size)
                start = size - length
            else:
                start, length = int(wanted.start), wanted.length  # type: ignore[arg-type]
                if start + length > size:
                    raise InvalidResponseError(
                        f"{path} holds {size} bytes, fewer than {wanted} needs; the file is shorter than its "
                        f"index says (the source is damaged or changed while being read)",
                        url=url,
                        status=None,
                    )
            if max_bytes is not None and length > max_bytes:
                raise InvalidResponseError(
                    f"{path} holds {length} bytes, more than the {max_bytes} bytes a chunk of the requested "
                    f"size can need; refusing to read it",
                    url=url,
                    status=None,
                )
            out = bytearray(length)
            view = memoryview(out)
            done = 0
            while done < length:
                n = os.preadv(fd, [view[done:]], start + done)
                if n == 0:
                    raise InvalidResponseError(
                        f"{path} ended after {done} of {length} bytes (it shrank while being read)",
                        url=url,
                        status=None,
                    )
                done += n
            return bytes(out)
        finally:
            os.close(fd)


def open_client(location: str, **options: object) -> HttpClient | FileClient:
    """The client that reads ``location`` (a URL as :func:`lazyflow_rbfs.locations.resolve` returns it):
    a :class:`FileClient` rooted there for ``file://`` URLs and paths, else an
    :class:`~lazyflow_rbfs.remote.http.HttpClient`. ``options`` are the HTTP client's keywords."""
    if is_file_url(location):
        return FileClient(location, **options)  # type: ignore[arg-type]
    return HttpClient(**options)  # type: ignore[arg-type]
