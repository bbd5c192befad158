"""Response decoders: turn a response body into a validated numpy array.

A decoder is a plain function ``decode(body, expected) -> numpy.ndarray`` registered under the remote
description's ``format`` name. It only has to get *an* array out of the body (or raise
:class:`~lazyflow_rbfs.errors.InvalidResponseError`); :func:`decode` then checks the shape and dtype the
same way for every format, so a new wire format is one small function plus one :func:`register_decoder`
call.

A response is data, never instructions. Every decoder checks what a body *declares* (dataset layout,
links, filters, chunk shapes, .npy headers, blosc headers, image sizes) against the expected block before
it inflates or allocates anything, so no body can make the client read a local file or allocate much more
than the block it stands for. Whatever else goes wrong while parsing hostile bytes (``OverflowError`` from
h5py, ``struct.error``, a tokenizer error in a .npy header, Pillow's ``DecompressionBombError``, ...) is
turned into an :class:`~lazyflow_rbfs.errors.InvalidResponseError` naming the URL in one place,
:func:`_guarded`, which wraps every decoder.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import h5py
import numpy as np
from h5py import h5d, h5g, h5i, h5l, h5o, h5s, h5t, h5z

from lazyflow_rbfs.errors import DescriptionError, InvalidResponseError, RbfsError

__all__ = [
    "Expected",
    "Decoder",
    "register_decoder",
    "get_decoder",
    "decode",
    "validate_array",
    "max_body_bytes",
    "decode_hdf5",
    "decode_npy_zlib",
    "decode_blosc",
    "decode_precomputed_raw",
    "decode_precomputed_jpeg",
    "blosc_decompressor",
    "jpeg_available",
    "MissingCodecError",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Expected:
    """What a response must contain.

    Attributes
    ----------
    url:
        The request's URL (for error messages only).
    shape:
        The requested roi's shape.
    dtype:
        The description's dtype; a body of another dtype is accepted only if it casts safely to it.
    dataset:
        The dataset/key name inside the body, for formats that have one (``hdf5_dataset``).
    """

    url: str
    shape: tuple[int, ...]
    dtype: np.dtype
    dataset: str | None = None


Decoder = Callable[[bytes, Expected], np.ndarray]

_DECODERS: dict[str, Decoder] = {}


def register_decoder(fmt: str, decoder: Decoder) -> None:
    """Make ``decoder`` responsible for remote descriptions whose ``format`` is ``fmt``."""
    _DECODERS[fmt] = decoder


def get_decoder(fmt: str) -> Decoder:
    """The decoder for ``fmt``; a :class:`DescriptionError` on field ``format`` if there is none."""
    try:
        return _DECODERS[fmt]
    except KeyError:
        raise DescriptionError(
            f"remote format {fmt!r} is not supported; expected one of {sorted(_DECODERS)}", field="format"
        ) from None


def decode(fmt: str, body: bytes, expected: Expected) -> np.ndarray:
    """Decode ``body`` with the decoder of ``fmt`` and validate the result against ``expected``.

    Raises
    ------
    InvalidResponseError
        The body is not a cutout of ``expected`` (for a decoder registered by a user too: any exception
        it raises on a malformed body becomes one).
    """
    decoder = _guarded(f"{fmt} cutout")(get_decoder(fmt))
    return validate_array(decoder(body, expected), expected)


def max_body_bytes(fmt: str, nbytes: int) -> int:
    """The largest response body accepted for a cutout of ``nbytes`` raw bytes in ``fmt``.

    Callers pass it to :meth:`HttpClient.get` as ``max_bytes`` (checked against ``Content-Length`` and
    while reading, after any ``Content-Encoding`` is undone). Generous enough for incompressible data:
    ``raw`` precomputed chunks must hold exactly ``nbytes`` (the slack covers a gzip ``Content-Length``);
    HDF5 bodies may be 4x the array (headers and the chunk index of small chunks), every other format 2x;
    each plus 1 MiB (64 KiB for ``raw``) of headers.
    """
    nbytes = int(nbytes)
    if fmt == "raw":
        return nbytes + nbytes // 64 + (64 << 10)
    if fmt == "hdf5":
        return 4 * nbytes + (1 << 20)
    return 2 * nbytes + (1 << 20)


def _guarded(what: str) -> Callable[[Decoder], Decoder]:
    """Make a decoder raise only :class:`InvalidResponseError` on a malformed body (the one place where
    errors from parsing hostile bytes are translated).

    Errors of this package and a missing optional codec pass through unchanged; every other ``Exception``
    (``MemoryError`` included) becomes an ``InvalidResponseError`` naming the URL, with the original
    chained. ``KeyboardInterrupt`` and ``SystemExit`` are never caught.
    """

    def wrap(decoder: Decoder) -> Decoder:
        if getattr(decoder, "_rbfs_guarded", False):
            return decoder

        @functools.wraps(decoder)
        def guarded(body: bytes, expected: Expected) -> np.ndarray:
            try:
                return decoder(body, expected)
            except (RbfsError, MissingCodecError):
                raise
            except Exception as exc:  # noqa: BLE001 - hostile bytes reach C parsers with many error types
                logger.debug("decoding %s as a %s failed", expected.url, what, exc_info=True)
                detail = f"{type(exc).__name__}: {exc}"
                raise InvalidResponseError(
                    f"response from {expected.url} is not a usable {what}: the body ({len(body)} bytes, "
                    f"beginning {bytes(body[:16])!r}) is malformed ({detail[:300]})",
                    url=expected.url,
                    status=200,
                ) from exc

        guarded._rbfs_guarded = True  # type: ignore[attr-defined]
        return guarded

    return wrap


def validate_array(array: np.ndarray, expected: Expected) -> np.ndarray:
    """Check shape and dtype; return the array in the expected (native) dtype.

    Raises
    ------
    InvalidResponseError
        The shape differs from the requested one, or the dtype does not cast safely to the expected one.
    """
    _check_shape_dtype(array.shape, array.dtype, expected)
    if array.dtype != expected.dtype:
        array = array.astype(expected.dtype)
    return array


def _check_shape_dtype(shape: tuple[int, ...], dtype: np.dtype, expected: Expected) -> None:
    if tuple(int(s) for s in shape) != tuple(expected.shape):
        raise InvalidResponseError(
            f"response from {expected.url} holds an array of shape {tuple(int(s) for s in shape)}, "
            f"but the request asked for shape {tuple(expected.shape)}; the server does not serve the "
            f"requested region (check the description's axes, origin_offset and url_format)",
            url=expected.url,
            status=200,
        )
    if not np.can_cast(dtype, expected.dtype, "safe"):
        raise InvalidResponseError(
            f"response from {expected.url} holds dtype {np.dtype(dtype).name}, which does not convert "
            f"safely to the description's dtype {expected.dtype.name}; fix the description's dtype",
            url=expected.url,
            status=200,
        )


def _invalid(expected: Expected, what: str, exc: BaseException | None = None) -> InvalidResponseError:
    detail = f" ({exc})" if exc is not None else ""
    return InvalidResponseError(
        f"response from {expected.url} is not a usable HDF5 cutout: {what}{detail}",
        url=expected.url,
        status=200,
    )


def _normalize(name: str) -> str:
    return "/" + name.strip("/")


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


@_guarded("HDF5 cutout")
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
    """
    name = _normalize(expected.dataset or "")
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
        return h5py.Dataset(dsid)[()] if array is None else array


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
    _check_shape_dtype(shape, dtype, expected)
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


register_decoder("hdf5", decode_hdf5)


# ---------------------------------------------------------------------------------------------------------
# zlib-compressed .npy ("npz" of openconnecto.me/ndstore, "application/npygz" of BossDB)

_NPY_MAGIC = b"\x93NUMPY"


def _unzlib(body: bytes, limit: int, expected: Expected, what: str) -> bytes:
    """zlib-decompress at most ``limit`` bytes (a compression bomb is refused, not inflated)."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidResponseError(
            f"response from {expected.url} is not a usable {what}: the body ({len(body)} bytes, beginning "
            f"{body[:20]!r}) is not zlib-compressed ({exc})",
            url=expected.url,
            status=200,
        ) from exc
    if len(data) > limit:
        raise InvalidResponseError(
            f"response from {expected.url} inflates to more than {limit} bytes, more than a {what} of shape "
            f"{tuple(expected.shape)} can hold; refusing it",
            url=expected.url,
            status=200,
        )
    if not inflater.eof:
        raise InvalidResponseError(
            f"response from {expected.url} is not a usable {what}: the zlib stream is truncated",
            url=expected.url,
            status=200,
        )
    return data


#: Room for the .npy header in an inflated body (numpy refuses headers above 10,000 bytes by default).
_NPY_HEADER_ROOM = 1 << 16


@_guarded("zlib-compressed .npy cutout")
def decode_npy_zlib(body: bytes, expected: Expected) -> np.ndarray:
    """Decode a zlib-compressed ``.npy`` file (formats ``npz`` and ``npygz``); never unpickles.

    The body is inflated with a limit (the expected block plus room for the header), then the ``.npy``
    header is parsed and its dtype and shape checked against the expected block before the array is
    made, as a view of the inflated bytes, which must hold exactly the declared data: a header cannot make
    the client allocate anything. Leading axes of length 1 beyond the expected number of axes are dropped
    (ndstore and cloud-volume add a channel axis of 1). A zip archive (``numpy.savez``) is not a cutout and
    is refused before anything is inflated.
    """
    what = "zlib-compressed .npy cutout"
    size = math.prod(int(n) for n in expected.shape)
    data = _unzlib(body, size * expected.dtype.itemsize + _NPY_HEADER_ROOM, expected, what)
    if not data.startswith(_NPY_MAGIC):
        raise InvalidResponseError(
            f"response from {expected.url} is not a usable {what}: the inflated body begins {data[:20]!r}, "
            f"not the .npy magic {_NPY_MAGIC!r}",
            url=expected.url,
            status=200,
        )
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise InvalidResponseError(
            f"response from {expected.url} is a .npy file of format version {version}; expected version "
            f"1.0 or 2.0 (numeric arrays)",
            url=expected.url,
            status=200,
        )
    shape = tuple(int(n) for n in shape)
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufc":
        raise InvalidResponseError(
            f"response from {expected.url} holds a non-numeric .npy array (dtype {dtype}); expected "
            f"{expected.dtype.name} (object arrays are never accepted)",
            url=expected.url,
            status=200,
        )
    squeezed = shape
    while len(squeezed) > len(expected.shape) and squeezed[0] == 1:
        squeezed = squeezed[1:]
    _check_shape_dtype(squeezed, dtype, expected)
    offset = stream.tell()
    nbytes = math.prod(squeezed) * dtype.itemsize
    if len(data) - offset != nbytes:
        raise InvalidResponseError(
            f"response from {expected.url} is a .npy file of shape {shape} and dtype {dtype} ({nbytes} "
            f"bytes), but holds {len(data) - offset} bytes of data",
            url=expected.url,
            status=200,
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(squeezed), offset=offset)
    # A writable C-order copy, as numpy.load gave before: the block's size, checked above.
    return array.reshape(squeezed, order="F" if fortran_order else "C").copy(order="C")


register_decoder("npz", decode_npy_zlib)
register_decoder("npygz", decode_npy_zlib)


# ---------------------------------------------------------------------------------------------------------
# Optional codecs: blosc (BossDB "application/blosc") and JPEG (neuroglancer precomputed)


class MissingCodecError(ImportError):
    """Internal: an optional codec package is not installed (turned into a package error by callers)."""


def blosc_decompressor() -> Callable[[bytes], bytes]:
    """The ``decompress`` of ``blosc`` (python-blosc) or, failing that, of ``blosc2``; both read Boss bodies.

    Raises
    ------
    MissingCodecError
        Neither package is installed.
    """
    try:
        import blosc  # type: ignore[import-not-found]

        return blosc.decompress
    except ImportError:
        pass
    try:
        import blosc2  # type: ignore[import-not-found]

        return blosc2.decompress
    except ImportError:
        raise MissingCodecError(
            "decoding BossDB 'application/blosc' bodies needs the package 'blosc' "
            "(pip install 'lazyflow-rbfs[boss]' or pip install blosc)"
        ) from None


def jpeg_available() -> bool:
    """True if Pillow (needed for precomputed ``jpeg`` chunks) is installed."""
    try:
        import PIL.Image  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


_BLOSC_HEADER = 16


@_guarded("blosc body")
def decode_blosc(body: bytes, expected: Expected) -> np.ndarray:
    """Decode a blosc-compressed C-order array of ``expected.shape`` and ``expected.dtype`` (BossDB).

    The blosc header (version, versionlz, flags, typesize, then little-endian nbytes, blocksize, cbytes)
    is checked before anything is decompressed: ``nbytes`` must be the expected block's size, ``cbytes``
    the body's length, and ``typesize`` the expected item size, in bytes or (as the Boss passes it) in
    bits, so a body of another item size with the same byte count is refused. The body is raw bytes,
    never a pickle (``application/blosc-python`` is not accepted anywhere).
    """
    dtype = expected.dtype.newbyteorder("<")
    nbytes = math.prod(int(n) for n in expected.shape) * dtype.itemsize
    if len(body) < _BLOSC_HEADER:
        raise InvalidResponseError(
            f"response from {expected.url} is not a blosc body: {len(body)} bytes, shorter than a "
            f"blosc header",
            url=expected.url,
            status=200,
        )
    typesize = body[3]
    announced, _blocksize, cbytes = struct.unpack_from("<III", body, 4)
    if announced != nbytes:
        raise InvalidResponseError(
            f"response from {expected.url} is a blosc body of {announced} uncompressed bytes, but a "
            f"cutout of "
            f"shape {tuple(expected.shape)} and dtype {expected.dtype.name} has {nbytes} bytes (wrong region "
            f"or dtype; check the description's dtype and bounds, or the body is not blosc)",
            url=expected.url,
            status=200,
        )
    typesizes = (dtype.itemsize, min(255, 8 * dtype.itemsize))
    if typesize not in typesizes:
        raise InvalidResponseError(
            f"response from {expected.url} is a blosc body of typesize {typesize}, but the description's "
            f"dtype {expected.dtype.name} has items of {dtype.itemsize} bytes (typesize {typesizes[0]}, or "
            f"{typesizes[1]} as the Boss writes it); the server holds another dtype: check the "
            f"description's dtype",
            url=expected.url,
            status=200,
        )
    if cbytes != len(body):
        raise InvalidResponseError(
            f"response from {expected.url} is a blosc body whose header announces {cbytes} compressed "
            f"bytes, but {len(body)} bytes arrived",
            url=expected.url,
            status=200,
        )
    decompress = blosc_decompressor()
    try:
        raw = decompress(body)
    except Exception as exc:  # noqa: BLE001 - blosc raises plain Exception/RuntimeError/ValueError subtypes
        raise InvalidResponseError(
            f"response from {expected.url} is not a usable blosc body ({type(exc).__name__}: {exc})",
            url=expected.url,
            status=200,
        ) from exc
    if len(raw) != nbytes:
        raise InvalidResponseError(
            f"response from {expected.url} decompressed to {len(raw)} bytes, expected {nbytes}",
            url=expected.url,
            status=200,
        )
    return np.frombuffer(raw, dtype=dtype).reshape(expected.shape).astype(expected.dtype, copy=False)


@_guarded("precomputed raw chunk")
def decode_precomputed_raw(body: bytes, expected: Expected) -> np.ndarray:
    """Decode a precomputed ``raw`` chunk: little-endian x,y,z,c in Fortran order, i.e. C-order (c,z,y,x).

    ``expected.shape`` is the chunk's ``(c, z, y, x)`` (edge chunks are cut short).
    """
    dtype = expected.dtype.newbyteorder("<")
    nbytes = math.prod(int(n) for n in expected.shape) * dtype.itemsize
    if len(body) != nbytes:
        raise InvalidResponseError(
            f"precomputed chunk {expected.url} has {len(body)} bytes, but a raw chunk of shape (c,z,y,x) "
            f"{tuple(expected.shape)} and dtype {expected.dtype.name} has {nbytes} bytes (wrong info file, "
            f"or an encoding other than raw)",
            url=expected.url,
            status=200,
        )
    return np.frombuffer(body, dtype=dtype).reshape(expected.shape).astype(expected.dtype, copy=False)


@_guarded("precomputed jpeg chunk")
def decode_precomputed_jpeg(body: bytes, expected: Expected) -> np.ndarray:
    """Decode a precomputed ``jpeg`` chunk: an image x wide and y*z high, 1 (L) or 3 (RGB) channels.

    ``expected.shape`` is the chunk's ``(c, z, y, x)``; ``expected.dtype`` must be ``uint8``. Only Pillow's
    JPEG parser sees the body, and the image size its header declares is checked before any pixel is
    decoded (Pillow's ``open`` is lazy).

    Raises
    ------
    MissingCodecError
        Pillow is not installed.
    InvalidResponseError
        Not a JPEG of the expected size and channel count.
    """
    try:
        from PIL import Image, UnidentifiedImageError  # type: ignore[import-not-found]
    except ImportError:
        raise MissingCodecError(
            "decoding precomputed 'jpeg' chunks needs Pillow (pip install 'lazyflow-rbfs[precomputed]' or "
            "pip install pillow)"
        ) from None
    c, z, y, x = (int(n) for n in expected.shape)
    mode = {1: "L", 3: "RGB"}.get(c)
    try:
        with Image.open(io.BytesIO(body), formats=("JPEG",)) as image:
            if image.format != "JPEG" or image.size != (x, y * z) or mode is None:
                raise InvalidResponseError(
                    f"precomputed chunk {expected.url} is a {image.format} image of size {image.size} "
                    f"and mode "
                    f"{image.mode}; expected a JPEG of size {(x, y * z)} (x by y*z) with {c} channel(s)",
                    url=expected.url,
                    status=200,
                )
            if image.mode != mode:
                image = image.convert(mode)
            pixels = np.asarray(image, dtype=np.uint8)
    except InvalidResponseError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidResponseError(
            f"precomputed chunk {expected.url} is not a decodable JPEG ({type(exc).__name__}: {exc})",
            url=expected.url,
            status=200,
        ) from exc
    # Rows are (z, y) with y fastest; columns x; then the colour channels.
    return np.ascontiguousarray(pixels.reshape(z, y, x, c).transpose(3, 0, 1, 2))
