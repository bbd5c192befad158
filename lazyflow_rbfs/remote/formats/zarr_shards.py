"""zarr v3 ``sharding_indexed``: a shard's index read with one Range request, and a bounded index cache.

Part of the ``"zarr"`` format (:mod:`.zarr`). A shard is one object holding many inner chunks and an
index: for each inner chunk (C order of the inner-chunk grid) a little-endian ``uint64`` offset and
length, optionally followed by a crc32c of the index; ``2**64 - 1`` twice marks an inner chunk that is
not stored (it reads as the array's ``fill_value``). The index is at the ``end`` of the shard (read as a
suffix range, ``bytes=-n``) or at its ``start``. A shard that does not exist (404) reads as
``fill_value`` everywhere.

:class:`ShardIndexCache` keeps the indexes fetched (a bounded number, least recently used dropped first),
and fetches each one once even when several blocks of the same shard are read at the same time: the
first reader fetches it while the others wait for that fetch (no byte range is fetched twice).
"""

from __future__ import annotations

import logging
import math
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from lazyflow_rbfs.errors import DownloadError, InvalidResponseError
from lazyflow_rbfs.remote.formats.zarr_codecs import crc32c
from lazyflow_rbfs.remote.formats.zarr_meta import ShardSpec

__all__ = ["MISSING", "ShardIndexCache", "index_nbytes", "read_shard_index", "DEFAULT_INDEX_CACHE"]

logger = logging.getLogger(__name__)

#: The offset and length of an inner chunk that is not stored.
MISSING = 2**64 - 1
#: Shard indexes a reader keeps by default.
DEFAULT_INDEX_CACHE = 256


def index_nbytes(spec: ShardSpec, per_shard: tuple[int, ...]) -> int:
    """Bytes of a shard's index (16 per inner chunk, plus 4 with a crc32c)."""
    return 16 * math.prod(per_shard) + (4 if spec.index_crc else 0)


def _invalid(url: str, message: str) -> InvalidResponseError:
    return InvalidResponseError(f"zarr shard {url}: {message}", url=url, status=None)


def read_shard_index(client: Any, url: str, spec: ShardSpec, per_shard: tuple[int, ...]) -> np.ndarray | None:
    """The index of the shard ``url`` as an array of shape ``per_shard + (2,)`` (offset, length) of
    ``uint64``; ``None`` if the shard does not exist (HTTP 404 / no such file).

    Raises
    ------
    InvalidResponseError
        The shard is shorter than its index, the index checksum does not match, or an entry is
        impossible (half missing, or past 2**63).
    DownloadError
        Any failure other than the shard's absence (403 included: an auth failure is not "missing").
    """
    size = index_nbytes(spec, per_shard)
    wanted = (-size, None) if spec.index_at_end else (0, size)
    try:
        body = client.get(url, byte_range=wanted, max_bytes=size)
    except DownloadError as exc:
        if type(exc) is DownloadError and exc.status == 404:
            logger.debug("zarr shard %s is missing: fill_value", url)
            return None
        raise
    if len(body) != size:
        raise _invalid(url, f"{len(body)} bytes, shorter than its index of {size} bytes (a damaged shard)")
    data = body
    if spec.index_crc:
        (stated,) = struct.unpack_from("<I", body, size - 4)
        data = body[:-4]
        actual = crc32c(data)
        if actual != stated:
            raise _invalid(
                url, f"shard index crc32c mismatch: states {stated:#010x}, its bytes give {actual:#010x}"
            )
    index = np.frombuffer(data, dtype="<u8").reshape((*per_shard, 2)).astype(np.uint64)
    offsets, lengths = index[..., 0], index[..., 1]
    missing = (offsets == MISSING) & (lengths == MISSING)
    half = (offsets == MISSING) ^ (lengths == MISSING)
    stored = ~missing
    if half.any() or (stored & ((offsets >= 2**62) | (lengths >= 2**62) | (lengths == 0))).any():
        raise _invalid(url, "its index holds impossible entries (a damaged shard, or not a zarr shard)")
    return index


class _Pending:
    __slots__ = ("event", "value", "failed")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: np.ndarray | None = None
        self.failed = False


class ShardIndexCache:
    """Shard indexes by URL: at most ``limit`` kept (least recently used dropped), each fetched once.

    ``None`` (a missing shard) is cached too.
    """

    def __init__(self, limit: int = DEFAULT_INDEX_CACHE) -> None:
        self.limit = max(1, int(limit))
        self._lock = threading.Lock()
        self._done: OrderedDict[str, np.ndarray | None] = OrderedDict()
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._done)

    def get(self, url: str, load: Callable[[], np.ndarray | None]) -> np.ndarray | None:
        """The cached index of ``url``, or ``load()`` (once, however many threads ask at the same time).

        Raises
        ------
        Exception
            What ``load`` raises (a thread that waited for a failed load tries itself).
        """
        while True:
            with self._lock:
                if url in self._done:
                    self._done.move_to_end(url)
                    return self._done[url]
                pending = self._pending.get(url)
                owner = pending is None
                if pending is None:
                    pending = self._pending[url] = _Pending()
            if not owner:
                pending.event.wait()
                if not pending.failed:
                    return pending.value
                continue  # the owner failed: try again (this thread may become the owner)
            try:
                value = load()
            except BaseException:
                with self._lock:
                    self._pending.pop(url, None)
                pending.failed = True
                pending.event.set()
                raise
            with self._lock:
                self._done[url] = value
                while len(self._done) > self.limit:
                    self._done.popitem(last=False)
                self._pending.pop(url, None)
            pending.value = value
            pending.event.set()
            return value
