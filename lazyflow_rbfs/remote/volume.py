"""``RESTfulVolume``: a client of one remote volume.

It checks a roi (in the volume's own coordinates) and hands it to the reader of the description's remote
format (:mod:`lazyflow_rbfs.remote.formats`), which builds the URLs, downloads them through
:class:`~lazyflow_rbfs.remote.http.HttpClient` and decodes the bodies into a validated array. It knows no
format by name, and never touches the local cache directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from lazyflow_rbfs import atomic
from lazyflow_rbfs import description as _description
from lazyflow_rbfs.errors import ArgumentError, DescriptionError, RbfsError
from lazyflow_rbfs.geometry import check_roi
from lazyflow_rbfs.remote import formats
from lazyflow_rbfs.remote.files import open_client
from lazyflow_rbfs.remote.http import HttpStats
from lazyflow_rbfs.remote.redaction import scrub_error

__all__ = ["RESTfulVolume", "source_url"]

logger = logging.getLogger(__name__)


def _split_dataset_path(path: str) -> tuple[str, str]:
    """``"dir/file.h5/internal/path"`` → ``("dir/file.h5", "/internal/path")`` (internal may be ``""``)."""
    split = _description.split_h5_path(path)
    if split is None:
        raise ArgumentError(
            f"output dataset path {path!r} must name an HDF5 file and a dataset inside it, "
            f"like 'dir/block.h5/cube' (a path component ending in .h5, .hdf5 or .hdf)"
        )
    external, internal = split
    return external, (_description.normalize_h5_path(internal) if internal.strip("/") else "")


class RESTfulVolume:
    """A remote volume served by an HTTP cutout service (openconnecto.me-style API).

    Parameters
    ----------
    descriptionFilePath:
        Path to a ``"RESTful-volume-description"`` JSON file.
    preparsedDescription:
        An already parsed description (a ``Namespace`` or a dict); give exactly one of the two.
    timeout:
        Seconds, or ``(connect, read)`` seconds, for every request. The read part also bounds each
        response as a whole (from the moment its connection is ready), so a server that trickles bytes
        cannot hold a request past it; such a request is a ``RemoteTimeoutError`` and is retried.
    retries:
        Attempts after the first one (``retries=2``: at most 3 requests per roi) on connection errors,
        timeouts, 429 and 5xx.
    headers:
        Extra HTTP headers (e.g. ``Authorization``, ``X-Api-Key``); secrets: sent only to the origin of
        the description's URLs (never on a redirect to another origin), never logged, written anywhere,
        or shown in an error message.
    max_parallel:
        At most this many requests in flight at once through this volume.
    backoff:
        Exponential backoff factor between retries, in seconds.

    Examples
    --------
    >>> vol = RESTfulVolume("bock11.json")                      # doctest: +SKIP
    >>> block = vol.fetch(([0, 0, 0], [32, 256, 256]))         # doctest: +SKIP
    """

    #: The schema of a remote description (``description.REMOTE_FIELDS``).
    DescriptionFields = _description.REMOTE_FIELDS

    def __init__(
        self,
        descriptionFilePath: str | os.PathLike | None = None,
        preparsedDescription: Any = None,
        *,
        timeout: float | tuple[float, float] = (5, 60),
        retries: int = 3,
        headers: Mapping[str, str] | None = None,
        max_parallel: int = 8,
        backoff: float = 0.2,
    ) -> None:
        if (descriptionFilePath is None) == (preparsedDescription is None):
            raise TypeError(
                "RESTfulVolume needs exactly one of descriptionFilePath and preparsedDescription, "
                f"got {'both' if descriptionFilePath is not None else 'neither'}"
            )
        if preparsedDescription is not None:
            desc = _description.parse_remote(preparsedDescription)
        else:
            desc = self.readDescription(descriptionFilePath)
        self.description = desc
        self._descriptionFilePath = None if descriptionFilePath is None else os.fspath(descriptionFilePath)
        self._axes = str(desc.axes)
        self._shape = np.asarray(desc.shape, dtype=np.int64)
        self._dtype = np.dtype(desc.dtype)
        self._format = str(desc.format)
        fmt = formats.get(self._format)
        self._dataset = (
            _description.normalize_h5_path(desc.hdf5_dataset) if desc.hdf5_dataset is not None else None
        )
        self._user_headers = {str(k): str(v) for k, v in (headers or {}).items()}
        # A format's secret headers (a Boss token for its own host) live in the client, which keeps them on
        # their origin and out of every message; a header the caller gives wins over one of the same name.
        public_headers, secret = fmt.request_headers(desc)
        mine = {k.lower() for k in self._user_headers}
        secret = {k: v for k, v in secret.items() if k.lower() not in mine}
        self._options = {
            "timeout": timeout,
            "retries": retries,
            "max_parallel": max_parallel,
            "backoff": backoff,
        }
        # A source on the file system (file:// URL) is read by a client rooted at its folder.
        self._client = open_client(
            fmt.identity_location(desc).url,
            **self._options,
            headers={**secret, **self._user_headers},
            public_headers=public_headers,
        )
        try:
            self._reader = fmt.open_reader(desc, self._client)
        except BaseException:
            self._client.close()
            raise

    # -- description helpers (upstream classmethods) -------------------------------------------------

    @classmethod
    def readDescription(cls, descriptionFilePath: str | os.PathLike) -> Any:
        """Parse and validate a remote description file; defaults (``origin_offset``, ``shape``) filled in."""
        return _description.read_remote(descriptionFilePath)

    @classmethod
    def writeDescription(cls, descriptionFilePath: str | os.PathLike, descriptionFields: Any) -> None:
        """Validate ``descriptionFields`` and replace the file atomically."""
        _description.write_description(descriptionFilePath, descriptionFields, "remote")

    @classmethod
    def updateDescription(cls, descriptionFields: Any) -> None:
        """Fill in derived fields in place (upstream semantics: ``shape = bounds - origin_offset``)."""
        _description.update_remote_defaults(descriptionFields)

    # -- properties -----------------------------------------------------------------------------------

    @property
    def axes(self) -> str:
        return self._axes

    @property
    def shape(self) -> tuple[int, ...]:
        """The remote volume's shape (``bounds - origin_offset``)."""
        return tuple(int(s) for s in self._shape)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def stats(self) -> HttpStats:
        """Counters: ``requests``, ``retries``, ``bytes_received`` (alias ``bytes``), ``errors``."""
        return self._client.stats

    @property
    def closed(self) -> bool:
        return self._client.closed

    @property
    def format(self) -> str:
        """The remote description's ``format``."""
        return self._format

    @property
    def source_url(self) -> str:
        """Where the data comes from (display): ``url_format``, the Boss channel or the precomputed folder."""
        return source_url(self.description)

    # -- URLs -----------------------------------------------------------------------------------------

    def url_for(self, roi: Sequence) -> str:
        """The URL of ``roi = (start, stop)`` (volume coordinates; ``origin_offset`` is added here).

        Raises
        ------
        OutOfBoundsError
            The roi is not inside the remote ``shape``.
        """
        return self.urls_for(roi)[0]

    def urls_for(self, roi: Sequence) -> list[str]:
        """Every URL a :meth:`fetch` of ``roi`` requests (one for ``url_format`` formats; the split Boss
        cutouts; the precomputed chunks, which needs the info file).

        Raises
        ------
        OutOfBoundsError
            The roi is not inside the remote ``shape``.
        """
        start, stop = check_roi(roi, self._shape)
        return self._reader.urls(start, stop)

    # -- downloads ------------------------------------------------------------------------------------

    def fetch(self, roi: Sequence) -> np.ndarray:
        """Download ``roi = (start, stop)`` and return it as a validated array.

        Returns
        -------
        numpy.ndarray
            Exactly ``stop - start`` in shape, in the description's dtype.

        Raises
        ------
        OutOfBoundsError
            The roi is outside the remote ``shape`` (no request is made).
        RemoteTimeoutError, DownloadError
            The request failed after retries (``.url``, ``.status``).
        InvalidResponseError
            The body is not a cutout of the requested shape and dtype.
        """
        start, stop = check_roi(roi, self._shape)
        try:
            return self._reader.fetch(start, stop)
        except RbfsError as exc:
            # Decoders quote the start of a bad body: a server that echoes a secret must not put it in
            # the message (the HTTP layer's own errors are scrubbed already).
            scrub_error(exc)
            raise

    def downloadSubVolume(self, roi: Sequence, outputDatasetPath: str | os.PathLike) -> None:
        """Download ``roi`` into the HDF5 dataset ``outputDatasetPath`` (``"file.h5/internal/path"``).

        The file is written to a temporary name, fsynced and renamed into place
        (:func:`lazyflow_rbfs.atomic.write_file`), so it either appears complete and validated or not at
        all (an existing file is replaced only on success).

        Raises
        ------
        DescriptionError
            The internal path differs from the description's ``hdf5_dataset`` (field ``hdf5_dataset``).
        OutOfBoundsError, DownloadError
            As :meth:`fetch`.
        CacheWriteError
            The file system refused the write (full disk, read-only, permissions); nothing is left.
        """
        external, internal = _split_dataset_path(os.fspath(outputDatasetPath))
        if not internal:
            internal = self._dataset or "/data"
        elif self._dataset is not None and internal != self._dataset:
            raise DescriptionError(
                f"output dataset {internal!r} must equal the remote description's hdf5_dataset "
                f"{self._dataset!r}",
                field="hdf5_dataset",
            )
        data = self.fetch(roi)

        def fill(fd: int) -> None:
            with open(fd, "r+b", closefd=False) as file, h5py.File(file, "w") as f:
                f.create_dataset(internal, data=data)

        atomic.write_file(os.path.abspath(external), fill)
        logger.debug("wrote %s%s", external, internal)

    # -- lifetime -------------------------------------------------------------------------------------

    def raise_max_parallel(self, max_parallel: int) -> None:
        """Allow up to ``max_parallel`` requests in flight from now on (never lowers the limit)."""
        self._client.raise_max_parallel(max_parallel)

    def close(self) -> None:
        """Close the HTTP sessions and abandon the requests in flight. Idempotent; returns at once.

        A :meth:`fetch` in flight in another thread (receiving, waiting for a slot, or backing off before
        a retry) ends promptly with :class:`~lazyflow_rbfs.errors.ClosedError` and is not retried; later
        downloads raise it at once.
        """
        self._client.close()

    def __enter__(self) -> RESTfulVolume:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self):
        # Rebuilt from the description and the options (headers included: they travel in memory only).
        # A Boss token is not among them: the rebuilt volume resolves it again from its own environment.
        return (
            _rebuild,
            (self.description, dict(self._options, headers=dict(self._user_headers))),
        )

    def __repr__(self) -> str:
        name = getattr(self.description, "name", None)
        headers = self._client.header_names
        hidden = f", headers={headers} (values hidden)" if headers else ""
        state = ", closed" if self.closed else ""
        return (
            f"<RESTfulVolume name={name!r} format={self._format!r} axes={self._axes!r} shape={self.shape} "
            f"dtype={self._dtype.name} source={self.source_url!r}{hidden}{state}>"
        )


def source_url(desc: Any) -> str:
    """A display URL of a parsed remote description (no token, no placeholders filled in): the format's
    :meth:`~lazyflow_rbfs.remote.formats.base.RemoteFormat.source_url` (``url_format`` for a format this
    installation does not know)."""
    try:
        fmt = formats.get(getattr(desc, "format", None))
    except DescriptionError:
        return str(getattr(desc, "url_format", ""))
    return fmt.source_url(desc)


def _rebuild(desc: Any, options: dict) -> RESTfulVolume:
    return RESTfulVolume(preparsedDescription=desc, **options)
