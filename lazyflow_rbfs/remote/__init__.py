"""The remote layer: HTTP cutout services as validated numpy arrays.

``RESTfulVolume`` (:mod:`.volume`) builds URLs and validates responses, :mod:`.http` moves bytes (pooled
sessions, retries, timeouts, error translation) and :mod:`.codecs` decodes bodies, one function per
wire format. Formats that are not one GET per roi have a reader: :mod:`.boss` (BossDB cutouts, split at
the service's size limit) and :mod:`.precomputed` (neuroglancer precomputed chunks). This package never
touches the local cache directory.
"""

from __future__ import annotations

from lazyflow_rbfs.remote.codecs import Expected, get_decoder, register_decoder
from lazyflow_rbfs.remote.http import HttpClient, HttpStats
from lazyflow_rbfs.remote.volume import RESTfulVolume, source_url

__all__ = [
    "RESTfulVolume",
    "HttpClient",
    "HttpStats",
    "Expected",
    "get_decoder",
    "register_decoder",
    "source_url",
    "remote_advice",
]


def remote_advice(remote_desc, local_desc) -> list[str]:  # type: ignore[no-untyped-def]
    """Advice for ``rbfs info`` about a composite description (no network): e.g. a local ``block_shape``
    that fights the Boss cuboid grid (512 x 512 x 16). Empty when there is nothing to say."""
    if getattr(remote_desc, "format", None) == "boss":
        from lazyflow_rbfs.remote.boss import cuboid_advice

        return cuboid_advice(
            str(remote_desc.axes), remote_desc.origin_offset, local_desc.block_shape, local_desc.view_origin
        )
    return []
