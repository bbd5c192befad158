"""Folders served as static files, with HTTP Range support, as buckets and static file servers serve them.

The formats that are files in a bucket (zarr, N5, sharded precomputed) are served by writing the volume
into a folder in that format (a *writer*, registered here by the format's emulator module) and serving
the folder under ``/files/<name>/`` of a :class:`~lazyflow_rbfs.testing.CutoutServer`
(:meth:`~lazyflow_rbfs.testing.CutoutServer.mount`). Range requests (``bytes=a-b``, ``bytes=a-``,
``bytes=-n``) are answered ``206`` unless the server's ``range_requests`` is off (then ``200`` with the
whole file, as a server without Range support answers).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from lazyflow_rbfs.testing.replies import HttpError, NotFound, Reply

__all__ = [
    "WRITERS",
    "register_writer",
    "write_source",
    "file_reply",
    "apply_range",
    "RangeNotSatisfiable",
]

#: Writers of the static formats: ``name -> writer(volume, axes, directory, **settings) -> source``, where
#: ``source`` is the path, relative to ``directory``, that ``rbfs describe`` is given (the array, image
#: or volume folder).
WRITERS: dict[str, Callable[..., str]] = {}

_CONTENT_TYPES = {".json": "application/json", "": "application/octet-stream"}


def register_writer(name: str, writer: Callable[..., str]) -> None:
    """Make ``rbfs serve --format NAME`` (and :func:`write_source`) write volumes with ``writer``."""
    WRITERS[name] = writer


def write_source(
    name: str, volume: np.ndarray, axes: str, directory: str | os.PathLike, **settings: Any
) -> str:
    """Write ``volume`` into ``directory`` in format ``name``; the source path relative to ``directory``.

    Raises
    ------
    ValueError
        No writer is registered under ``name``.
    """
    if name not in WRITERS:
        raise ValueError(
            f"no static writer for format {name!r}; known: {', '.join(sorted(WRITERS)) or 'none'}"
        )
    return WRITERS[name](volume, axes, os.fspath(directory), **settings)


class RangeNotSatisfiable(HttpError):
    status = 416


def file_reply(root: str, rel: str) -> Reply:
    """The file ``rel`` under the folder ``root`` (never outside it), as a rangeable reply.

    Raises
    ------
    NotFound
        No such file, a folder, or a path leaving ``root``.
    """
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, *[p for p in rel.split("/") if p]))
    if path != base and not path.startswith(base + os.sep):
        raise NotFound(f"{rel!r} is outside the served folder")
    try:
        with open(path, "rb") as f:
            body = f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound(f"no file {rel!r}") from None
    ext = os.path.splitext(path)[1].lower()
    content_type = _CONTENT_TYPES.get(ext, _CONTENT_TYPES[""])
    return Reply(content_type, body=body, extra={"Accept-Ranges": "bytes"}, ranged=True)


_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def apply_range(body: bytes, header: str) -> tuple[bytes, str]:
    """The part of ``body`` a ``Range`` header asks for and its ``Content-Range`` value (one range only).

    Raises
    ------
    RangeNotSatisfiable
        A range that starts past the end, or that cannot be parsed.
    """
    match = _RANGE.match(header.strip().replace(" ", ""))
    size = len(body)
    if match is None or (not match.group(1) and not match.group(2)):
        raise RangeNotSatisfiable(f"cannot parse Range {header!r}")
    first_s, last_s = match.groups()
    if not first_s:  # suffix
        n = int(last_s)
        if n == 0:
            raise RangeNotSatisfiable(f"empty suffix range {header!r}")
        first, last = max(0, size - n), size - 1
    else:
        first = int(first_s)
        last = min(int(last_s), size - 1) if last_s else size - 1
    if first >= size or last < first:
        raise RangeNotSatisfiable(f"range {header!r} is outside the file ({size} bytes)")
    return body[first : last + 1], f"bytes {first}-{last}/{size}"
