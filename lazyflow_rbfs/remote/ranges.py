"""HTTP byte ranges: what a sharded source asks for, and how the answer is checked.

A byte range is ``(start, stop)``, half-open, ``0 <= start < stop``: exactly ``stop - start`` bytes from
``start``; or ``(-n, None)``: the last ``n`` bytes of the file (a suffix, as a sharded zarr array's index
at the end of a shard is read). :class:`ByteRange` parses and checks them once; :func:`check_answer` checks
that a response is the range asked for: ``206 Partial Content`` with a matching ``Content-Range``, or a
``200`` that can only be the same bytes (the whole file is the range). Any other ``200`` means the server
does not support ranges, which is a clear, permanent error rather than a silent download of a whole shard.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lazyflow_rbfs.errors import ArgumentError, DownloadError, InvalidResponseError
from lazyflow_rbfs.remote.failures import Failure

__all__ = ["ByteRange", "check_answer"]

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ByteRange:
    """A byte range: ``start``/``stop`` half-open, or a suffix of ``suffix`` bytes (then ``start`` is
    ``None``)."""

    start: int | None
    stop: int | None
    suffix: int | None = None

    @classmethod
    def parse(cls, value: object) -> ByteRange:
        """``(start, stop)`` with ``0 <= start < stop``, or ``(-n, None)`` with ``n >= 1``.

        Raises
        ------
        ArgumentError
            Anything else.
        """
        if isinstance(value, ByteRange):
            return value
        if isinstance(value, (tuple, list)) and len(value) == 2:
            start, stop = value
            if _is_int(start) and stop is None and start < 0:
                return cls(None, None, -int(start))
            if _is_int(start) and _is_int(stop) and 0 <= start < stop:
                return cls(int(start), int(stop))
        raise ArgumentError(
            f"byte_range must be (start, stop) with 0 <= start < stop, or (-n, None) for the last n bytes; "
            f"got {value!r}"
        )

    @property
    def length(self) -> int:
        """The most bytes the range can hold (a suffix may be shorter: the file may be smaller)."""
        if self.suffix is not None:
            return self.suffix
        return int(self.stop) - int(self.start)  # type: ignore[arg-type]

    @property
    def header(self) -> str:
        """The ``Range`` header value."""
        if self.suffix is not None:
            return f"bytes=-{self.suffix}"
        return f"bytes={self.start}-{int(self.stop) - 1}"  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self.suffix is not None:
            return f"the last {self.suffix} bytes"
        return f"bytes {self.start}-{int(self.stop) - 1}"  # type: ignore[arg-type]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_answer(status: int, headers: Mapping[str, str], wanted: ByteRange, url: str) -> int | None:
    """Check the status line and headers of the answer to a range request before its body is read.

    Returns the body length to expect exactly, or ``None`` if only an upper bound (``wanted.length``) is
    known (a suffix answered without a usable ``Content-Range``).

    Raises
    ------
    Failure
        The server answered ``200`` with more than the range (it does not support ranges: not retried),
        or a ``206`` whose ``Content-Range`` is not the range asked for.
    """
    length = headers.get("Content-Length")
    length_n = int(length) if length is not None and length.strip().isdigit() else None
    if status == 200:
        # A 200 is the whole file. It is the range only when the whole file is what was asked for.
        whole_is_range = length_n is not None and (
            (wanted.suffix is not None and length_n <= wanted.suffix)
            or (wanted.start == 0 and length_n == wanted.stop)
        )
        if whole_is_range:
            return length_n
        raise Failure(
            DownloadError,
            f"GET {url} ({wanted}) was answered with the whole file (HTTP 200"
            + (f", {length_n} bytes" if length_n is not None else "")
            + "): the server does not support HTTP Range requests",
            "; a sharded source is read in byte ranges, so it needs a server that supports them (static file "
            "servers, gs:// and s3:// buckets do), or a local copy read as a file:// path",
            status=200,
            counted=False,
        )
    match = _CONTENT_RANGE.match(headers.get("Content-Range", "") or "")
    if match is None:
        raise Failure(
            InvalidResponseError,
            f"GET {url} ({wanted}) answered 206 without a valid Content-Range header "
            f"(found {headers.get('Content-Range')!r})",
            status=status,
            counted=False,
        )
    first, last, total = int(match.group(1)), int(match.group(2)), match.group(3)
    size = last - first + 1
    if wanted.suffix is not None:
        ok = size <= wanted.suffix and (total == "*" or last == int(total) - 1)
    else:
        ok = first == wanted.start and last == int(wanted.stop) - 1  # type: ignore[arg-type]
    if not ok or last < first:
        raise Failure(
            InvalidResponseError,
            f"GET {url} asked for {wanted} but the server sent bytes {first}-{last}/{total}",
            "; the file is shorter than its index says (the source is damaged or changed while being read)"
            if wanted.suffix is None and first == wanted.start and last < int(wanted.stop) - 1  # type: ignore[arg-type]
            else "",
            status=status,
            counted=False,
        )
    return size
