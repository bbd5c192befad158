"""Remote formats: one module per format behind one interface (:class:`~.base.RemoteFormat`), one registry.

Built in: :mod:`.cutout` (the seed's HDF5 cutout API and its ``npz``/``npygz`` variant), :mod:`.boss`
(BossDB), :mod:`.zarr` (zarr v2/v3 and OME-Zarr) and :mod:`.precomputed` (neuroglancer precomputed).
Importing this package registers them.

The registry is the one the remote description schema consults (:mod:`lazyflow_rbfs.description` holds
it, so that the description layer never imports this one): :func:`register` adds a format's fields to the
schema, and :func:`get` finds the format of a description for ``RESTfulVolume``, ``rbfs info`` and the
cache-root identity; :func:`for_source` finds the format of a ``rbfs describe`` source.

Adding a format is one new module holding a :class:`~.base.RemoteFormat` subclass and its instance, plus
one :func:`register` call (here, for a built-in format).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from lazyflow_rbfs.description import (
    register_remote_format,
    remote_format,
    remote_formats,
    unregister_remote_format,
)
from lazyflow_rbfs.errors import DescriptionError
from lazyflow_rbfs.locations import resolve
from lazyflow_rbfs.remote.formats import boss, cutout, n5, precomputed, zarr
from lazyflow_rbfs.remote.formats.base import (
    IdentityLocation,
    Probe,
    ProbeOption,
    ProbeRequest,
    Reader,
    RemoteFormat,
)

__all__ = [
    "IdentityLocation",
    "Probe",
    "ProbeOption",
    "ProbeRequest",
    "Reader",
    "RemoteFormat",
    "boss",
    "cutout",
    "detect",
    "for_source",
    "get",
    "n5",
    "precomputed",
    "register",
    "registered",
    "sources_help",
    "unregister",
    "zarr",
]


def register(fmt: RemoteFormat) -> None:
    """Register ``fmt``: descriptions whose ``format`` is one of ``fmt.names`` become readable, and its
    fields join the remote schema. Registering the same object again does nothing.

    Raises
    ------
    TypeError
        ``fmt`` is not a :class:`RemoteFormat`.
    ValueError
        A name is taken, or a field clashes (see
        :func:`lazyflow_rbfs.description.register_remote_format`).
    """
    if not isinstance(fmt, RemoteFormat):
        raise TypeError(f"expected a RemoteFormat, found {type(fmt).__name__}")
    register_remote_format(fmt)


def unregister(fmt: RemoteFormat) -> None:
    """Undo :func:`register` (for tests and plugins)."""
    unregister_remote_format(fmt)


def get(name: str) -> RemoteFormat:
    """The registered format that reads descriptions whose ``format`` is ``name``.

    Raises
    ------
    DescriptionError
        (field ``format``) No registered format has that name.
    """
    return remote_format(name)  # type: ignore[return-value]  # only RemoteFormats are registered here


def registered() -> tuple[RemoteFormat, ...]:
    """The registered formats, in the order they were registered."""
    return remote_formats()  # type: ignore[return-value]


def _candidates(source: str) -> tuple[list[RemoteFormat], bool]:
    """The formats that accept ``source`` and whether it named its format by scheme."""
    text = str(source).strip()
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    formats = registered()
    named = [fmt for fmt in formats if scheme and scheme in fmt.source_schemes]
    pool = named or [fmt for fmt in formats if scheme in fmt.location_schemes]
    return [fmt for fmt in pool if fmt.parse_source(text) is not None], bool(named)


def for_source(source: str) -> RemoteFormat:
    """The format of a ``rbfs describe`` source, without looking at it: the one its URL scheme names
    (``boss://``, ``precomputed://``, ``zarr://``), else the first that reads a plain location
    (``http(s)://``, ``gs://``, ``s3://``, ``file://``, a path) and accepts it. :func:`detect` looks.

    Raises
    ------
    DescriptionError
        (field ``source``) No registered format accepts ``source`` (the message lists what is accepted),
        or the format it names finds it malformed.
    """
    found, _ = _candidates(source)
    if not found:
        raise DescriptionError(f"source: expected {sources_help()}; found {source!r}", field="source")
    return found[0]


def detect(source: str, request: ProbeRequest) -> RemoteFormat:
    """The format of a ``rbfs describe`` source: as :func:`for_source`, but a plain location that several
    formats read is looked at (each format's :meth:`~RemoteFormat.sniff`, in registration order) and the
    first whose metadata is there wins.

    Raises
    ------
    DescriptionError
        (field ``source``) As :func:`for_source`; or nothing any format looks for is at the location (the
        message names the location and what was looked for).
    DownloadError
        The location could not be read (other than files being absent).
    """
    found, named = _candidates(source)
    if not found:
        raise DescriptionError(f"source: expected {sources_help()}; found {source!r}", field="source")
    if named or len(found) == 1:
        return found[0]
    location = resolve(str(source).strip())
    if location is None:  # pragma: no cover - every plain-location format accepts only resolvable ones
        return found[0]
    looked = []
    with request.client(location=location) as client:
        for fmt in found:
            if fmt.sniff(location, client):
                return fmt
            if fmt.sniff_help:
                looked.append(fmt.sniff_help)
    raise DescriptionError(
        f"source: found no volume at {location}: looked for {', '.join(looked) or 'metadata'} there and "
        f"found none (is the URL or path the folder of the array, image or volume?)",
        field="source",
    )


def sources_help() -> str:
    """What ``rbfs describe`` accepts, for messages and ``--help``: each registered format's
    ``source_help``, those reading plain locations first ("an http(s) URL of ..., or boss://...")."""
    formats = [fmt for fmt in registered() if fmt.source_help]
    ordered = [fmt for fmt in formats if fmt.location_schemes] + [
        fmt for fmt in formats if not fmt.location_schemes
    ]
    return ", or ".join(str(fmt.source_help) for fmt in ordered)


for _fmt in (cutout.HDF5, cutout.NPY, boss.BOSS, zarr.ZARR, n5.N5, precomputed.PRECOMPUTED):
    register(_fmt)
del _fmt
