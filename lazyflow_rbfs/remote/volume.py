"""``RESTfulVolume``: a client of one remote cutout service volume.

It turns a roi (in the volume's own coordinates) into a URL, downloads it through
:class:`~lazyflow_rbfs.remote.http.HttpClient` and decodes the body with the codec of the description's
``format`` into a validated array. It never touches the local cache directory.
"""

from __future__ import annotations

import logging
import os
import secrets
import string
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from lazyflow_rbfs import description as _description
from lazyflow_rbfs.errors import ArgumentError, DescriptionError, DownloadError, RbfsError
from lazyflow_rbfs.geometry import check_roi
from lazyflow_rbfs.remote import boss, codecs, precomputed
from lazyflow_rbfs.remote.http import HttpClient, HttpStats
from lazyflow_rbfs.remote.redaction import scrub_error

__all__ = ["RESTfulVolume"]

logger = logging.getLogger(__name__)


def _normalize_h5(name: str) -> str:
    return "/" + str(name).strip("/")


def _split_dataset_path(path: str) -> tuple[str, str]:
    """``"dir/file.h5/internal/path"`` → ``("dir/file.h5", "/internal/path")`` (internal may be ``""``)."""
    parts = os.fspath(path).split("/")
    for i, part in enumerate(parts):
        if part.lower().endswith((".h5", ".hdf5", ".hdf")):
            internal = "/".join(parts[i + 1 :]).strip("/")
            return "/".join(parts[: i + 1]), ("/" + internal if internal else "")
    raise ArgumentError(
        f"output dataset path {path!r} must name an HDF5 file and a dataset inside it, "
        f"like 'dir/block.h5/cube' (a path component ending in .h5, .hdf5 or .hdf)"
    )


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
        origin = desc.origin_offset if desc.origin_offset is not None else np.zeros(len(self._axes))
        self._origin = np.asarray(origin, dtype=np.int64)
        self._dtype = np.dtype(desc.dtype)
        self._format = str(desc.format)
        self._dataset = _normalize_h5(desc.hdf5_dataset) if desc.hdf5_dataset is not None else None
        self._user_headers = {str(k): str(v) for k, v in (headers or {}).items()}
        client_headers = dict(self._user_headers)
        public_headers: dict[str, str] = {}
        self._url_parts: list[tuple[str, str | None]] = []
        if self._format == "boss":
            # The token is the user's (intern's configuration) for this boss_url's host only; it lives in
            # the client, which keeps it on that origin and out of every message.
            public_headers, secret = boss.request_headers(desc, boss.resolve_token(str(desc.boss_url)))
            if any(k.lower() == "authorization" for k in self._user_headers):
                secret = {}  # the caller's own Authorization wins
            client_headers = {**secret, **self._user_headers}
            logger.debug(
                "boss volume %s: token from %s", self.source_url, boss.token_source(str(desc.boss_url))
            )
        elif self._format != "precomputed":
            codecs.get_decoder(self._format)  # unknown formats fail now, not at the first download
            self._url_parts = self._parse_url_format(str(desc.url_format))
        self._options = {
            "timeout": timeout,
            "retries": retries,
            "max_parallel": max_parallel,
            "backoff": backoff,
        }
        self._client = HttpClient(
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_parallel=max_parallel,
            headers=client_headers,
            public_headers=public_headers,
        )
        self._reader: boss.BossReader | precomputed.PrecomputedReader | None = None
        if self._format == "boss":
            self._reader = boss.BossReader(desc, self._client)
        elif self._format == "precomputed":
            self._reader = precomputed.PrecomputedReader(desc, self._client)

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

    def _parse_url_format(self, url_format: str) -> list[tuple[str, str | None]]:
        needed = {f"{a}_{end}" for a in self._axes for end in ("start", "stop")}
        parts: list[tuple[str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(url_format))
        except ValueError as exc:
            raise DescriptionError(
                f"url_format {url_format!r} is not a valid format string: {exc}", field="url_format"
            ) from exc
        for literal, name, spec, conversion in parsed:
            if name is not None and (name not in needed or spec or conversion):
                raise DescriptionError(
                    f"url_format has placeholder {{{name}}}; expected only {{a_start}}/{{a_stop}} for each "
                    f"axis a of {self._axes!r}",
                    field="url_format",
                )
            parts.append((literal, name))
        missing = needed - {name for _, name in parts if name}
        if missing:
            raise DescriptionError(
                f"url_format {url_format!r} lacks the placeholders {sorted(missing)} for axes {self._axes!r}",
                field="url_format",
            )
        return parts

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
        if self._reader is not None:
            return self._reader.urls(start, stop)
        return [self._url(start, stop)]

    def _url(self, start: np.ndarray, stop: np.ndarray) -> str:
        values: dict[str, str] = {}
        for axis, a, b, o in zip(self._axes, start.tolist(), stop.tolist(), self._origin.tolist()):
            values[f"{axis}_start"] = str(int(a) + int(o))
            values[f"{axis}_stop"] = str(int(b) + int(o))
        return "".join(literal + (values[name] if name else "") for literal, name in self._url_parts)

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
            if self._reader is not None:
                return self._reader.fetch(start, stop)
            return self._fetch_one(start, stop)
        except RbfsError as exc:
            # Decoders quote the start of a bad body: a server that echoes a secret must not put it in
            # the message (the HTTP layer's own errors are scrubbed already).
            scrub_error(exc)
            raise

    def _fetch_one(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        url = self._url(start, stop)
        shape = tuple(int(s) for s in (stop - start))
        expected = codecs.Expected(url=url, shape=shape, dtype=self._dtype, dataset=self._dataset)
        nbytes = int(np.prod(shape)) * self._dtype.itemsize
        body = self._client.get(url, max_bytes=codecs.max_body_bytes(self._format, nbytes))
        try:
            return codecs.decode(self._format, body, expected)
        except DownloadError as exc:
            self._client.record_error()
            logger.debug("invalid response from %s: %s", url, scrub_error(exc))
            raise

    def downloadSubVolume(self, roi: Sequence, outputDatasetPath: str | os.PathLike) -> None:
        """Download ``roi`` into the HDF5 dataset ``outputDatasetPath`` (``"file.h5/internal/path"``).

        The file is written to a temporary name and renamed into place, so it either appears complete
        and validated or not at all (an existing file is replaced only on success).

        Raises
        ------
        DescriptionError
            The internal path differs from the description's ``hdf5_dataset`` (field ``hdf5_dataset``).
        OutOfBoundsError, DownloadError
            As :meth:`fetch`.
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
        directory, name = os.path.split(os.path.abspath(external))
        tmp = os.path.join(directory, f"{name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
        try:
            with h5py.File(tmp, "w") as f:
                f.create_dataset(internal, data=data)
            os.replace(tmp, external)
        except BaseException:
            try:
                os.remove(tmp)
            except FileNotFoundError:
                pass
            raise
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
    """A display URL of a remote description (no token, no placeholders filled in).

    ``url_format`` for ``hdf5``/``npz``/``npygz``; ``<boss_url>/v1/cutout/<collection>/<experiment>/<channel>/
    <resolution>/`` for ``boss``; ``<precomputed_url> (scale <scale>)`` for ``precomputed``.
    """
    fmt = getattr(desc, "format", None)
    if fmt == "boss":
        return (
            f"{str(desc.boss_url).rstrip('/')}/v1/cutout/{desc.collection}/{desc.experiment}/{desc.channel}/"
            f"{int(desc.resolution or 0)}/"
        )
    if fmt == "precomputed":
        return f"{str(desc.precomputed_url).rstrip('/')} (scale {desc.scale!r})"
    return str(getattr(desc, "url_format", ""))


def _rebuild(desc: Any, options: dict) -> RESTfulVolume:
    return RESTfulVolume(preparsedDescription=desc, **options)
