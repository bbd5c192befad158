"""HDF5 bodies (the seed's cutout API): an HDF5 file holding the block as one dataset.

A response is data, never instructions: before any voxel is read, the dataset must be reached through
hard links only, keep its voxels in the body, use only the filters deflate, shuffle and fletcher32, and
declare chunks no larger than the block (see :func:`decode_hdf5`), so no body can make the client read a
local file or allocate much more than the block it stands for.
"""

from __future__ import annotations

import io
import logging
import math
import zlib
from typing import Any

import h5py
import numpy as np
from h5py import h5d, h5g, h5i, h5l, h5o, h5s, h5t, h5z

from lazyflow_rbfs.description import normalize_h5_path
from lazyflow_rbfs.errors import InvalidResponseError
from lazyflow_rbfs.remote.codecs.base import Codec, Expected, check_shape_dtype, guarded

__all__ = ["CODEC", "decode_hdf5", "encode_hdf5", "body_limit"]

logger = logging.getLogger(__name__)


def _invalid(expected: Expected, what: str, exc: BaseException | None = None) -> InvalidResponseError:
    detail = f" ({exc})" if exc is not None else ""
    return InvalidResponseError(
        f"response from {expected.url} is not a usable HDF5 cutout: {what}{detail}",
        url=expected.url,
        status=200,
    )


#: HDF5 filters a response may use. Each is checked before HDF5 runs it: shuffle keeps the size, fletcher32
#: adds 4 bytes, and deflate streams are inflated here first, with a limit (HDF5's own inflater grows its
#: buffer for as long as the stream goes on). Every other filter is refused: lzf, nbit and scaleoffset size
#: their buffers from values in the body, and szip and plugin filters are code HDF5 loads from disk
#: (``HDF5_PLUGIN_PATH``).
_HDF5_FILTERS = {
    h5z.FILTER_DEFLATE: "deflate",
    h5z.FILTER_SHUFFLE: "shuffle",
    h5z.FILTER_FLETCHER32: "fletcher32",
}
_HDF5_FILTER_NAMES = {
    h5z.FILTER_SZIP: "szip",
    h5z.FILTER_NBIT: "nbit",
    h5z.FILTER_SCALEOFFSET: "scaleoffset",
    h5z.FILTER_LZF: "lzf",
    307: "bzip2",
    32001: "blosc",
    32004: "lz4",
    32015: "zstd",
}
_HDF5_LAYOUTS = {h5d.COMPACT: "compact", h5d.CONTIGUOUS: "contiguous", h5d.CHUNKED: "chunked"}
_HDF5_TYPE_CLASSES = (h5t.INTEGER, h5t.FLOAT, h5t.ENUM)
_LINK_KINDS = {h5l.TYPE_SOFT: "a soft link", h5l.TYPE_EXTERNAL: "an external link (to another file)"}
_OUTSIDE = "a response is data and may not refer to anything outside itself"


@guarded("HDF5 cutout")
def decode_hdf5(body: bytes, expected: Expected) -> np.ndarray:
    """Decode an HDF5 file held in ``body`` and return its dataset ``expected.dataset``.

    The body is read from memory only (h5py's file-object driver on a ``BytesIO``: no file name, nothing
    for HDF5 to open beside it; no chunk cache). Before any voxel is read, the dataset must be reached
    through hard links only (no soft, external or user-defined link on its path) and be a simple
    dataspace of the expected shape and a numeric type that casts safely; it must keep its voxels in the
    body (compact, contiguous or chunked layout; never external raw storage or a virtual dataset, which
    name other files, so ``HDF5_EXTFILE_PREFIX``/``HDF5_VDS_PREFIX`` never come into play); chunks must be
    no larger than the dataset on any axis, filters only deflate, shuffle and fletcher32, and every stored
    chunk must be no larger than a chunk and inflate to exactly one (checked here with a limit). So no
    body can read a local file or make the client allocate much more than a few times the dataset.

    Chunks inflated for that check are assembled here directly when HDF5 would do nothing more with them
    (deflate and shuffle only, every chunk stored, a standard numeric type); otherwise HDF5 reads the
    dataset once everything is checked.

    A body laid out byte for byte like one already decoded in full (the same metadata around one plain
    contiguous dataset: see :class:`_KnownLayout`) is not opened in HDF5 again: its voxels are read at
    the same offset, zero-copy (a read-only array on ``body``).
    """
    name = normalize_h5_path(expected.dataset or "")
    key = (len(body), name, tuple(int(n) for n in expected.shape), np.dtype(expected.dtype).str)
    known = _KNOWN.get(key)
    if known is not None:
        array = known.view(body)
        if array is not None:
            return array
    try:
        f = h5py.File(io.BytesIO(body), "r", rdcc_nbytes=0)
    except (OSError, ValueError) as exc:
        start = body[:40].decode("latin-1", "replace")
        raise _invalid(
            expected, f"the body ({len(body)} bytes, beginning {start!r}) is not a complete HDF5 file", exc
        ) from exc
    with f:
        dsid = _open_dataset(f, name, expected)
        array = _check_dataset(dsid, name, expected, len(body))
        if array is None:
            array = h5py.Dataset(dsid)[()]
            _remember(key, dsid, body)
        return array


class _KnownLayout:
    """A body layout already decoded in full: one plain contiguous dataset at ``offset``.

    Another body of the same length whose every byte outside ``[offset, offset + nbytes)`` equals the
    first one's IS the same HDF5 file but for its voxels (HDF5 reads nothing from that range but voxels),
    so its array is read there directly, zero-copy, without opening it in HDF5 again.
    """

    __slots__ = ("offset", "nbytes", "head", "tail", "dtype", "shape")

    def __init__(self, body: bytes, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.offset, self.dtype, self.shape = offset, dtype, shape
        self.nbytes = math.prod(shape) * dtype.itemsize
        self.head = bytes(body[:offset])
        self.tail = bytes(body[offset + self.nbytes :])

    def view(self, body: bytes) -> np.ndarray | None:
        """The voxels of ``body`` (a read-only view), or None if its metadata differ in any byte."""
        data = memoryview(body)
        end = self.offset + self.nbytes
        if data[: self.offset] != self.head or data[end:] != self.tail:
            return None
        return np.frombuffer(
            body, self.dtype, count=self.nbytes // self.dtype.itemsize, offset=self.offset
        ).reshape(self.shape)


#: Body layouts decoded in full, by (body length, dataset, expected shape, expected dtype); bounded.
_KNOWN: dict[tuple, _KnownLayout] = {}


def _remember(key: tuple, dsid: h5d.DatasetID, body: bytes) -> None:
    """Remember the layout of a body just decoded in full, if it is one plain contiguous dataset."""
    dcpl = dsid.get_create_plist()
    if dcpl.get_layout() != h5d.CONTIGUOUS or dcpl.get_nfilters() or dcpl.get_external_count():
        return
    tid = dsid.get_type()
    dtype = tid.dtype
    offset = dsid.get_offset()
    shape = tuple(int(n) for n in dsid.get_space().shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if (
        offset is None
        or tid.get_class() == h5t.ENUM
        or not tid.equal(h5t.py_create(dtype))
        or dsid.get_storage_size() != nbytes
        or not 0 < offset <= len(body) - nbytes
    ):
        return
    if len(_KNOWN) >= 64:
        _KNOWN.clear()
    _KNOWN[key] = _KnownLayout(body, int(offset), dtype, shape)


def _open_dataset(f: h5py.File, name: str, expected: Expected) -> h5d.DatasetID:
    """Open ``name`` following hard links only, one path component at a time."""
    parts = [part for part in name.split("/") if part]
    if not parts:
        raise _invalid(expected, "no dataset to look for (the description's hdf5_dataset is empty)")
    loc = h5g.open(f.id, b"/")
    for depth, part in enumerate(parts):
        where = "/" + "/".join(parts[: depth + 1])
        key = part.encode("utf-8")
        if not loc.links.exists(key):
            found = _dataset_names(f)
            raise _invalid(expected, f"expected a dataset {name!r}, found no {where!r} (root: {found})")
        kind = loc.links.get_info(key).type
        if kind != h5l.TYPE_HARD:
            link = _LINK_KINDS.get(kind, f"a user-defined link (type {kind})")
            raise _invalid(expected, f"{where!r} on the way to the dataset {name!r} is {link}; {_OUTSIDE}")
        # h5o.open, not h5o.get_info: the latter also reads attribute and header details, and crashes
        # HDF5 on some corrupted object headers that open reports as errors.
        obj = h5o.open(loc, key)
        obj_type = h5i.get_type(obj)
        if depth == len(parts) - 1:
            if obj_type != h5i.DATASET:
                found = _dataset_names(f)
                raise _invalid(
                    expected, f"expected a dataset {name!r}, found a group or a named type (root: {found})"
                )
            return obj
        if obj_type != h5i.GROUP:
            raise _invalid(expected, f"expected a group at {where!r} on the way to {name!r}, found none")
        loc = obj
    raise AssertionError("unreachable")  # pragma: no cover


def _check_dataset(dsid: h5d.DatasetID, name: str, expected: Expected, body_len: int) -> np.ndarray | None:
    """Refuse anything that refers outside the body or inflates past the dataset (metadata first); return
    the dataset if the chunk checks already decoded it, else ``None`` (then HDF5 reads it)."""
    dcpl = dsid.get_create_plist()
    layout = dcpl.get_layout()
    # Checked before the dataspace: HDF5 opens the source files of some virtual datasets to learn it.
    if layout == h5d.VIRTUAL:
        raise _invalid(
            expected, f"dataset {name!r} is a virtual dataset, whose voxels live in other files; {_OUTSIDE}"
        )
    if dcpl.get_external_count():
        target = dcpl.get_external(0)[0]
        raise _invalid(
            expected,
            f"dataset {name!r} keeps its voxels in external raw storage (the file {target[:120]!r}); "
            f"{_OUTSIDE}",
        )
    if layout not in _HDF5_LAYOUTS:
        raise _invalid(expected, f"dataset {name!r} has an unknown storage layout ({layout})")
    filters = [dcpl.get_filter(i) for i in range(dcpl.get_nfilters())]
    codes = [int(code) for code, _flags, _values, _name in filters]
    for code in codes:
        if code not in _HDF5_FILTERS:
            label = f"{_HDF5_FILTER_NAMES[code]} ({code})" if code in _HDF5_FILTER_NAMES else f"number {code}"
            raise _invalid(
                expected,
                f"dataset {name!r} uses the HDF5 filter {label}; responses may use only the filters "
                f"deflate (gzip), shuffle and fletcher32, whose output size is checked before HDF5 runs them",
            )
    tid = dsid.get_type()
    itemsize = int(tid.get_size())
    if tid.get_class() not in _HDF5_TYPE_CLASSES or not 0 < itemsize <= 16:
        raise _invalid(
            expected,
            f"dataset {name!r} holds a non-numeric HDF5 type (class {tid.get_class()}, {itemsize} bytes); "
            f"expected {expected.dtype.name}",
        )
    dtype = tid.dtype
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise _invalid(expected, f"dataset {name!r} holds dtype {dtype}; expected {expected.dtype.name}")
    space = dsid.get_space()
    if space.get_simple_extent_type() != h5s.SIMPLE:
        raise _invalid(
            expected, f"dataset {name!r} is scalar or empty; expected shape {tuple(expected.shape)}"
        )
    shape = tuple(int(n) for n in space.shape)
    check_shape_dtype(shape, dtype, expected)
    if layout == h5d.CHUNKED:
        # Assembled here only if HDF5 would add nothing: no checksums to verify, no fill values, a
        # standard type (HDF5 would convert an odd one), and the shuffle element size of the type.
        plain = (
            tid.get_class() != h5t.ENUM
            and tid.equal(h5t.py_create(dtype))
            and h5z.FILTER_FLETCHER32 not in codes
            and all(
                tuple(values) == (itemsize,) for code, _f, values, _n in filters if code == h5z.FILTER_SHUFFLE
            )
        )
        return _check_chunks(dsid, dcpl, name, shape, dtype if plain else None, codes, expected, body_len)
    if layout == h5d.CONTIGUOUS and dsid.get_storage_size() > body_len:
        raise _invalid(expected, f"dataset {name!r} declares more storage than the body holds")
    return None


def _check_chunks(
    dsid: h5d.DatasetID,
    dcpl: h5py.h5p.PropDCID,
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype | None,
    codes: list[int],
    expected: Expected,
    body_len: int,
) -> np.ndarray | None:
    """Check the chunk shape and every stored chunk; with ``dtype`` (a plain type), also assemble them."""
    itemsize = int(dsid.get_type().get_size())
    chunk = tuple(int(c) for c in dcpl.get_chunk())
    if len(chunk) != len(shape) or any(not 0 < c <= s for c, s in zip(chunk, shape)):
        raise _invalid(
            expected,
            f"dataset {name!r} has chunk shape {chunk}, larger than its shape {shape} on some axis; a chunk "
            f"may not be larger than the dataset (refused before anything is inflated)",
        )
    chunk_nbytes = math.prod(chunk) * itemsize
    # Legitimate stored chunks are never larger than a chunk (HDF5 stores a chunk unfiltered when an
    # optional filter would grow it) plus checksums; the slack also covers a mandatory deflate.
    limit = chunk_nbytes + chunk_nbytes // 64 + 1024
    grid = math.prod(-(-s // c) for s, c in zip(shape, chunk))
    infos = _stored_chunks(dsid, grid, name, expected)
    offsets = {tuple(int(o) for o in info.chunk_offset) for info in infos}
    out = np.zeros(shape, dtype) if dtype is not None and len(offsets) == len(infos) == grid else None
    for info in infos:
        offset = tuple(int(o) for o in info.chunk_offset)
        if len(offset) != len(shape) or any(o % c or not 0 <= o < s for o, c, s in zip(offset, chunk, shape)):
            raise _invalid(expected, f"dataset {name!r} indexes a chunk at {offset}, off its chunk grid")
        if info.size > min(limit, body_len):
            raise _invalid(
                expected,
                f"dataset {name!r} stores the chunk at {offset} in {info.size} bytes, more than a chunk of "
                f"{chunk_nbytes} bytes can need (body: {body_len} bytes)",
            )
        active = [code for i, code in enumerate(codes) if not int(info.filter_mask) & (1 << i)]
        if h5z.FILTER_DEFLATE not in active:
            size = chunk_nbytes + 4 * active.count(h5z.FILTER_FLETCHER32)
            if info.size != size:
                raise _invalid(
                    expected,
                    f"dataset {name!r} stores the chunk at {offset} in {info.size} bytes; a chunk of shape "
                    f"{chunk} with filters {[_HDF5_FILTERS[code] for code in active]} has {size}",
                )
            if out is None:
                continue
        _, data = dsid.read_direct_chunk(offset)
        for code in reversed(active):  # undo the filters, last applied first, as HDF5 will
            if code == h5z.FILTER_FLETCHER32:
                if len(data) < 4:
                    raise _invalid(expected, f"dataset {name!r}: the chunk at {offset} lacks its checksum")
                data = data[:-4]
            elif code == h5z.FILTER_DEFLATE:
                data = _inflate_chunk(data, limit, offset, name, expected)
            elif out is not None and itemsize > 1:  # shuffle: byte k of every item was stored together
                data = np.frombuffer(data, np.uint8).reshape(itemsize, -1).T.tobytes()
        if len(data) != chunk_nbytes:
            raise _invalid(
                expected,
                f"dataset {name!r}: the chunk at {offset} inflates to {len(data)} bytes, but a chunk of "
                f"shape {chunk} holds {chunk_nbytes}",
            )
        if out is not None:
            region = tuple(slice(o, min(o + c, s)) for o, c, s in zip(offset, chunk, shape))
            block = np.frombuffer(data, dtype).reshape(chunk)
            out[region] = block[tuple(slice(0, r.stop - r.start) for r in region)]
    return out


def _stored_chunks(dsid: h5d.DatasetID, grid: int, name: str, expected: Expected) -> list:
    """The chunk index entries (at most ``grid`` of them, else refused)."""
    infos: list = []

    def visit(info: object) -> int | None:
        infos.append(info)
        return 1 if len(infos) > grid else None  # stop early: an index longer than the grid is a lie

    if hasattr(dsid, "chunk_iter"):
        dsid.chunk_iter(visit)
    else:  # pragma: no cover - h5py built against HDF5 < 1.13
        for index in range(min(int(dsid.get_num_chunks()), grid + 1)):
            visit(dsid.get_chunk_info(index))
    if len(infos) > grid:
        raise _invalid(expected, f"dataset {name!r} indexes more chunks than its {grid} chunk(s) can be")
    return infos


def _inflate_chunk(data: bytes, limit: int, offset: tuple[int, ...], name: str, expected: Expected) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise _invalid(
            expected, f"dataset {name!r}: the chunk at {offset} is not a deflate stream", exc
        ) from exc
    if len(out) > limit:
        raise _invalid(
            expected,
            f"dataset {name!r}: the chunk at {offset} inflates to more than {limit} bytes, more than a chunk "
            f"can hold; refusing it",
        )
    if not inflater.eof:
        raise _invalid(
            expected, f"dataset {name!r}: the deflate stream of the chunk at {offset} is truncated"
        )
    return out


def _dataset_names(f: h5py.File, limit: int = 20) -> list[str]:
    """Up to ``limit`` names at the body's root (for error messages; best effort).

    Only the root group's own links are listed: walking the whole file (``H5Ovisit``) loops forever on
    some corrupted bodies, and an error message must not hang.
    """
    names: list[str] = []

    def visit(name: bytes) -> int | None:
        names.append("/" + name.decode("utf-8", "replace"))
        return 1 if len(names) >= limit else None

    try:
        root = h5g.open(f.id, b"/")  # kept in a name: a LinkProxy does not keep its group open
        root.links.iterate(visit)
    except Exception:  # noqa: BLE001 - a broken root only means there is nothing to list
        logger.debug("cannot list the root of a response body", exc_info=True)
    return names


def encode_hdf5(data: np.ndarray, dataset: str = "/data", compression: Any = None) -> bytes:
    """An in-memory HDF5 file holding ``data`` as ``dataset`` (h5py ``compression``, if any)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset(dataset, data=data, compression=compression)
    return buffer.getvalue()


def body_limit(nbytes: int) -> int:
    """HDF5 bodies may be 4x the array (headers and the chunk index of small chunks) plus 1 MiB."""
    return 4 * int(nbytes) + (1 << 20)


CODEC = Codec("hdf5", decode_hdf5, encode_hdf5, body_limit)
