"""Remote formats: one module per format behind one interface (:class:`~.base.RemoteFormat`), one registry.

Built in: :mod:`.cutout` (the seed's HDF5 cutout API and its ``npz``/``npygz`` variant), :mod:`.boss`
(BossDB) and :mod:`.precomputed` (neuroglancer precomputed). Importing this package registers them.

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
from lazyflow_rbfs.remote.formats import boss, cutout, precomputed
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
    "for_source",
    "get",
    "precomputed",
    "register",
    "registered",
    "sources_help",
    "unregister",
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


def for_source(source: str) -> RemoteFormat:
    """The format of a ``rbfs describe`` source: the one its URL scheme names (``boss://``,
    ``precomputed://``), else the first that reads a plain location (``http(s)://``, ``gs://``,
    ``s3://``) and accepts it.

    Raises
    ------
    DescriptionError
        (field ``source``) No registered format accepts ``source`` (the message lists what is accepted),
        or the format it names finds it malformed.
    """
    text = str(source).strip()
    scheme = urlsplit(text).scheme.lower()
    formats = registered()
    named = [fmt for fmt in formats if scheme and scheme in fmt.source_schemes]
    plain = [fmt for fmt in formats if scheme and scheme in fmt.location_schemes]
    for fmt in named or plain:
        if fmt.parse_source(text) is not None:
            return fmt
    raise DescriptionError(f"source: expected {sources_help()}; found {source!r}", field="source")


def sources_help() -> str:
    """What ``rbfs describe`` accepts, for messages and ``--help``: each registered format's
    ``source_help``, those reading plain locations first ("an http(s) URL of ..., or boss://...")."""
    formats = [fmt for fmt in registered() if fmt.source_help]
    ordered = [fmt for fmt in formats if fmt.location_schemes] + [
        fmt for fmt in formats if not fmt.location_schemes
    ]
    return ", or ".join(str(fmt.source_help) for fmt in ordered)


for _fmt in (cutout.HDF5, cutout.NPY, boss.BOSS, precomputed.PRECOMPUTED):
    register(_fmt)
del _fmt
