"""Why an HTTP attempt failed: the :class:`Failure` an attempt raises and the retry loop of
:class:`~lazyflow_rbfs.remote.http.HttpClient` turns into a :class:`~lazyflow_rbfs.errors.DownloadError`.

Every transport exception (``requests``, urllib3, ``http.client``, socket) is classified here, once:
a timeout anywhere in its chain is a :class:`~lazyflow_rbfs.errors.RemoteTimeoutError`, a body cut off
while reading an :class:`~lazyflow_rbfs.errors.InvalidResponseError`, anything else a
:class:`~lazyflow_rbfs.errors.DownloadError`; all of them retryable. Messages say what to do.
"""

from __future__ import annotations

import http.client

import requests
import urllib3

from lazyflow_rbfs.errors import DownloadError, InvalidResponseError, RemoteTimeoutError
from lazyflow_rbfs.remote import redaction
from lazyflow_rbfs.remote.retry import RETRY_STATUSES

__all__ = ["Failure", "TRANSPORT_ERRORS", "is_timeout", "status_hint", "timeout_failure", "transport_failure"]

#: Exceptions a request or a body read can raise from below: translated, never passed on as they are.
TRANSPORT_ERRORS = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    ValueError,
)


class Failure(Exception):
    """Why one attempt failed; the retry loop turns the last one into a :class:`DownloadError`."""

    def __init__(
        self,
        error: type[DownloadError],
        head: str,
        tail: str = "",
        *,
        status: int | None = None,
        counted: bool = True,
        retryable: bool = False,
        retry_after: float | None = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__()
        self.error, self.head, self.tail, self.status = error, head, tail, status
        self.counted, self.retryable, self.retry_after, self.cause = counted, retryable, retry_after, cause

    @property
    def cause_name(self) -> str:
        """A short name of why the attempt failed, for counting retries by cause (``HttpStats``)."""
        if self.status is not None:
            return f"HTTP {self.status}"
        if issubclass(self.error, RemoteTimeoutError):
            return "timeout"
        if issubclass(self.error, InvalidResponseError):
            return "cut off"
        return "connection"

    def message(self, attempts: int) -> str:
        return self.head + (f" after {attempts} attempt(s)" if self.counted else "") + self.tail


def timeout_failure(url: str, timeout: object) -> Failure:
    """The attempt at ``url`` ran out of time (a socket timeout or its deadline); retryable."""
    return Failure(
        RemoteTimeoutError,
        f"GET {url} timed out (timeout={timeout}, the read part bounding the whole response)",
        "; the server is too slow or unreachable (increase timeout or retries, or check the server)",
        retryable=True,
    )


def transport_failure(exc: BaseException, url: str, timeout: object, *, reading: bool = False) -> Failure:
    """Translate a transport exception of an attempt at ``url`` (``reading``: while reading the body)."""
    if is_timeout(exc):
        failure = timeout_failure(url, timeout)
        failure.cause = exc
        return failure
    if reading:
        return Failure(
            InvalidResponseError,
            f"response from {url} was cut off while reading its body ({type(exc).__name__})",
            "; the server or the connection dropped the transfer, try again",
            retryable=True,
            cause=exc,
        )
    return Failure(
        DownloadError,
        f"GET {url} failed",
        f" (timeout={timeout}): could not get a response ({type(exc).__name__}); check that the "
        f"server is reachable and the URL is right",
        retryable=True,
        cause=exc,
    )


def status_hint(status: int) -> str:
    """What a user can do about an HTTP error ``status``."""
    if status in (401, 403):
        return (
            "check the credentials (the headers option; for the Boss, a token for this host in "
            "~/.intern/intern.cfg or INTERN_PROTOCOL, INTERN_HOST and INTERN_TOKEN)"
        )
    if status == 404:
        return (
            "check the description's url_format (or boss/precomputed fields) and that the region exists on "
            "the server"
        )
    if status == 413:
        return "the service refuses requests this large; lower max_cutout_bytes (boss) or the block_shape"
    if status == 406:
        return "the server cannot send the requested encoding (boss_encoding)"
    if status == 400:
        return "the server rejected the region; check the description's bounds, origin_offset and axes"
    if status in RETRY_STATUSES:
        return "the server is overloaded or failing; retry later or increase retries"
    return "check the server and the description's url_format"


def is_timeout(exc: BaseException) -> bool:
    """True if ``exc`` or anything it wraps is a connect/read timeout."""
    refused = urllib3.exceptions.NewConnectionError  # a ConnectTimeoutError subclass, but no timeout
    for item in redaction.exception_chain(exc, prune=(refused,)):
        if isinstance(item, refused):
            continue
        if isinstance(item, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
            return True
    return False
