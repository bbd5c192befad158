"""Sharded neuroglancer precomputed scales (``neuroglancer_uint64_sharded_v1``), read with byte ranges.

A sharded scale stores its chunks in ``2**shard_bits`` files ``<key>/<shard>.shard``. A chunk is named by
the *compressed Morton code* of its grid position (:func:`compressed_morton_code`); its id, shifted right
by ``preshift_bits`` and hashed (``identity`` or ``murmurhash3_x86_128``, the latter needs the package
``mmh3``), gives the minishard (the low ``minishard_bits`` bits) and the shard (the next ``shard_bits``).
A shard file starts with the *shard index*: ``2**minishard_bits`` pairs of little-endian ``uint64``
``[start, end)`` (relative to the end of the shard index) of each minishard's *minishard index*, which
lists ``(chunk id, offset, size)`` of its chunks, delta-encoded, ``3 x n`` ``uint64``, raw or gzip.

:class:`ShardedChunks` fetches the chunks of one read: the shard index of each shard touched and the
minishard index of each minishard touched (each once per reader: bounded, thread-safe caches in which
concurrent readers of the same index wait for the one fetch), then the chunk data, adjacent ranges of one
shard coalesced into one request. Everything a shard file declares (index offsets, minishard sizes,
chunk sizes) is checked against bounds before anything is fetched or allocated: a hostile shard is an
:class:`~lazyflow_rbfs.errors.InvalidResponseError`, never a huge allocation.

A chunk its minishard does not list, or a shard file that does not exist, is a *missing chunk*; the
reader decides what that means (:mod:`.precomputed`: HTTP 404 unless ``fill_missing``).
"""

from __future__ import annotations

import logging
import math
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lazyflow_rbfs.errors import DescriptionError, DownloadError, InvalidResponseError
from lazyflow_rbfs.locations import join

__all__ = [
    "SHARDING_TYPE",
    "ShardingSpec",
    "parse_sharding",
    "compressed_morton_code",
    "grid_shape",
    "murmurhash_available",
    "ShardedChunks",
    "BoundedCache",
    "MAX_MINISHARD_BITS",
    "MAX_INDEX_BYTES",
]

logger = logging.getLogger(__name__)

SHARDING_TYPE = "neuroglancer_uint64_sharded_v1"
_HASHES = ("identity", "murmurhash3_x86_128")
_ENCODINGS = ("raw", "gzip")

#: At most ``2**20`` minishards per shard: a shard index of at most 16 MiB (real volumes use up to ~2**10).
MAX_MINISHARD_BITS = 20
#: The largest decoded minishard index accepted (24 bytes per chunk: about 2.8 million chunks).
MAX_INDEX_BYTES = 64 * 1024 * 1024
#: Bytes of index data (shard and minishard indexes) one reader keeps.
CACHE_BYTES = 64 * 1024 * 1024
#: The largest request made by coalescing adjacent chunk ranges of one shard.
MAX_COALESCED_BYTES = 256 * 1024 * 1024
#: Offsets and sizes in a shard are below this (1 PiB): sums of them cannot overflow.
_MAX_OFFSET = 2**50

MMH3_HINT = "pip install 'lazyflow-rbfs[precomputed]' (or pip install mmh3)"


# ---------------------------------------------------------------------------------------------------------
# The sharding specification


@dataclass(frozen=True)
class ShardingSpec:
    """A validated ``sharding`` member of a precomputed scale."""

    preshift_bits: int
    hash: str
    minishard_bits: int
    shard_bits: int
    minishard_index_encoding: str = "raw"
    data_encoding: str = "raw"

    def as_json(self) -> dict[str, Any]:
        """The specification as JSON (as a description records it)."""
        return {
            "@type": SHARDING_TYPE,
            "preshift_bits": self.preshift_bits,
            "hash": self.hash,
            "minishard_bits": self.minishard_bits,
            "shard_bits": self.shard_bits,
            "minishard_index_encoding": self.minishard_index_encoding,
            "data_encoding": self.data_encoding,
        }

    @property
    def index_bytes(self) -> int:
        """Bytes of the shard index at the start of every shard file."""
        return 16 << self.minishard_bits

    def hashed(self, chunk_id: int) -> int:
        """``hash(chunk_id >> preshift_bits)`` (``murmurhash3_x86_128``: the low 8 bytes, little-endian)."""
        key = (int(chunk_id) & 0xFFFFFFFFFFFFFFFF) >> self.preshift_bits
        if self.hash == "identity":
            return key
        mmh3 = _mmh3()
        low, _high = mmh3.hash64(key.to_bytes(8, "little"), 0, False, False)
        return int(low)

    def locate(self, chunk_id: int) -> tuple[int, int]:
        """``(shard, minishard)`` of a chunk id."""
        h = self.hashed(chunk_id)
        minishard = h & ((1 << self.minishard_bits) - 1)
        shard = (h >> self.minishard_bits) & ((1 << self.shard_bits) - 1)
        return shard, minishard

    def shard_name(self, shard: int) -> str:
        """``<shard>.shard``: lowercase hex, zero-padded to ``ceil(shard_bits / 4)`` digits."""
        digits = (self.shard_bits + 3) // 4
        return f"{shard:0{digits}x}.shard" if digits else f"{shard:x}.shard"


def _mmh3() -> Any:
    try:
        import mmh3  # type: ignore[import-not-found]
    except ImportError:
        raise DescriptionError(
            f"scale: this sharded precomputed scale hashes chunk ids with murmurhash3_x86_128, which needs "
            f"the package 'mmh3' ({MMH3_HINT}); expected it installed, found it missing",
            field="scale",
        ) from None
    return mmh3


def murmurhash_available() -> bool:
    """True if ``mmh3`` (for ``murmurhash3_x86_128`` shardings) is installed."""
    try:
        _mmh3()
    except DescriptionError:
        return False
    return True


def parse_sharding(value: Any, where: str) -> ShardingSpec:
    """Validate a ``sharding`` object (of an info file, or recorded in a description).

    Raises
    ------
    ValueError
        Not a ``neuroglancer_uint64_sharded_v1`` specification this reader reads (the message says which
        member is wrong; callers turn it into their error type).
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a sharding object, found {value!r}"[:300])
    if value.get("@type") != SHARDING_TYPE:
        raise ValueError(f"{where}: expected '@type' {SHARDING_TYPE!r}, found {value.get('@type')!r}")

    def bits(name: str, top: int) -> int:
        v = value.get(name)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= top:
            raise ValueError(f"{where}: expected {name!r} an integer in [0, {top}], found {v!r}")
        return int(v)

    preshift = bits("preshift_bits", 64)
    minishard = bits("minishard_bits", MAX_MINISHARD_BITS)
    shard = bits("shard_bits", 64 - minishard)
    hash_name = value.get("hash")
    if hash_name not in _HASHES:
        raise ValueError(f"{where}: expected 'hash' one of {list(_HASHES)}, found {hash_name!r}")
    encodings = []
    for name in ("minishard_index_encoding", "data_encoding"):
        v = value.get(name, "raw")
        if v not in _ENCODINGS:
            raise ValueError(f"{where}: expected {name!r} one of {list(_ENCODINGS)}, found {v!r}")
        encodings.append(v)
    return ShardingSpec(preshift, hash_name, minishard, shard, encodings[0], encodings[1])


# ---------------------------------------------------------------------------------------------------------
# Chunk ids


def grid_shape(size_xyz: Sequence[int], chunk_xyz: Sequence[int]) -> tuple[int, int, int]:
    """Chunks per axis (x, y, z): ``ceil(size / chunk)``."""
    return tuple(-(-int(s) // int(c)) for s, c in zip(size_xyz, chunk_xyz))  # type: ignore[return-value]


def compressed_morton_code(position_xyz: Sequence[int], grid_xyz: Sequence[int]) -> int:
    """The compressed Morton code of a chunk's grid position (x, y, z) in a grid of ``grid_xyz`` chunks.

    Bit ``i`` of each coordinate is interleaved (x, then y, then z) only while that axis still needs bits
    (``i < bit_length(grid - 1)``): bits that are 0 for every chunk are skipped.
    """
    nbits = [max(int(g) - 1, 0).bit_length() for g in grid_xyz]
    code, j = 0, 0
    for i in range(max(nbits, default=0)):
        for axis in range(3):
            if i < nbits[axis]:
                code |= ((int(position_xyz[axis]) >> i) & 1) << j
                j += 1
    return code


# ---------------------------------------------------------------------------------------------------------
# A bounded, thread-safe cache that fetches each key once


class BoundedCache:
    """A least-recently-used cache of at most ``max_bytes`` (by ``size(value)``) that loads each key once.

    :meth:`get` returns the cached value or loads it with ``loader()``; while one thread loads a key,
    others asking for it wait for that load instead of loading again. A failed load is not cached (the
    error goes to the loading thread; waiting threads load again).
    """

    def __init__(self, max_bytes: int, size: Callable[[Any], int]) -> None:
        self.max_bytes = int(max_bytes)
        self._size = size
        self._lock = threading.Lock()
        self._values: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._loading: dict[Hashable, threading.Event] = {}
        self._bytes = 0
        #: Loads done (for tests and logs).
        self.loads = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def get(self, key: Hashable, loader: Callable[[], Any]) -> Any:
        while True:
            with self._lock:
                if key in self._values:
                    self._values.move_to_end(key)
                    return self._values[key][0]
                event = self._loading.get(key)
                if event is None:
                    event = self._loading[key] = threading.Event()
                    break
            event.wait()
        try:
            value = loader()
        except BaseException:
            with self._lock:
                del self._loading[key]
            event.set()
            raise
        nbytes = int(self._size(value))
        with self._lock:
            del self._loading[key]
            self.loads += 1
            if nbytes <= self.max_bytes:
                self._values[key] = (value, nbytes)
                self._bytes += nbytes
                while self._bytes > self.max_bytes:
                    _, (_, dropped) = self._values.popitem(last=False)
                    self._bytes -= dropped
        event.set()
        return value


# ---------------------------------------------------------------------------------------------------------
# Reading


def _bad(url: str, message: str) -> InvalidResponseError:
    return InvalidResponseError(f"sharded precomputed {url}: {message}", url=url, status=200)


def gunzip_at_most(data: bytes, limit: int, url: str, what: str) -> bytes:
    """Inflate gzip ``data`` to at most ``limit`` bytes (more is an :class:`InvalidResponseError`)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise _bad(url, f"{what} is not valid gzip data ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _bad(url, f"{what} inflates to more than the {limit} bytes it can hold; refusing it")
    return out


@dataclass(frozen=True)
class _Minishard:
    """A decoded minishard index: sorted chunk ids and their absolute ``[start, stop)`` in the shard."""

    ids: np.ndarray
    starts: np.ndarray
    stops: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes * 3) + 64

    def find(self, chunk_id: int) -> tuple[int, int] | None:
        i = int(np.searchsorted(self.ids, np.uint64(chunk_id)))
        if i < len(self.ids) and int(self.ids[i]) == chunk_id:
            return int(self.starts[i]), int(self.stops[i])
        return None


_EMPTY = _Minishard(np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64))


class ShardedChunks:
    """The chunk bodies of one sharded scale, fetched by chunk id through ``client`` with Range requests.

    Parameters
    ----------
    client:
        An :class:`~lazyflow_rbfs.remote.http.HttpClient` or :class:`~lazyflow_rbfs.remote.files.FileClient`.
    scale_url:
        The folder of the scale (``<volume>/<key>``).
    spec:
        The scale's sharding.
    max_chunk_bytes:
        The largest (encoded) chunk body accepted; a minishard index declaring a larger one is refused.
    max_chunks:
        The number of chunks of the scale (a minishard index listing more is refused).
    """

    def __init__(
        self, client: Any, scale_url: str, spec: ShardingSpec, *, max_chunk_bytes: int, max_chunks: int
    ) -> None:
        self.client = client
        self.scale_url = scale_url
        self.spec = spec
        self.max_chunk_bytes = int(max_chunk_bytes)
        self.max_index_bytes = min(MAX_INDEX_BYTES, 24 * max(1, int(max_chunks)))
        self._indexes = BoundedCache(CACHE_BYTES, lambda v: v.nbytes)

    def shard_url(self, shard: int) -> str:
        return join(self.scale_url, self.spec.shard_name(shard))

    def urls(self, chunk_ids: Sequence[int]) -> list[str]:
        """The shard files holding ``chunk_ids`` (each once, in order of first use)."""
        seen: dict[str, None] = {}
        for cid in chunk_ids:
            seen.setdefault(self.shard_url(self.spec.locate(cid)[0]), None)
        return list(seen)

    # -- indexes --------------------------------------------------------------------------------------

    def _ranged(self, url: str, start: int, stop: int, what: str) -> bytes:
        try:
            return self.client.get(url, byte_range=(start, stop), max_bytes=stop - start)
        except DownloadError as exc:
            if exc.status == 416:
                raise _bad(
                    url,
                    f"{what} (bytes {start}-{stop - 1}) lies past the end of the shard file (HTTP 416): the "
                    f"shard's index is damaged or the file changed while being read",
                ) from None
            raise

    def _shard_index(self, shard: int) -> np.ndarray | None:
        """The shard index (``2**minishard_bits x 2`` int64, absolute offsets), or ``None`` if the shard
        file does not exist."""
        url = self.shard_url(shard)

        def load() -> _Index:
            n = self.spec.index_bytes
            try:
                body = self._ranged(url, 0, n, "the shard index")
            except DownloadError as exc:
                if exc.status == 404 and type(exc) is DownloadError:
                    logger.debug("shard %s does not exist: its chunks are missing", url)
                    return _Index(None)
                raise
            if len(body) != n:
                raise _bad(url, f"the shard index has {len(body)} bytes, expected {n}")
            pairs = np.frombuffer(body, dtype="<u8").reshape(-1, 2)
            if (pairs > _MAX_OFFSET).any() or (pairs[:, 0] > pairs[:, 1]).any():
                bad = int(np.nonzero((pairs > _MAX_OFFSET).any(axis=1) | (pairs[:, 0] > pairs[:, 1]))[0][0])
                raise _bad(
                    url,
                    f"shard index entry {bad} is [{int(pairs[bad, 0])}, {int(pairs[bad, 1])}): expected "
                    f"start <= end below 2**50",
                )
            return _Index(pairs.astype(np.int64) + n)

        return self._indexes.get(("shard", shard), load).pairs

    def minishard(self, shard: int, minishard: int) -> _Minishard:
        """The decoded minishard index (empty if the shard or the minishard holds no chunk)."""

        def load() -> _Minishard:
            pairs = self._shard_index(shard)
            if pairs is None:
                return _EMPTY
            start, stop = (int(v) for v in pairs[minishard])
            if start == stop:
                return _EMPTY
            url = self.shard_url(shard)
            raw = self.spec.minishard_index_encoding == "raw"
            if stop - start > (self.max_index_bytes if raw else self.max_index_bytes + (1 << 20)):
                raise _bad(
                    url,
                    f"minishard {minishard} declares an index of {stop - start} bytes, more than the "
                    f"{self.max_index_bytes} bytes the scale's chunks can need; refusing it",
                )
            body = self._ranged(url, start, stop, f"the index of minishard {minishard}")
            if not raw:
                body = gunzip_at_most(body, self.max_index_bytes, url, f"the index of minishard {minishard}")
            return self._decode_minishard(body, url, minishard)

        return self._indexes.get(("minishard", shard, minishard), load)

    def _decode_minishard(self, body: bytes, url: str, minishard: int) -> _Minishard:
        if len(body) % 24:
            raise _bad(url, f"the index of minishard {minishard} has {len(body)} bytes, not a multiple of 24")
        table = np.frombuffer(body, dtype="<u8").reshape(3, -1)
        if (table[1:] > _MAX_OFFSET).any():
            raise _bad(url, f"the index of minishard {minishard} declares offsets or sizes beyond 2**50")
        ids = np.cumsum(table[0], dtype=np.uint64)
        sizes = table[2].astype(np.int64)
        if (sizes > self.max_chunk_bytes).any():
            raise _bad(
                url,
                f"minishard {minishard} declares a chunk of {int(sizes.max())} bytes, more than the "
                f"{self.max_chunk_bytes} bytes a chunk of this scale can need; refusing it",
            )
        gaps = table[1].astype(np.int64)
        starts = self.spec.index_bytes + np.cumsum(gaps) + np.concatenate(([0], np.cumsum(sizes)[:-1]))
        order = np.argsort(ids, kind="stable")
        return _Minishard(ids[order], starts[order], (starts + sizes)[order])

    # -- data -----------------------------------------------------------------------------------------

    def fetch(self, chunk_ids: Sequence[int]) -> dict[int, bytes | None]:
        """The encoded body of each chunk (``data_encoding`` not undone), ``None`` for a missing chunk.

        Adjacent ranges of one shard are fetched in one request.

        Raises
        ------
        InvalidResponseError
            A shard declares impossible offsets or sizes, or is shorter than its index says.
        DownloadError
            A request failed (a missing shard file is not a failure: its chunks are missing).
        """
        found: dict[int, bytes | None] = {}
        per_shard: dict[int, list[tuple[int, int, int]]] = {}
        for cid in dict.fromkeys(int(c) for c in chunk_ids):
            shard, minishard = self.spec.locate(cid)
            where = self.minishard(shard, minishard).find(cid)
            if where is None:
                found[cid] = None
            else:
                per_shard.setdefault(shard, []).append((where[0], where[1], cid))
        for shard, ranges in per_shard.items():
            url = self.shard_url(shard)
            for start, stop, members in _coalesce(ranges):
                body = self._ranged(url, start, stop, "chunk data") if stop > start else b""
                for c_start, c_stop, cid in members:
                    found[cid] = body[c_start - start : c_stop - start]
        return found


@dataclass(frozen=True)
class _Index:
    pairs: np.ndarray | None

    @property
    def nbytes(self) -> int:
        return 64 + (0 if self.pairs is None else int(self.pairs.nbytes))


def _coalesce(
    ranges: list[tuple[int, int, int]],
) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """Merge ranges that touch (one ends where the next starts) into requests of at most
    :data:`MAX_COALESCED_BYTES`; identical ranges (chunks sharing data) are fetched once."""
    out: list[tuple[int, int, list[tuple[int, int, int]]]] = []
    for start, stop, cid in sorted(ranges):
        if out:
            o_start, o_stop, members = out[-1]
            if start >= o_start and stop <= o_stop:
                members.append((start, stop, cid))
                continue
            if start == o_stop and stop - o_start <= MAX_COALESCED_BYTES:
                members.append((start, stop, cid))
                out[-1] = (o_start, stop, members)
                continue
        out.append((start, stop, [(start, stop, cid)]))
    return out


def chunk_count(grid_xyz: Sequence[int]) -> int:
    """Chunks of a grid."""
    return math.prod(int(g) for g in grid_xyz)
