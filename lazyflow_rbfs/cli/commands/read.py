"""``rbfs read`` (a roi into an ``.h5`` or ``.npy`` file) and ``rbfs export`` (upstream formats)."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from lazyflow_rbfs import atomic
from lazyflow_rbfs.cli.args import (
    AddCommand,
    add_description_arg,
    add_network_options,
    add_roi_option,
    format_roi,
    resolve_roi,
)
from lazyflow_rbfs.cli.exits import EXIT_OK, UsageError
from lazyflow_rbfs.cli.opening import open_fileset
from lazyflow_rbfs.cli.text import fmt_bytes, fmt_shape
from lazyflow_rbfs.errors import CacheWriteError

__all__ = ["add_read", "add_export", "READ_SLAB_BYTES"]

#: Upper bound of voxel bytes ``rbfs read`` holds in memory at once (it writes slab by slab).
READ_SLAB_BYTES = 256 * 1024 * 1024


def add_read(command: AddCommand) -> None:
    p = command("read", "Read a roi through the cache into an .h5 or .npy file (written atomically).")
    add_description_arg(p)
    add_roi_option(p, required=True, what="required; ':' per axis for everything")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output file, .h5/.hdf5 or .npy")
    p.add_argument("--dataset", metavar="NAME", help="dataset name inside an .h5 output (default 'data')")
    add_network_options(p)
    p.set_defaults(func=_cmd_read)


def add_export(command: AddCommand) -> None:
    p = command("export", "Export a roi in an upstream format: one HDF5 file, or a blockwise subset fileset.")
    add_description_arg(p)
    add_roi_option(p, required=True, what="required")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to export into")
    p.add_argument(
        "--format",
        choices=("single-hdf5", "blockwise-subset"),
        default="single-hdf5",
        help="single-hdf5: exportRoiToHdf5; blockwise-subset: exportSubset (default single-hdf5)",
    )
    add_network_options(p)
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


def _cmd_read(args: argparse.Namespace) -> int:
    out = args.output
    ext = os.path.splitext(out)[1].lower()
    if ext not in (".h5", ".hdf5", ".hdf", ".npy"):
        raise UsageError(f"expected an output file ending in .h5, .hdf5 or .npy, found {out!r}")
    if ext == ".npy" and args.dataset:
        raise UsageError("--dataset applies to HDF5 outputs only, not to .npy")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"output directory {out_dir!r} does not exist")
    opened, fs = open_fileset(args)
    with contextlib.closing(fs):
        desc = fs.description
        start, stop = resolve_roi(args.roi, desc.view_shape, desc.axes)
        shape = tuple(int(n) for n in stop - start)
        dtype = np.dtype(desc.dtype)
        plane_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        slabs = list(_slabs(start, stop, int(desc.block_shape[0]), READ_SLAB_BYTES // max(plane_bytes, 1)))
        t0 = time.monotonic()
        _write_output(out, ext, args.dataset or "data", fs, slabs, start, stop, dtype, str(desc.axes))
        seconds = time.monotonic() - t0
    nbytes = int(np.prod(shape)) * dtype.itemsize
    where = out if ext == ".npy" else f"{out}/{args.dataset or 'data'}"
    print(
        f"wrote {fmt_shape(shape)} {dtype.name} ({fmt_bytes(nbytes)}) "
        f"of roi {format_roi(start, stop)} to {where}"
    )
    if opened.kind == "composite":
        print(f"{fs.blocks_downloaded} blocks downloaded in {seconds:.1f} s")
    return EXIT_OK


def _write_output(
    out: str,
    ext: str,
    dataset: str,
    fs: Any,
    slabs: list[tuple[np.ndarray, np.ndarray]],
    start: np.ndarray,
    stop: np.ndarray,
    dtype: np.dtype,
    axes: str,
) -> None:
    """Write the roi to ``out`` (.npy or HDF5), slab by slab along axis 0, without memory-mapping.

    The layout (an .npy header, or the metadata of an HDF5 file with one contiguous dataset) is built in
    memory first, so the file's size is known: it is reserved up front (a full disk fails before any
    download) and the slabs are written at their offsets with checked writes (C order: a slab of rows
    along axis 0 is one contiguous byte range). Atomic: nothing is left behind on failure.
    """
    from lazyflow_rbfs import h5image

    shape = tuple(int(n) for n in stop - start)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    if ext == ".npy":
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
        image, data_offset = h5image.contiguous_skeleton(
            dataset, shape, dtype, {"axes": axes, "roi_start": start, "roi_stop": stop}
        )
        skeleton = list(image.pages())
        size = image.size

    def fill(fd: int) -> None:
        for offset, data in skeleton:
            atomic.pwrite_all(fd, data, offset)
        for s, e in slabs:
            data = np.ascontiguousarray(fs.readData((s, e)), dtype=dtype)
            atomic.pwrite_all(fd, data, data_offset + int(s[0] - start[0]) * row_bytes)

    atomic.write_file(out, fill, reserve=size)


def _cmd_export(args: argparse.Namespace) -> int:
    out_dir = args.output
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UsageError(f"expected an output directory, found the file {out_dir!r}")
    opened, fs = open_fileset(args)
    with contextlib.closing(fs):
        desc = fs.description
        start, stop = resolve_roi(args.roi, desc.view_shape, desc.axes)
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as exc:
            raise CacheWriteError.from_os_error(exc, out_dir, "create the output directory") from exc
        if args.format == "single-hdf5":
            result = fs.exportRoiToHdf5((start, stop), out_dir)
        else:
            bs = np.asarray(desc.block_shape, dtype=np.int64)
            if (start % bs).any() or ((stop % bs != 0) & (stop != np.asarray(desc.view_shape))).any():
                raise UsageError(
                    f"--format blockwise-subset needs a roi on block boundaries (block shape "
                    f"{fmt_shape(bs)}), found {format_roi(start, stop)}"
                )
            if opened.kind == "composite":
                # exportSubset copies the cached blocks: make sure the roi's blocks are all there.
                fs.downloadAllBlocks(roi=(start, stop), progress=False)
            result = fs.exportSubset((start, stop), out_dir)
    target = result if isinstance(result, (str, os.PathLike)) else out_dir
    print(f"exported roi {format_roi(start, stop)} ({args.format}) to {os.fspath(target)}")
    return EXIT_OK
