"""Benchmark 1 — warm read: a fully cached view read through RESTfulBlockwiseFileset.

View 128×2048×2048 uint8 in blocks of 32×256×256 (512 MiB, 256 block files), every block cached. Two
workloads: the whole view in one ``readData``, and 1,000 random 64³ rois.

* Baseline (the limit for this layout): plain h5py reading the same block files into the same output
  array with ``read_direct``, every file opened once beforehand and the handles reused.
* Peer: zarr v3 ``LocalStore``, same chunking, uncompressed, reading into the same output array.

Targets: whole view ≥ 0.9× the h5py limit and ≥ 1.0× zarr; random rois ≥ 0.8× the limit.
"""

from __future__ import annotations

import itertools
import time

import common
import h5py
import numpy as np

from lazyflow_rbfs import RESTfulBlockwiseFileset

FULL = {
    "shape": (128, 2048, 2048),
    "block": (32, 256, 256),
    "rois": 1000,
    "roi": 64,
    "repeats": 5,
    "view_repeats": 9,
}
QUICK = {
    "shape": (64, 512, 512),
    "block": (32, 256, 256),
    "rois": 200,
    "roi": 64,
    "repeats": 3,
    "view_repeats": 3,
}


def populate(desc_path: str, data: np.ndarray) -> tuple[RESTfulBlockwiseFileset, list]:
    """Open the cache and publish every block with the package's own writer (as a download would)."""
    fs = RESTfulBlockwiseFileset(desc_path, max_open_files=1024)
    blocks = []
    for block_start in fs.iterBlockStarts():
        start, stop = fs.blocks.disk_roi(block_start)
        region = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
        with fs.blocks.lock(block_start):
            fs.blocks.publish(block_start, data[region])
        paths = fs.blocks.paths(block_start)
        blocks.append((tuple(int(a) for a in start), paths.file_path, paths.internal_path))
    return fs, blocks


class H5Limit:
    """The baseline: open handles to every block file, ``read_direct`` into the caller's array."""

    def __init__(self, blocks: list, block_shape: tuple[int, ...], shape: tuple[int, ...]) -> None:
        self.block_shape = block_shape
        self.shape = shape
        self.files = []
        self.datasets: dict[tuple[int, ...], h5py.Dataset] = {}
        for start, file_path, internal in blocks:
            f = h5py.File(file_path, "r")
            self.files.append(f)
            self.datasets[start] = f[internal]

    def read(self, start: tuple[int, ...], stop: tuple[int, ...], out: np.ndarray) -> None:
        per_axis = []
        for s, e, b in zip(start, stop, self.block_shape):
            pieces = []
            for bs in range((s // b) * b, e, b):
                lo, hi = max(s, bs), min(e, bs + b)
                pieces.append((bs, slice(lo - bs, hi - bs), slice(lo - s, hi - s)))
            per_axis.append(pieces)
        for combo in itertools.product(*per_axis):
            key = tuple(p[0] for p in combo)
            self.datasets[key].read_direct(
                out, source_sel=tuple(p[1] for p in combo), dest_sel=tuple(p[2] for p in combo)
            )

    def close(self) -> None:
        for f in self.files:
            f.close()


def main(argv: list[str] | None = None) -> dict:
    args = common.parse_args(__doc__, argv)
    cfg = QUICK if args.quick else FULL
    repeats = args.repeats or cfg["repeats"]
    view_repeats = args.repeats or cfg["view_repeats"]
    shape, block = cfg["shape"], cfg["block"]
    nbytes = int(np.prod(shape))
    rng = np.random.default_rng(1)
    roi_starts = [tuple(int(rng.integers(0, s - cfg["roi"] + 1)) for s in shape) for _ in range(cfg["rois"])]
    rois = [(s, tuple(a + cfg["roi"] for a in s)) for s in roi_starts]
    roi_bytes = cfg["rois"] * cfg["roi"] ** 3

    with common.temp_dir("warm") as tmp:
        t0 = time.perf_counter()
        data = common.make_volume(shape, seed=11)
        desc = common.write_description_offline(tmp / "volume.json", shape, block, "cache")
        fs, blocks = populate(desc, data)
        import zarr
        from zarr.core.buffer import default_buffer_prototype
        from zarr.storage import LocalStore

        z = zarr.create_array(
            store=LocalStore(str(tmp / "zarr")),
            shape=shape,
            chunks=block,
            dtype="uint8",
            compressors=None,
            filters=None,
            fill_value=0,
        )
        z[...] = data
        h5 = H5Limit(blocks, block, shape)
        setup_s = time.perf_counter() - t0

        out = np.empty(shape, dtype=np.uint8)
        out.fill(1)  # fault the pages in once: every contender writes into the same, resident array
        zout = default_buffer_prototype().nd_buffer.from_numpy_array(out)
        full = ((0,) * len(shape), shape)
        everything = tuple(slice(0, s) for s in shape)

        def rbfs_view() -> None:
            fs.readData(full, out_array=out)

        def h5_view() -> None:
            h5.read(full[0], full[1], out)

        def zarr_view() -> None:
            z.get_basic_selection(everything, out=zout)

        roi_out = np.empty((cfg["roi"],) * 3, dtype=np.uint8)
        zroi_out = default_buffer_prototype().nd_buffer.from_numpy_array(roi_out)

        def rbfs_rois() -> None:
            for roi in rois:
                fs.readData(roi, out_array=roi_out)

        def h5_rois() -> None:
            for start, stop in rois:
                h5.read(start, stop, roi_out)

        def zarr_rois() -> None:
            for start, stop in rois:
                z.get_basic_selection(tuple(slice(a, b) for a, b in zip(start, stop)), out=zroi_out)

        # Correctness first (untimed): all three read the same voxels.
        for fn in (rbfs_view, h5_view, zarr_view):
            out.fill(0)
            fn()
            if not np.array_equal(out, data):
                raise SystemExit(f"{fn.__name__} read wrong data")
        for start, stop in rois[:20]:
            expect = data[tuple(slice(a, b) for a, b in zip(start, stop))]
            roi_out.fill(0)
            fs.readData((start, stop), out_array=roi_out)
            ok = np.array_equal(roi_out, expect)
            roi_out.fill(0)
            h5.read(start, stop, roi_out)
            if not (ok and np.array_equal(roi_out, expect)):
                raise SystemExit("roi read returned wrong data")
        del data

        views = common.interleaved({"h5py": h5_view, "rbfs": rbfs_view, "zarr": zarr_view}, view_repeats)
        roi_t = common.interleaved({"h5py": h5_rois, "rbfs": rbfs_rois, "zarr": zarr_rois}, repeats)
        h5.close()
        fs.close()

    def thr(times: list[float], n: int) -> list[float]:
        return [n / t / common.MiB for t in times]

    view_mib = {k: thr(v, nbytes) for k, v in views.items()}
    roi_mib = {k: thr(v, roi_bytes) for k, v in roi_t.items()}
    metrics = [
        common.ratio_metric(
            "whole view vs h5py limit",
            view_mib["rbfs"],
            view_mib["h5py"],
            op=">=",
            target=0.9,
            unit="MiB/s",
            baseline_name="h5py",
            higher_is_better=True,
        ),
        common.ratio_metric(
            "whole view vs zarr v3",
            view_mib["rbfs"],
            view_mib["zarr"],
            op=">=",
            target=1.0,
            unit="MiB/s",
            baseline_name="zarr",
            higher_is_better=True,
        ),
        common.ratio_metric(
            f"{cfg['rois']} random 64³ rois vs h5py limit",
            roi_mib["rbfs"],
            roi_mib["h5py"],
            op=">=",
            target=0.8,
            unit="MiB/s",
            baseline_name="h5py",
            higher_is_better=True,
        ),
        common.ratio_metric(
            f"{cfg['rois']} random 64³ rois vs zarr v3 (info)",
            roi_mib["rbfs"],
            roi_mib["zarr"],
            op=None,
            target=None,
            unit="MiB/s",
            baseline_name="zarr",
            higher_is_better=True,
        ),
    ]
    params = {
        "shape": shape,
        "block": block,
        "rois": cfg["rois"],
        "roi_size": cfg["roi"],
        "repeats": repeats,
        "view_repeats": view_repeats,
        "setup_seconds": round(setup_s, 2),
        "view_seconds": {k: common.summarize(v) for k, v in views.items()},
        "roi_seconds": {k: common.summarize(v) for k, v in roi_t.items()},
    }
    return common.report("warm_read", "1. Warm read", metrics, params, args.quick)


if __name__ == "__main__":
    main()
