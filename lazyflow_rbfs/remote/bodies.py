"""Reading the body of a response for :class:`~lazyflow_rbfs.remote.http.HttpClient`: raw, bounded,
and inflated (HTTP ``Content-Encoding`` gzip or deflate) with the same bound.

A body larger than ``max_bytes`` (announced, read, or inflated) is refused without ever holding more
than ``max_bytes + 1`` bytes of it; a truncated body is a retryable :class:`~.failures.Failure`.
"""

from __future__ import annotations

import http.client
import io
import zlib
from collections.abc import Callable

import requests
import urllib3

from lazyflow_rbfs.errors import InvalidResponseError
from lazyflow_rbfs.remote import redaction
from lazyflow_rbfs.remote.failures import Failure, transport_failure

__all__ = ["ACCEPT_ENCODING", "read_body", "read_exact", "inflate", "excerpt"]

#: The ``Accept-Encoding`` the client sends: the encodings :func:`inflate` undoes.
ACCEPT_ENCODING = "gzip, deflate"

_CHUNK = 1 << 20
_EXCERPT = 200  # characters of an error page shown in a message


def read_body(
    response: requests.Response,
    url: str,
    max_bytes: int | None,
    *,
    timeout: object,
    count: Callable[[int], None],
) -> bytes:
    """The whole body of ``response`` (from ``url``), its ``Content-Encoding`` undone.

    ``count`` is told the number of bytes received (as sent) once they are read; ``timeout`` is only
    quoted in messages. Raises :class:`~.failures.Failure`.
    """
    status = response.status_code
    length = _content_length(response)
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        encoding = ""
    elif encoding not in ("gzip", "x-gzip", "deflate"):
        raise Failure(
            InvalidResponseError,
            f"response from {url} has Content-Encoding {encoding!r}; expected gzip, deflate or none "
            f"(the client asks for those only)",
            counted=False,
            status=status,
        )
    if max_bytes is not None and length is not None and length > max_bytes:
        raise Failure(
            InvalidResponseError,
            f"response from {url} announces {length} bytes, more than the {max_bytes} bytes a cutout of "
            f"the requested size can need; refusing to download it",
            counted=False,
            status=status,
        )
    raw = response.raw
    try:
        if length is not None:
            body = read_exact(raw, length)
        else:
            chunks = bytearray()
            while True:
                want = _CHUNK if max_bytes is None else min(_CHUNK, max_bytes + 1 - len(chunks))
                chunk = raw.read(want, decode_content=False)
                if not chunk:
                    break
                chunks += chunk
                if max_bytes is not None and len(chunks) > max_bytes:
                    raise Failure(
                        InvalidResponseError,
                        f"response from {url} is larger than the {max_bytes} bytes a cutout of the "
                        f"requested size can need; refusing to download it",
                        counted=False,
                        status=status,
                    )
            body = bytes(chunks)
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError) as exc:
        failure = transport_failure(exc, url, timeout, reading=True)
        failure.status = status
        raise failure from None
    count(len(body))
    if length is not None and len(body) != length:
        raise Failure(
            InvalidResponseError,
            f"response from {url} is truncated: Content-Length is {length} but {len(body)} bytes arrived",
            "; the server or the connection dropped the transfer, try again",
            status=status,
            retryable=True,
        )
    if encoding:
        body = inflate(body, encoding, max_bytes, url, status)
    return body


def read_exact(raw: urllib3.HTTPResponse, length: int) -> bytes:
    """Up to ``length`` bytes of the body of ``raw`` (fewer only if it ends early), undecoded.

    Read straight from the socket into one buffer of the announced size when urllib3 has buffered
    nothing of the body yet (the usual case): no intermediate chunks, no urllib3 bookkeeping per read.
    A connection whose body was read to its end goes back to its pool, as urllib3 itself would do.
    """
    fp = getattr(raw, "_fp", None)
    buffered = len(getattr(raw, "_decoded_buffer", ()))
    if not isinstance(fp, http.client.HTTPResponse) or raw.tell() != 0 or buffered:
        return raw.read(length, decode_content=False)  # one read: cheaper than chunks
    # The body is received straight into the storage of a new bytes object (a BytesIO's own buffer):
    # no copy after the read, and no page of a second buffer to fault in (about 0.5 ms per 512 KiB).
    holder = io.BytesIO(bytes(length))
    view = holder.getbuffer()
    got = 0
    try:
        while got < length:
            n = fp.readinto(view[got:])
            if not n:
                break
            got += n
    finally:
        view.release()
    if got == length and fp.length == 0 and not fp.isclosed():
        fp.read()  # an empty body: nothing to read, but http.client only ends the response on a read
    if fp.isclosed():
        raw.release_conn()
    body = holder.getvalue()
    return body if got == length else body[:got]


def excerpt(response: requests.Response) -> str:
    """A short, printable, scrubbed excerpt of an error page (e.g. "token invalid"); bounded."""
    try:
        raw = response.raw.read(4 * _EXCERPT + redaction.longest(), decode_content=False)
    except Exception:  # noqa: BLE001 - best effort, the status already says what went wrong
        return ""
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        try:
            wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
            raw = zlib.decompressobj(wbits).decompress(raw, 4 * _EXCERPT + redaction.longest())
        except zlib.error:
            return ""
    # Scrub the whole excerpt before cutting it: a secret cut in half would not be recognised.
    text = " ".join(redaction.redact(raw.decode("utf-8", "replace")).split())[:_EXCERPT]
    return f" (server said: {text!r})" if text else ""


def inflate(body: bytes, encoding: str, limit: int | None, url: str, status: int) -> bytes:
    """Undo an HTTP ``Content-Encoding`` without ever holding more than ``limit + 1`` bytes of output.

    The inflated members are kept as the ``bytes`` zlib returns: a body of one member (the usual case)
    is returned as it was inflated, without a copy.
    """
    pieces: list[bytes] = []
    total = 0
    rest = body
    wbits = 16 + zlib.MAX_WBITS if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
    try:
        while rest:
            inflater = zlib.decompressobj(wbits)
            try:
                piece = inflater.decompress(rest, 0 if limit is None else limit + 1 - total)
            except zlib.error:
                if encoding != "deflate" or wbits < 0 or total:
                    raise
                wbits = -zlib.MAX_WBITS  # a raw deflate stream, as some servers send
                continue
            pieces.append(piece)
            total += len(piece)
            if limit is not None and (total > limit or inflater.unconsumed_tail):
                raise Failure(
                    InvalidResponseError,
                    f"response from {url} inflates (Content-Encoding {encoding}) to more than the {limit} "
                    f"bytes a cutout of the requested size can need; refusing it",
                    counted=False,
                    status=status,
                )
            if not inflater.eof:
                raise zlib.error("the compressed stream ends early")
            rest = inflater.unused_data
            if encoding == "deflate":
                break
    except zlib.error as exc:
        raise Failure(
            InvalidResponseError,
            f"response from {url} is not valid {encoding} data (Content-Encoding): {exc}",
            counted=False,
            status=status,
        ) from None
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    return length if length is not None and length >= 0 else None
