"""Where remote data lives: ``rbfs describe`` sources and description fields as the URLs they are read from.

* ``http://`` and ``https://`` URLs are read as they are;
* ``gs://bucket/path`` and ``s3://bucket/path`` of public buckets are read anonymously over their public
  HTTPS endpoints;
* ``file://`` URLs and plain paths are read from the file system (:mod:`.files`), never through a server.

:func:`resolve` turns any of them into an ``http(s)://`` or ``file:///`` URL without a trailing ``/``;
:func:`is_file_url` tells which client reads it; :func:`join` appends keys a format computed.
"""

from __future__ import annotations

import os
import pathlib
from urllib.parse import unquote, urlsplit

from lazyflow_rbfs.errors import DescriptionError

__all__ = [
    "LOCATION_SCHEMES",
    "http_url",
    "resolve",
    "is_file_url",
    "join",
    "file_url",
]

#: The location schemes :func:`resolve` reads (``""``: a plain path).
LOCATION_SCHEMES = ("http", "https", "gs", "s3", "file", "")

_BUCKET_URLS = {
    "gs": "https://storage.googleapis.com/{bucket}/{path}",
    "s3": "https://{bucket}.s3.amazonaws.com/{path}",
}


def _scheme(text: str) -> str:
    # A plain path has no scheme; "C:/x" style drive letters are paths too.
    if "://" not in text:
        return ""
    return urlsplit(text).scheme.lower()


def http_url(location: str) -> str | None:
    """The HTTP(S) URL of ``location`` without a trailing ``/``, or ``None`` for a scheme not read over HTTP.

    Raises
    ------
    DescriptionError
        (field ``source``) A ``gs://`` or ``s3://`` location without a bucket.
    """
    text = str(location).strip()
    scheme = _scheme(text)
    if scheme in ("http", "https"):
        return text.rstrip("/")
    if scheme in _BUCKET_URLS:
        bucket, _, path = text.split("://", 1)[1].strip("/").partition("/")
        if not bucket:
            raise DescriptionError(
                f"source: expected {scheme}://bucket/path, found {location!r}", field="source"
            )
        return _BUCKET_URLS[scheme].format(bucket=bucket, path=path).rstrip("/")
    return None


def file_url(path: str | os.PathLike) -> str:
    """The ``file:///`` URL of a local path (made absolute against the working directory)."""
    return pathlib.Path(os.path.abspath(os.fspath(path))).as_uri().rstrip("/")


def resolve(location: str, *, field: str = "source") -> str | None:
    """``location`` as an ``http(s)://`` or ``file:///`` URL without a trailing ``/``; ``None`` for a
    scheme that is not a location (``boss://``, ``zarr://``, ...).

    Raises
    ------
    DescriptionError
        (field ``field``) A bucket URL without a bucket, a ``file://`` URL of another host, or an empty one.
    """
    text = str(location).strip()
    if not text:
        raise DescriptionError(f"{field}: expected a URL or a path, found an empty string", field=field)
    scheme = _scheme(text)
    if scheme == "":
        return file_url(text)
    if scheme == "file":
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise DescriptionError(
                f"{field}: expected file:///absolute/path (a local file), found {location!r}", field=field
            )
        return file_url(unquote(parts.path))
    return http_url(text)


def is_file_url(url: str) -> bool:
    """Whether ``url`` (as :func:`resolve` returns it) is read from the file system."""
    return _scheme(str(url)) in ("file", "")


def join(base: str, *keys: str) -> str:
    """``base`` with ``keys`` appended, ``/``-separated. Keys are relative and never climb out of ``base``.

    Raises
    ------
    ValueError
        A key that is absolute, empty, or holds a ``..`` or ``.`` component or a backslash.
    """
    parts = []
    for key in keys:
        for part in str(key).split("/"):
            if part in ("", ".", "..") or "\\" in part or "\0" in part:
                raise ValueError(f"refusing key {key!r}: keys are relative paths without '.', '..' or '\\'")
            parts.append(part)
    return "/".join([str(base).rstrip("/"), *parts])
