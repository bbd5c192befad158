"""Redirects :class:`~lazyflow_rbfs.remote.http.HttpClient` follows, and the origin the caller's secret
headers may be sent to.

At most :data:`MAX_REDIRECTS` per attempt, to ``http``/``https`` URLs only. The caller's ``headers`` go
only to the :func:`origin` (scheme, host, port) of the URL asked for.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import urllib3

from lazyflow_rbfs.errors import DownloadError
from lazyflow_rbfs.remote.failures import Failure

__all__ = ["MAX_REDIRECTS", "REDIRECT_STATUSES", "origin", "follow"]

#: Redirects followed per attempt.
MAX_REDIRECTS = 5

#: Statuses whose ``Location`` is followed.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` an ``http``/``https`` URL connects to, or ``None``: not http(s), user info in
    it, or read differently by ``urllib.parse`` and by urllib3 (which makes the connection), as with
    ``http://a:1\\@b:2/``. ``None`` is no origin: never the same as another."""
    try:
        parsed = urllib3.util.parse_url(url)
        split = urlsplit(url)
        split_port = split.port
    except (ValueError, urllib3.exceptions.LocationParseError):
        return None
    scheme = (parsed.scheme or "").lower()
    if scheme not in _DEFAULT_PORTS or parsed.auth is not None or "@" in split.netloc:
        return None
    host = (parsed.host or "").strip("[]").lower().rstrip(".")
    port = parsed.port or _DEFAULT_PORTS[scheme]
    split_host = (split.hostname or "").rstrip(".")
    if not host or host != split_host or port != (split_port or _DEFAULT_PORTS[scheme]):
        return None
    return scheme, host, port


def follow(current: str, location: str, hops: int, status: int) -> str:
    """The URL a redirect (HTTP ``status``, ``Location: location``) from ``current`` leads to, after
    ``hops`` redirects already followed; a :class:`Failure` (not retried) if it must not be followed."""
    target = urljoin(current, location.strip())
    if urlsplit(target).scheme.lower() not in ("http", "https"):
        raise Failure(
            DownloadError,
            f"GET {current}: HTTP {status} redirects to a {urlsplit(target).scheme or 'relative'!s} URL "
            f"({target!r}); only http and https redirects are followed",
            counted=False,
            status=status,
        )
    if hops >= MAX_REDIRECTS:
        raise Failure(
            DownloadError,
            f"GET {current}: more than {MAX_REDIRECTS} redirects (HTTP {status} to {target}); the server "
            f"redirects in a loop, check the URL",
            counted=False,
            status=status,
        )
    return target
