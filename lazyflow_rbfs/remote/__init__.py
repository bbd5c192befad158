"""The remote layer: HTTP cutout services as validated numpy arrays.

``RESTfulVolume`` (:mod:`.volume`) builds URLs and validates responses, :mod:`.http` moves bytes (pooled
sessions, retries, timeouts, error translation) and :mod:`.codecs` decodes bodies, one function per
wire format. This package never touches the local cache directory.
"""

from __future__ import annotations

from lazyflow_rbfs.remote.codecs import Expected, get_decoder, register_decoder
from lazyflow_rbfs.remote.http import HttpClient, HttpStats
from lazyflow_rbfs.remote.volume import RESTfulVolume

__all__ = ["RESTfulVolume", "HttpClient", "HttpStats", "Expected", "get_decoder", "register_decoder"]
