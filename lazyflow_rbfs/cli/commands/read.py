"""``rbfs read`` (a roi into an ``.h5`` or ``.npy`` file) and ``rbfs export`` (upstream formats)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from lazyflow_rbfs import atomic, geometry
from lazyflow_rbfs.cli.args import (
    AddCommand,
    add_description_arg,
    add_network_options,
    add_progress_options,
    add_roi_option,
    format_roi,
    resolve_roi,
)
from lazyflow_rbfs.cli.exits import EXIT_OK, Failure, UsageError
from lazyflow_rbfs.cli.opening import open_fileset
from lazyflow_rbfs.cli.progress import open_bar, transfer_line
from lazyflow_rbfs.cli.text import fmt_bytes, fmt_shape
from lazyflow_rbfs.errors import CacheWriteError

__all__ = ["add_read", "add_export", "READ_SLAB_BYTES", "output_chunks", "OUTPUT_CHUNK_EDGE"]

#: Edge of the chunks of a compressed (or ``--add``-ed) HDF5 output on its last three axes (1 on others).
OUTPUT_CHUNK_EDGE = 64

_H5_EXTENSIONS = (".h5", ".hdf5", ".hdf")

#: Upper bound of voxel bytes ``rbfs read`` holds in memory at once (it writes slab by slab).
READ_SLAB_BYTES = 256 * 1024 * 1024


def add_read(command: AddCommand) -> None:
    p = command("read", "Read a roi through the cache into an .h5 or .npy file (written atomically).")
    add_description_arg(p)
    add_roi_option(p, required=True, what="required; ':' per axis for everything")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file, .h5/.hdf5 or .npy")
    p.add_argument("--dataset", metavar="NAME", help="dataset name inside an .h5 output (default 'data')")
    p.add_argument(
        "--add",
        action="store_true",
        help="add the dataset to an existing .h5 file, keeping its other datasets (a dataset of the same "
        "name is replaced); the file is replaced atomically by an updated copy. Without --add, an "
        "existing .h5 holding other datasets is refused",
    )
    p.add_argument(
        "--compression",
        choices=("gzip", "lzf"),
        help=f"compress an .h5 output, in chunks of up to {OUTPUT_CHUNK_EDGE} voxels per axis (default: "
        "uncompressed and contiguous)",
    )
    add_network_options(p)
    add_progress_options(p)
    p.set_defaults(func=_cmd_read)


def add_export(command: AddCommand) -> None:
    p = command("export", "Export a roi in an upstream format: one HDF5 file, or a blockwise subset fileset.")
    add_description_arg(p)
    add_roi_option(p, required=True, what="required")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="single-hdf5: the output file (.h5/.hdf5; an existing directory is still accepted: the file "
        "is then named after the roi, as upstream's exportRoiToHdf5 does); blockwise-subset: the "
        "directory to export into",
    )
    p.add_argument(
        "--format",
        choices=("single-hdf5", "blockwise-subset"),
        default="single-hdf5",
        help="single-hdf5: one HDF5 file as upstream's exportRoiToHdf5 writes it; blockwise-subset: a "
        "self-contained blockwise fileset (exportSubset) (default single-hdf5)",
    )
    add_network_options(p)
    add_progress_options(p)
    p.set_defaults(func=_cmd_export)


def _slabs(start: np.ndarray, stop: np.ndarray, block_size: int, max_rows: int) -> Iterator[tuple]:
    """Split ``(start, stop)`` along axis 0 into slabs that end on block boundaries (multiples of
    ``block_size``) or at ``stop``, each at most ``max_rows`` thick unless a single block row is thicker."""
    z = int(start[0])
    end = int(stop[0])
    while z < end:
        z_end = min(end, (z // block_size + 1) * block_size)
        while z_end < end and min(end, z_end + block_size) - z <= max_rows:
            z_end = min(end, z_end + block_size)
        s, e = start.copy(), stop.copy()
        s[0], e[0] = z, z_end
        yield s, e
        z = z_end


def output_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunks of a chunked HDF5 output of ``shape``: up to :data:`OUTPUT_CHUNK_EDGE` on the last three
    axes, 1 on the others (time, channels...), never larger than the shape."""
    n = len(shape)
    return tuple(max(1, min(int(s), OUTPUT_CHUNK_EDGE if i >= n - 3 else 1)) for i, s in enumerate(shape))


def _h5_datasets(path: str) -> list[str] | None:
    """The datasets in the HDF5 file ``path``, or ``None`` if it is not an HDF5 file."""
    import h5py

    names: list[str] = []
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
    except OSError:
        return None
    return names


def _check_h5_target(out: str, dataset: str, add: bool) -> None:
    """Refuse to drop datasets of an existing ``out`` that the user did not ask to replace."""
    if not os.path.exists(out):
        if add:
            raise UsageError(f"--add adds to an existing .h5 file; {out!r} does not exist (leave --add out)")
        return
    if os.path.isdir(out):
        raise UsageError(f"expected an output file, found the directory {out!r}")
    names = _h5_datasets(out)
    if names is None:
        if add:
            raise UsageError(f"--add needs an HDF5 file, but {out!r} is not one")
        return  # not HDF5: replaced as a whole, like any output file
    others = [n for n in names if n.strip("/") != dataset.strip("/")]
    if others and not add:
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise UsageError(
            f"{out} already holds other datasets ({shown}) that writing it would delete: pass --add to add "
            f"{dataset!r} to the file and keep them, or choose another output file"
        )


def _cmd_read(args: argparse.Namespace) -> int:
    out = args.output
    ext = os.path.splitext(out)[1].lower()
    if ext not in (*_H5_EXTENSIONS, ".npy"):
        raise UsageError(f"expected an output file ending in .h5, .hdf5 or .npy, found {out!r}")
    if ext == ".npy" and (args.dataset or args.add or args.compression):
        raise UsageError("--dataset, --add and --compression apply to HDF5 outputs only, not to .npy")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"output directory {out_dir!r} does not exist")
    dataset = args.dataset or "data"
    if ext != ".npy":
        _check_h5_target(out, dataset, args.add)
    opened, fs = open_fileset(args)
    with contextlib.closing(fs):
        desc = fs.description
        start, stop = resolve_roi(args.roi, desc.view_shape, desc.axes)
        shape = tuple(int(n) for n in stop - start)
        dtype = np.dtype(desc.dtype)
        plane_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        slabs = list(_slabs(start, stop, int(desc.block_shape[0]), READ_SLAB_BYTES // max(plane_bytes, 1)))
        t0 = time.monotonic()
        with open_bar(args, fs, geometry.count_blocks(start, stop, desc.block_shape)) as bar:
            read_slab = _slab_reader(fs, opened.kind == "composite", bar, out)
            target = _Target(out, ext, dataset, args.add, args.compression)
            _write_output(target, read_slab, slabs, start, stop, dtype, str(desc.axes))
        seconds = time.monotonic() - t0
        nbytes = int(np.prod(shape)) * dtype.itemsize
        where = out if ext == ".npy" else f"{out}/{dataset}"
        print(
            f"wrote {fmt_shape(shape)} {dtype.name} ({fmt_bytes(nbytes)}) "
            f"of roi {format_roi(start, stop)} to {where}"
        )
        if opened.kind == "composite":
            print(f"{fs.blocks_downloaded} blocks downloaded in {seconds:.1f} s")
            print(transfer_line(fs.remote.stats, seconds))
    return EXIT_OK


def _slab_reader(fs: Any, composite: bool, bar: Any, out: str) -> Any:
    """``read(start, stop) -> array`` for one slab: its missing blocks are downloaded first (counted on
    ``bar``, failures and speed shown), then the slab is read from the cache."""
    block_shape = fs.description.block_shape

    def read(s: np.ndarray, e: np.ndarray) -> np.ndarray:
        if composite:
            report = fs.downloadAllBlocks(roi=(s, e), progress=bar, raise_on_failure=False)
            if report.failed:
                first = report.failed[0]
                raise Failure(
                    f"{len(report.failed)} of {report.total} blocks of rows {int(s[0])}:{int(e[0])} failed "
                    f"to download; first: block {list(first)}: {report.errors.get(first, '?')}; "
                    f"{out} was not written (blocks already downloaded stay cached)"
                )
        elif bar:
            n = geometry.count_blocks(s, e, block_shape)
            bar.section(n)(n)
        return fs.readData((s, e))

    return read


@dataclasses.dataclass(frozen=True)
class _Target:
    """Where ``rbfs read`` writes: the file, its kind, and for HDF5 the dataset and how."""

    path: str
    ext: str
    dataset: str
    add: bool = False
    compression: str | None = None


def _write_output(
    target: _Target,
    read_slab: Any,
    slabs: list[tuple[np.ndarray, np.ndarray]],
    start: np.ndarray,
    stop: np.ndarray,
    dtype: np.dtype,
    axes: str,
) -> None:
    """Write the roi to ``target`` (.npy or HDF5), slab by slab along axis 0, atomically.

    A new .npy or an uncompressed HDF5 file with one contiguous dataset: the layout (the .npy header, or
    the HDF5 metadata) is built in memory first, so the file's size is known and reserved up front (a
    full disk fails before any download); the slabs are written at their offsets with checked writes.
    Compressed or ``--add``: HDF5 writes a chunked dataset into a temp file (for ``--add`` a copy of the
    existing file). Either way the temp file replaces ``target`` only when complete: nothing is left
    behind, and nothing of an existing file is lost, on failure.
    """
    from lazyflow_rbfs import h5image

    shape = tuple(int(n) for n in stop - start)
    attrs = {"axes": axes, "roi_start": start, "roi_stop": stop}
    if target.ext != ".npy" and (target.add or target.compression):
        _write_h5_chunked(target, read_slab, slabs, start, shape, dtype, attrs)
        return
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    if target.ext == ".npy":
        header = io.BytesIO()
        fields = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        try:
            np.lib.format.write_array_header_1_0(header, fields)
        except ValueError:  # a header too large for format 1.0
            header = io.BytesIO()
            np.lib.format.write_array_header_2_0(header, fields)
        skeleton = [(0, header.getvalue())]
        data_offset = len(header.getvalue())
        size = data_offset + row_bytes * shape[0]
    else:
        image, data_offset = h5image.contiguous_skeleton(target.dataset, shape, dtype, attrs)
        skeleton = list(image.pages())
        size = image.size

    def fill(fd: int) -> None:
        for offset, data in skeleton:
            atomic.pwrite_all(fd, data, offset)
        for s, e in slabs:
            data = np.ascontiguousarray(read_slab(s, e), dtype=dtype)
            atomic.pwrite_all(fd, data, data_offset + int(s[0] - start[0]) * row_bytes)

    atomic.write_file(target.path, fill, reserve=size, keep_mode=True)


def _write_h5_chunked(
    target: _Target,
    read_slab: Any,
    slabs: list[tuple[np.ndarray, np.ndarray]],
    start: np.ndarray,
    shape: tuple[int, ...],
    dtype: np.dtype,
    attrs: dict[str, Any],
) -> None:
    """HDF5 output with a chunked (optionally compressed) dataset, into a new file or a copy of the old."""
    import h5py

    def fill(fd: int) -> None:
        with open(fd, "r+b", closefd=False) as handle:
            if target.add:
                with open(target.path, "rb") as old:
                    shutil.copyfileobj(old, handle, 1 << 20)
                handle.flush()
                handle.seek(0)
            with h5py.File(handle, "a" if target.add else "w") as f:
                if target.dataset in f:
                    del f[target.dataset]
                dset = f.create_dataset(
                    target.dataset,
                    shape=shape,
                    dtype=dtype,
                    chunks=output_chunks(shape),
                    compression=target.compression,
                )
                for key, value in attrs.items():
                    dset.attrs[key] = value
                for s, e in slabs:
                    rows = slice(int(s[0] - start[0]), int(e[0] - start[0]))
                    dset[rows] = read_slab(s, e)

    atomic.write_file(target.path, fill, keep_mode=True)


def _export_file_target(out: str) -> tuple[str, str | None]:
    """``export --format single-hdf5 -o OUT``: ``(directory to export into, file to move it to or None)``.

    An existing directory (or a path without an HDF5 extension) is the upstream form: the file is named
    after the roi inside it. Anything else is the output file itself.
    """
    if os.path.isdir(out) or os.path.splitext(out)[1].lower() not in _H5_EXTENSIONS:
        return out, None
    return os.path.dirname(os.path.abspath(out)), out


def _cmd_export(args: argparse.Namespace) -> int:
    out = args.output
    single = args.format == "single-hdf5"
    out_dir, out_file = _export_file_target(out) if single else (out, None)
    if out_file is None and os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"expected an output directory, found the file {out_dir!r}")
    if out_file is not None and not os.path.isdir(out_dir):
        raise UsageError(f"output directory {out_dir!r} does not exist")
    opened, fs = open_fileset(args)
    with contextlib.closing(fs):
        desc = fs.description
        start, stop = resolve_roi(args.roi, desc.view_shape, desc.axes)
        if not single:
            bs = np.asarray(desc.block_shape, dtype=np.int64)
            if (start % bs).any() or ((stop % bs != 0) & (stop != np.asarray(desc.view_shape))).any():
                raise UsageError(
                    f"--format blockwise-subset needs a roi on block boundaries (block shape "
                    f"{fmt_shape(bs)}), found {format_roi(start, stop)}"
                )
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as exc:
            raise CacheWriteError.from_os_error(exc, out_dir, "create the output directory") from exc
        t0 = time.monotonic()
        if opened.kind == "composite":
            # Download the roi's blocks first, with a progress bar; the export then reads the cache.
            with open_bar(args, fs, geometry.count_blocks(start, stop, desc.block_shape)) as bar:
                report = fs.downloadAllBlocks(roi=(start, stop), progress=bar, raise_on_failure=False)
            if report.failed:
                first = report.failed[0]
                raise Failure(
                    f"{len(report.failed)} of {report.total} blocks failed to download; first: block "
                    f"{list(first)}: {report.errors.get(first, '?')}; nothing was exported (blocks already "
                    "downloaded stay cached)"
                )
        if single:
            result = _export_single(fs, (start, stop), out_dir, out_file)
        else:
            result = fs.exportSubset((start, stop), out_dir)
        seconds = time.monotonic() - t0
        print(f"exported roi {format_roi(start, stop)} ({args.format}) to {os.fspath(result)}")
        if single and out_file is None:
            print(
                f"note: {out} is a directory, so the file was named after the roi; give -o a file path "
                "(OUT.h5) to choose its name",
                file=sys.stderr,
            )
        if opened.kind == "composite":
            print(transfer_line(fs.remote.stats, seconds))
    return EXIT_OK


def _export_single(fs: Any, roi: tuple[np.ndarray, np.ndarray], out_dir: str, out_file: str | None) -> str:
    """exportRoiToHdf5 into ``out_dir``; with ``out_file``, through a private temp directory beside it
    whose file then atomically replaces ``out_file``. Returns the dataset path written."""
    if out_file is None:
        return fs.exportRoiToHdf5(roi, out_dir)
    try:
        scratch = tempfile.mkdtemp(prefix=".rbfs-export-", dir=out_dir)
    except OSError as exc:
        raise CacheWriteError.from_os_error(exc, out_dir, "create a temporary directory") from exc
    try:
        written = fs.exportRoiToHdf5(roi, scratch)
        produced = next(
            os.path.join(d, name)
            for d, _, names in os.walk(scratch)
            for name in names
            if written.startswith(os.path.join(d, name))
        )
        internal = written[len(produced) :]
        try:
            os.replace(produced, out_file)
        except OSError as exc:
            raise CacheWriteError.from_os_error(exc, out_file, "move the exported file into place") from exc
        return out_file + internal
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
