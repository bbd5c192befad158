"""The remote-format interface: what one module per format provides, and the pieces formats share.

A :class:`RemoteFormat` is everything the package knows about one kind of remote source:

* its description fields and their validation (registered into the remote schema of
  :mod:`lazyflow_rbfs.description`, which consults the same registry);
* :meth:`~RemoteFormat.open_reader`: a :class:`Reader` that turns a roi into URLs and a validated array,
  through an :class:`~lazyflow_rbfs.remote.http.HttpClient` (``RESTfulVolume`` only delegates to it);
* :meth:`~RemoteFormat.source_url` (``rbfs info``), :meth:`~RemoteFormat.identity_location` (what a
  cache root records), :meth:`~RemoteFormat.advice` (``rbfs info``);
* :meth:`~RemoteFormat.parse_source` and :meth:`~RemoteFormat.probe` (``rbfs describe``).

Bodies are decoded in one place, :func:`decode_body`: the codec of the body encoding decodes and
validates, and an invalid body is counted on the client (``stats.errors``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from lazyflow_rbfs.description import IdentityLocation, Namespace
from lazyflow_rbfs.errors import DescriptionError, DownloadError, InvalidResponseError, RbfsError
from lazyflow_rbfs.remote import codecs
from lazyflow_rbfs.remote.files import open_client
from lazyflow_rbfs.remote.http import HttpClient
from lazyflow_rbfs.remote.redaction import scrub_error

__all__ = [
    "RemoteFormat",
    "Reader",
    "Probe",
    "ProbeOption",
    "ProbeRequest",
    "IdentityLocation",
    "fetch_block",
    "decode_body",
    "metadata_client",
    "sniff_file",
    "json_object",
]

logger = logging.getLogger(__name__)


class Reader(Protocol):
    """Reads rois of one remote volume; coordinates are the volume's own (``origin_offset`` not added)."""

    def urls(self, start: np.ndarray, stop: np.ndarray) -> list[str]:
        """Every URL a :meth:`fetch` of ``[start, stop)`` requests."""

    def fetch(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """``[start, stop)`` (inside the volume) as a validated array of the description's dtype."""


@dataclass(frozen=True)
class ProbeOption:
    """An option of :meth:`RemoteFormat.probe` beyond the common ones (``rbfs describe`` flag and keyword)."""

    #: Keyword of ``describe_source`` and ``probe`` (``"boss_url"``).
    name: str
    #: Command-line flag (``"--boss-url"``).
    flag: str
    help: str
    metavar: str | None = None
    #: A switch (``store_true``) rather than an option with a value.
    switch: bool = False


@dataclass(frozen=True)
class Probe:
    """What :meth:`RemoteFormat.probe` found: a remote description and the remote chunking."""

    #: The remote description, JSON-ready (a dict of ``"RESTful-volume-description"``).
    remote: dict[str, Any]
    #: The remote chunk (cuboid) shape in the description's axis order; local blocks are made of whole
    #: units.
    unit: tuple[int, ...]
    #: Bytes per voxel.
    itemsize: int


@dataclass(frozen=True)
class ProbeRequest:
    """What ``rbfs describe`` asks of :meth:`RemoteFormat.probe`."""

    #: The level to describe (format-specific: a scale key or index, a resolution), ``None``: the first.
    scale: str | int | None = None
    timeout: float | tuple[float, float] = (5, 60)
    retries: int = 3
    #: The caller's headers for the metadata requests (secrets: sent, never written).
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The environment credentials are looked up in (``None``: ``os.environ``).
    environ: Mapping[str, str] | None = None
    #: The format's :attr:`RemoteFormat.probe_options` that were given.
    options: Mapping[str, Any] = field(default_factory=dict)

    def client(
        self,
        *,
        secret: Mapping[str, str] | None = None,
        public: Mapping[str, str] | None = None,
        location: str | None = None,
    ) -> contextlib.AbstractContextManager[HttpClient]:
        """A :func:`metadata_client` with the format's ``secret`` and ``public`` headers (the caller's own
        headers win over ``secret`` ones of the same name); for a ``file://`` ``location``, a
        :class:`~lazyflow_rbfs.remote.files.FileClient` rooted there."""
        return metadata_client(
            timeout=self.timeout,
            retries=self.retries,
            headers={**(secret or {}), **self.headers},
            public_headers=public,
            location=location,
        )


class RemoteFormat(ABC):
    """One remote format (one module): description fields, reading, display, identity, describe.

    Class attributes a format sets: :attr:`names`, :attr:`fields`, :attr:`url_source`, and for
    ``rbfs describe`` :attr:`source_help`, :attr:`source_schemes`, :attr:`location_schemes` and
    :attr:`probe_options`. Register an instance with :func:`lazyflow_rbfs.remote.formats.register`.
    """

    #: The ``format`` values it reads; the first is its name.
    names: tuple[str, ...] = ()
    #: Its own remote description fields (name -> type); see :data:`lazyflow_rbfs.description.REMOTE_FIELDS`.
    fields: Mapping[str, Any] = {}
    #: ``None`` if it reads ``url_format``/``hdf5_dataset``; else where it derives its URLs from (then those
    #: two fields are refused, with this text in the message).
    url_source: str | None = None
    #: How ``rbfs describe`` sources of this format look (for messages), ``None`` if it cannot describe.
    source_help: str | None = None
    #: What ``rbfs describe`` expects at the metadata URLs it reads (for messages when one cannot be read);
    #: ``None``: "the metadata of a <name> source".
    metadata_help: str | None = None
    #: URL schemes that name this format (``boss://``, ``precomputed://``).
    source_schemes: tuple[str, ...] = ()
    #: Plain location schemes it also describes (``http``, ``https``, ``gs``, ``s3``), tried after the
    #: formats named by scheme.
    location_schemes: tuple[str, ...] = ()
    #: Options of :meth:`probe` beyond the common ones.
    probe_options: tuple[ProbeOption, ...] = ()

    @property
    def name(self) -> str:
        """The format's name (``names[0]``)."""
        return self.names[0]

    # -- description ----------------------------------------------------------------------------------

    @abstractmethod
    def validate(self, out: dict[str, Any], prefix: str) -> None:
        """Check and normalise this format's fields in ``out`` in place (the common fields are parsed
        already); raise :class:`DescriptionError` naming ``description.fields.join_field(prefix, field)``."""

    def check_composite(self, remote: Namespace, local: Namespace, local_field: str) -> None:  # noqa: B027
        """Check a parsed local description against this format's parsed remote one (nothing by default)."""

    # -- reading --------------------------------------------------------------------------------------

    def request_headers(self, desc: Any) -> tuple[dict[str, str], dict[str, str]]:
        """``(public, secret)`` headers every request of a volume carries (credentials are secret: the
        client keeps them on their origin and out of every message). None by default."""
        return {}, {}

    @abstractmethod
    def open_reader(self, desc: Any, client: HttpClient) -> Reader:
        """A :class:`Reader` of the parsed remote description ``desc`` through ``client``.

        Raises
        ------
        DescriptionError
            The description cannot be read by this installation (e.g. a codec package is missing).
        """

    # -- display and identity -------------------------------------------------------------------------

    @abstractmethod
    def source_url(self, desc: Any) -> str:
        """Where the data comes from, for display (``rbfs info``; no credentials, placeholders kept)."""

    @abstractmethod
    def identity_location(self, desc: Any) -> IdentityLocation:
        """Where the volume is, as a cache root records it (credentials are scrubbed by the caller)."""

    def advice(self, remote_desc: Any, local_desc: Any) -> list[str]:
        """Advice for ``rbfs info`` about a composite description (no network); none by default."""
        return []

    # -- rbfs describe --------------------------------------------------------------------------------

    def parse_source(self, source: str) -> Any | None:
        """Where a ``rbfs describe`` source of this format points, or ``None`` if ``source`` is not one.

        Raises
        ------
        DescriptionError
            (field ``source``) ``source`` names this format but is malformed.
        """
        return None

    #: What :meth:`sniff` looks for at a plain location, for messages (``"'info' (precomputed)"``).
    sniff_help: str | None = None

    def sniff(self, location: str, client: HttpClient) -> bool:
        """Whether the plain location ``location`` (an ``http(s)://`` or ``file:///`` URL from
        :func:`lazyflow_rbfs.locations.resolve`) holds a source of this format, by its metadata file
        (one or two small reads; a missing file is ``False``). Used when several formats read plain
        locations; ``False`` by default.

        Raises
        ------
        DownloadError
            The metadata could not be read for another reason than its absence (the caller reports it).
        """
        return False

    def probe(self, source: str, request: ProbeRequest) -> Probe:
        """Read the metadata of ``source`` and return a remote description of it (``rbfs describe``).

        Raises
        ------
        DescriptionError
            Bad source, scale or options, or a source this package cannot read.
        DownloadError
            The metadata could not be fetched, or is not valid.
        """
        raise DescriptionError(
            f"source: format {self.name!r} cannot describe a source, found {source!r}", field="source"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'/'.join(self.names)}>"


# ---------------------------------------------------------------------------------------------------------
# Shared by the readers


def decode_body(client: HttpClient, encoding: str, body: bytes, expected: codecs.Expected) -> np.ndarray:
    """Decode and validate ``body`` with the codec of ``encoding``; an invalid body is counted on ``client``.

    Raises
    ------
    InvalidResponseError
        The body is not the expected block (counted in ``client.stats.errors``).
    MissingCodecError
        The encoding needs a package that is not installed.
    """
    try:
        return codecs.get(encoding).decode(body, expected)
    except DownloadError as exc:
        client.record_error()
        logger.debug("invalid response from %s: %s", expected.url, scrub_error(exc))
        raise


def fetch_block(client: HttpClient, url: str, encoding: str, expected: codecs.Expected) -> np.ndarray:
    """GET ``url`` (body bounded by the codec's limit for ``expected``) and :func:`decode_body` it."""
    body = client.get(url, max_bytes=codecs.get(encoding).max_body_bytes(expected.nbytes))
    return decode_body(client, encoding, body, expected)


@contextlib.contextmanager
def metadata_client(
    *,
    timeout: float | tuple[float, float],
    retries: int,
    headers: Mapping[str, str] | None = None,
    public_headers: Mapping[str, str] | None = None,
    location: str | None = None,
) -> Iterator[HttpClient]:
    """An :class:`HttpClient` for a few metadata requests (one at a time), closed on exit. Errors raised
    inside are scrubbed of the headers' secrets (a metadata error may quote a body that echoes them).
    For a ``file://`` ``location`` (see :mod:`lazyflow_rbfs.locations`), a
    :class:`~lazyflow_rbfs.remote.files.FileClient` rooted there instead."""
    with open_client(
        location or "https://",
        timeout=timeout,
        retries=retries,
        headers=dict(headers or {}),
        public_headers=dict(public_headers or {}),
        max_parallel=1,
    ) as client:
        try:
            yield client
        except RbfsError as exc:
            scrub_error(exc)
            raise


def sniff_file(client: HttpClient, url: str, max_bytes: int) -> bool:
    """Whether the metadata file ``url`` exists (for :meth:`RemoteFormat.sniff`): ``False`` on 404 (and
    403: buckets answer it for absent objects), its body otherwise read and dropped.

    Raises
    ------
    DownloadError
        Any other failure.
    """
    try:
        client.get(url, max_bytes=max_bytes)
    except DownloadError as exc:
        if type(exc) is DownloadError and exc.status in (403, 404):
            return False
        raise
    return True


def json_object(body: bytes, url: str, what: str) -> dict[str, Any]:
    """A metadata file's ``body`` as a JSON object (``NaN`` and ``Infinity`` allowed, as zarr v2 writes
    them); ``what`` names the file in the message ("the N5 attributes file").

    Raises
    ------
    InvalidResponseError
        Not JSON, or not an object.
    """
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        problem = f"expected JSON, found {body[:60]!r} ({exc})"
    else:
        if isinstance(obj, dict):
            return obj
        problem = f"expected a JSON object, found {type(obj).__name__}"
    raise InvalidResponseError(f"{what} {url} is not usable: {problem}"[:600], url=url, status=200)
