"""Where remote data lives: locations of ``rbfs describe`` sources as the HTTP(S) URLs they are read from.

``http://`` and ``https://`` URLs are read as they are; ``gs://bucket/path`` and ``s3://bucket/path`` of
public buckets are read anonymously over their public HTTPS endpoints.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from lazyflow_rbfs.errors import DescriptionError

__all__ = ["LOCATION_SCHEMES", "http_url"]

#: The location schemes :func:`http_url` reads.
LOCATION_SCHEMES = ("http", "https", "gs", "s3")

_BUCKET_URLS = {
    "gs": "https://storage.googleapis.com/{bucket}/{path}",
    "s3": "https://{bucket}.s3.amazonaws.com/{path}",
}


def http_url(location: str) -> str | None:
    """The HTTP(S) URL of ``location`` without a trailing ``/``, or ``None`` for a scheme not read here.

    Raises
    ------
    DescriptionError
        (field ``source``) A ``gs://`` or ``s3://`` location without a bucket.
    """
    text = str(location).strip()
    scheme = urlsplit(text).scheme.lower()
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
