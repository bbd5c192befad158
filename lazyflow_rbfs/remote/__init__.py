"""The remote layer: remote volumes as validated numpy arrays.

``RESTfulVolume`` (:mod:`.volume`) checks rois and delegates to the reader of the description's remote
format; :mod:`.formats` holds one module per format (:mod:`.formats.cutout`, the seed's HDF5 cutout API
and npz/npygz; :mod:`.formats.boss`, BossDB; :mod:`.formats.precomputed`, neuroglancer precomputed) behind
one interface and one registry; :mod:`.codecs` decodes bodies, one module per body encoding; :mod:`.http`
moves bytes (pooled sessions, retries, timeouts, error translation). This package never touches the local
cache directory.
"""

from __future__ import annotations

from typing import Any

from lazyflow_rbfs.errors import DescriptionError
from lazyflow_rbfs.remote import codecs, formats
from lazyflow_rbfs.remote.codecs import Expected, get_decoder, register_decoder
from lazyflow_rbfs.remote.formats import boss, precomputed
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
    "codecs",
    "formats",
    "boss",
    "precomputed",
]


def remote_advice(remote_desc: Any, local_desc: Any) -> list[str]:
    """Advice for ``rbfs info`` about a composite description (no network), from its remote format: e.g.
    a local ``block_shape`` that fights the Boss cuboid grid (512 x 512 x 16). Empty when there is nothing
    to say."""
    try:
        fmt = formats.get(getattr(remote_desc, "format", None))
    except DescriptionError:
        return []
    return fmt.advice(remote_desc, local_desc)
