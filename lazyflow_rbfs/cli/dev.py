"""Developer commands: ``rbfs serve`` (a local cutout service with fault injection) and ``rbfs demo``.

They run the test kit's server (:mod:`lazyflow_rbfs.testing`), imported inside the commands only: the
command line itself, like every runtime module, never imports the test kit.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from lazyflow_rbfs import geometry
from lazyflow_rbfs.cli.args import (
    AddCommand,
    add_progress_options,
    format_roi,
    non_negative_int,
    positive_int,
    seconds_arg,
    shape_arg,
    want_progress,
)
from lazyflow_rbfs.cli.exits import EXIT_OK, Failure, UsageError
from lazyflow_rbfs.cli.opening import read_description
from lazyflow_rbfs.cli.text import fmt_bytes, fmt_shape

__all__ = ["add_serve", "add_demo", "rbfs_command"]

_DEFAULT_AXES = {1: "x", 2: "yx", 3: "zyx", 4: "tzyx", 5: "tzyxc"}
_API_FORMATS = ("hdf5", "npz", "boss", "precomputed")
#: Formats ``serve`` writes into a folder and serves as static files (their writers live in the test kit,
#: :data:`lazyflow_rbfs.testing.static.WRITERS`; this list is only for ``--help``).
_STATIC_FORMATS: tuple[str, ...] = (
    "zarr2",
    "zarr3",
    "zarr3-sharded",
    "ome-zarr",
    "n5",
    "precomputed-sharded",
)


def add_serve(command: AddCommand) -> None:
    p = command("serve", "Serve an .npy/.h5 volume (or the built-in sample) as a local cutout service.")
    p.add_argument(
        "volume",
        nargs="?",
        metavar="VOLUME",
        help="an .npy file, an .h5 file (with --dataset or a single dataset) or file.h5/dataset "
        "(default: the built-in sample volume)",
    )
    p.add_argument("--dataset", metavar="NAME", help="dataset inside an .h5 VOLUME")
    p.add_argument("--axes", help="axis names of VOLUME, e.g. zyx (default by dimensionality)")
    add_progress_options(p, "while the sample volume is built")
    p.add_argument("--shape", type=shape_arg, default=(64, 512, 512), help="sample volume shape (64,512,512)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=non_negative_int, default=0, help="port, 0 picks a free one (0)")
    p.add_argument("--latency", type=seconds_arg, default=0.0, metavar="S", help="seconds added per response")
    p.add_argument(
        "--describe", metavar="OUT.json", help="write a composite description of the served volume"
    )
    p.add_argument("--block-shape", type=shape_arg, metavar="Z,Y,X", help="block shape for --describe")
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache directory (dataset_root_dir) for --describe (default: <OUT stem>-blocks beside it)",
    )
    p.add_argument(
        "--format",
        default="hdf5",
        metavar="FORMAT",
        help="remote format of the --describe description: hdf5, npz, boss or precomputed (boss and "
        "precomputed also switch those APIs on, zyx volumes), or a format served as static files with "
        "Range support (the volume is written into a temporary folder in that format: "
        f"{', '.join(_STATIC_FORMATS)}) (hdf5)",
    )
    faults = p.add_argument_group(
        "fault injection (N: how many requests, or 'all')",
        "Misbehave on purpose, to see retries, errors and recovery from the client side.",
    )
    faults.add_argument(
        "--fail", type=_fault_spec, metavar="N[:STATUS]", help="answer N requests with STATUS (503)"
    )
    faults.add_argument(
        "--fail-matching",
        type=_match_spec,
        metavar="TEXT[:STATUS]",
        help="answer every request whose path contains TEXT with STATUS (404), permanently",
    )
    faults.add_argument("--truncate", type=_fault_count, metavar="N", help="cut N bodies off halfway")
    faults.add_argument("--html", type=_fault_count, metavar="N", help="answer N requests with an HTML page")
    faults.add_argument(
        "--stall", type=_fault_spec, metavar="N[:SECONDS]", help="hold N responses SECONDS (until Ctrl-C)"
    )
    faults.add_argument(
        "--wrong-shape", type=_fault_count, metavar="N", help="serve N regions of a wrong shape"
    )
    faults.add_argument(
        "--wrong-dtype", type=_fault_count, metavar="N", help="serve N regions in a wrong dtype"
    )
    p.set_defaults(func=_cmd_serve)


def add_demo(command: AddCommand) -> None:
    p = command("demo", "A self-contained tour: local server, cold and warm reads, prefetch, statistics.")
    p.add_argument(
        "--dir", metavar="DIR", help="where to write the description and cache (default: a new temp dir)"
    )
    p.add_argument("--shape", type=shape_arg, default=(64, 512, 512), metavar="Z,Y,X", help="(64,512,512)")
    p.add_argument(
        "--block-shape", type=shape_arg, default=(32, 128, 128), metavar="Z,Y,X", help="(32,128,128)"
    )
    p.add_argument(
        "-j", "--max-parallel", type=positive_int, default=8, metavar="N", help="downloads in flight (8)"
    )
    p.add_argument(
        "--latency", type=seconds_arg, default=0.005, metavar="S", help="server latency per response (0.005)"
    )
    add_progress_options(p)
    p.set_defaults(func=_cmd_demo)


def _fault_count(text: str) -> int | str:
    """A fault count: a positive integer, or ``"all"`` (every request, permanently)."""
    if text.strip().lower() == "all":
        return "all"
    return positive_int(text)


def _fault_spec(text: str) -> tuple[int | str, float | None]:
    """``N`` or ``N:VALUE`` (a status or seconds)."""
    count, _, value = text.partition(":")
    try:
        number = float(value) if value else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N:NUMBER, found {text!r}") from None
    return _fault_count(count), number


def _match_spec(text: str) -> tuple[str, int]:
    """``TEXT`` or ``TEXT:STATUS``."""
    match, sep, status = text.rpartition(":")
    if not sep or not status.isdigit():
        return text, 404
    return match, int(status)


def _default_block_shape(shape: Sequence[int]) -> tuple[int, ...]:
    n = len(shape)
    return tuple(int(min(s, 128 if i >= n - 2 else 32)) for i, s in enumerate(shape))


def _build_sample(shape: Sequence[int], progress: bool) -> np.ndarray:
    """The built-in sample volume; a large one takes a while, so say so (with a bar of planes made)."""
    from lazyflow_rbfs.testing import sample_volume

    nbytes = int(np.prod(shape, dtype=np.int64))
    print(f"building the sample volume {fmt_shape(shape)} uint8 ({fmt_bytes(nbytes)}) ...", flush=True)
    if not progress:
        return sample_volume(shape)
    from tqdm import tqdm

    with tqdm(total=int(shape[0]), unit="plane", desc="building", dynamic_ncols=True) as bar:

        def tick(done: int, total: int) -> None:
            bar.update(done - bar.n)

        return sample_volume(shape, progress=tick)


def _load_serve_volume(args: argparse.Namespace) -> tuple[Any, int]:
    """What ``rbfs serve`` hands to CutoutServer (an array, an .npy memmap or ``file.h5/dataset``) and
    its number of axes."""
    from lazyflow_rbfs.testing.volumes import split_h5_path

    if args.volume is None:
        if args.dataset:
            raise UsageError("--dataset needs a VOLUME")
        return _build_sample(args.shape, want_progress(args)), len(args.shape)
    path, dataset = args.volume, args.dataset
    split = split_h5_path(path) if dataset is None else None
    if split is not None:
        path, dataset = split
    lower = path.lower()
    if not os.path.isfile(path):
        raise UsageError(f"volume file {path!r} does not exist")
    if lower.endswith(".npy"):
        if dataset:
            raise UsageError("--dataset applies to HDF5 volumes only, not to .npy")
        volume = np.load(path, mmap_mode="r")
        return volume, volume.ndim
    if not lower.endswith((".h5", ".hdf5", ".hdf")):
        raise UsageError(f"expected an .npy or .h5 VOLUME, found {path!r}")
    import h5py

    with h5py.File(path, "r") as f:
        if dataset:
            if not isinstance(f.get(dataset), h5py.Dataset):
                raise UsageError(f"{path} has no dataset {dataset!r}")
        else:
            names: list[str] = []
            f.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
            if len(names) != 1:
                raise UsageError(
                    f"{path} holds {len(names)} datasets ({', '.join(names[:5]) or 'none'}): "
                    f"choose one with --dataset"
                )
            dataset = names[0]
        ndim = f[dataset].ndim
    return f"{path}/{dataset.strip('/')}", ndim


def _cmd_serve(args: argparse.Namespace) -> int:
    from lazyflow_rbfs.testing import CutoutServer

    if args.describe is None and (args.block_shape or args.cache_dir):
        raise UsageError("--block-shape and --cache-dir go with --describe")
    volume, ndim = _load_serve_volume(args)
    axes = args.axes or _DEFAULT_AXES.get(ndim)
    if axes is None:
        raise UsageError(f"the volume has {ndim} axes: name them with --axes")
    if args.format not in _API_FORMATS:
        return _serve_static(args, volume, axes)
    apis: dict[str, Any] = {}
    if args.format in ("boss", "precomputed"):
        if axes != "zyx":
            raise UsageError(f"--format {args.format} serves zyx volumes; this one has axes {axes!r}")
        from lazyflow_rbfs.testing import BossSettings, PrecomputedSettings

        apis = {"boss": BossSettings()} if args.format == "boss" else {"precomputed": PrecomputedSettings()}
    try:
        server = CutoutServer(volume, axes=axes, host=args.host, port=args.port, latency=args.latency, **apis)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with server:
        print(f"serving {fmt_shape(server.shape)} {server.dtype.name} ({server.axes}) at {server.url}")
        print(f"url_format: {server.url_format}")
        if args.format == "precomputed":
            print(f"precomputed: {server.precomputed_url}")
        if args.format == "boss":
            b = server.boss
            print(f"boss: boss://{b.collection}/{b.experiment}/{b.channel} --boss-url {server.url}")
        for line in _install_faults(server, args):
            print(f"fault: {line}")
        if args.describe:
            block_shape = args.block_shape or _default_block_shape(server.shape)
            if len(block_shape) != len(server.shape):
                raise UsageError(
                    f"--block-shape has {len(block_shape)} entries, "
                    f"but the volume has {len(server.shape)} axes"
                )
            server.write_description(
                args.describe, block_shape=block_shape, cache_dir=args.cache_dir, format=args.format
            )
            read_description(args.describe)  # its cache dir must not hold another volume: exit 2 now
            print(f"description: {os.path.abspath(args.describe)}")
            print(f"try: {rbfs_command()} info {args.describe}")
        elif args.format == "boss":
            b = server.boss
            print(
                f"try: {rbfs_command()} describe boss://{b.collection}/{b.experiment}/{b.channel} "
                f"--boss-url {server.url} -o boss.json"
            )
        elif args.format == "precomputed":
            print(f"try: {rbfs_command()} describe {server.precomputed_url} -o precomputed.json")
        _serve_until_interrupted(server)
    return EXIT_OK


def _serve_static(args: argparse.Namespace, volume: Any, axes: str) -> int:
    """``serve --format F`` for a static format: write the volume in format F into a temporary folder,
    serve it with Range support, describe it with ``rbfs describe``'s own code if asked."""
    from lazyflow_rbfs.testing import CutoutServer, static

    if args.format not in static.WRITERS:
        known = ", ".join((*_API_FORMATS, *sorted(static.WRITERS)))
        raise UsageError(f"--format: expected one of {known}; found {args.format!r}")
    with tempfile.TemporaryDirectory(prefix="rbfs-serve-") as folder:
        try:
            server = CutoutServer(volume, axes=axes, host=args.host, port=args.port, latency=args.latency)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        with server:
            print(
                f"writing {fmt_shape(server.shape)} {server.dtype.name} ({axes}) as {args.format} ...",
                flush=True,
            )
            try:
                rel = static.write_source(args.format, np.asarray(server.volume), axes, folder)
            except ValueError as exc:
                raise UsageError(f"--format {args.format}: {exc}") from None
            server.mount("data", folder)
            source = server.files_url("data", rel)
            print(f"serving {args.format} at {source} (static files, HTTP Range supported)")
            for line in _install_faults(server, args):
                print(f"fault: {line}")
            if args.describe:
                from lazyflow_rbfs.describe import describe_source

                path = describe_source(
                    source, args.describe, block_shape=args.block_shape, cache_dir=args.cache_dir
                )
                print(f"description: {path}")
                print(f"try: {rbfs_command()} info {args.describe}")
            print(f"describe it with: {rbfs_command()} describe {source} -o OUT.json")
            _serve_until_interrupted(server)
    return EXIT_OK


def _serve_until_interrupted(server: Any) -> None:
    """Serve until Ctrl-C, then say how many requests were answered."""
    print("press Ctrl-C to stop", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print(f"stopped after {server.requests} requests", flush=True)


def _install_faults(server: Any, args: argparse.Namespace) -> list[str]:
    """Add the fault rules asked for on the command line; return a line describing each."""
    faults = server.faults
    lines = []

    def many(count: int | str) -> str:
        return "every request" if count == "all" else f"the next {count} request(s)"

    def n(count: int | str) -> int | None:  # the server's count: None is "permanently"
        return None if count == "all" else int(count)

    if args.fail:
        count, status = args.fail
        faults.fail_next(n(count), int(status or 503))
        lines.append(f"HTTP {int(status or 503)} for {many(count)}")
    if args.fail_matching:
        match, status = args.fail_matching
        faults.fail_matching(match, status)
        lines.append(f"HTTP {status} for every path containing {match!r}")
    for name, method, what in (
        ("truncate", faults.truncate, "bodies cut off halfway"),
        ("html", faults.html, "an HTML page with status 200"),
        ("wrong_shape", faults.wrong_shape, "regions of the wrong shape"),
        ("wrong_dtype", faults.wrong_dtype, "regions in the wrong dtype"),
    ):
        value = getattr(args, name)
        if value is not None:
            method(n(value))
            lines.append(f"{what} for {many(value)}")
    if args.stall:
        count, seconds = args.stall
        faults.stall(n(count), seconds=seconds)
        held = "until Ctrl-C" if seconds is None else f"{seconds:g} s"
        lines.append(f"responses held {held} for {many(count)}")
    return lines


def rbfs_command() -> str:
    """How to run ``rbfs`` from a shell, as it was run now: ``rbfs`` when that is the program on PATH,
    else the absolute path of the ``rbfs`` script that runs, else ``python -m lazyflow_rbfs`` with this
    interpreter's absolute path (a venv that is not activated, ``python -m``)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "rbfs" and os.path.isfile(argv0):
        script = os.path.abspath(argv0)
        on_path = shutil.which("rbfs")
        if on_path and os.path.realpath(on_path) == os.path.realpath(script):
            return "rbfs"
        return shlex.quote(script)
    return f"{shlex.quote(sys.executable)} -m lazyflow_rbfs"


def _cmd_demo(args: argparse.Namespace) -> int:
    from lazyflow_rbfs.cache import RESTfulBlockwiseFileset
    from lazyflow_rbfs.testing import CutoutServer, sample_volume

    shape = tuple(args.shape)
    if len(args.block_shape) != len(shape):
        raise UsageError(f"--block-shape has {len(args.block_shape)} entries, --shape has {len(shape)}")
    if len(shape) not in _DEFAULT_AXES:
        raise UsageError(f"--shape must have 1 to 5 axes, found {len(shape)}")
    block_shape = tuple(min(b, s) for b, s in zip(args.block_shape, shape))
    directory = args.dir or tempfile.mkdtemp(prefix="rbfs-demo-")
    cache_dir = os.path.join(directory, "cache")
    if os.path.isdir(cache_dir) and os.listdir(cache_dir):
        raise UsageError(
            f"{cache_dir} already holds a cache, so the demo could not show a cold read: "
            f"choose another --dir or delete it"
        )
    os.makedirs(directory, exist_ok=True)
    description_path = os.path.join(directory, "volume.json")

    t0 = time.monotonic()
    source = sample_volume(shape)
    print(
        f"sample volume: {fmt_shape(shape)} {source.dtype.name} ({fmt_bytes(source.nbytes)}), "
        f"made in {time.monotonic() - t0:.1f} s"
    )
    with CutoutServer(source, axes=_DEFAULT_AXES[len(shape)], latency=args.latency) as server:
        server.write_description(description_path, block_shape=block_shape, cache_dir="cache", name="demo")
        print(f"server: {server.url} (latency {args.latency * 1000:.0f} ms per response)")
        print(f"description: {description_path}")
        with RESTfulBlockwiseFileset(description_path, max_parallel=args.max_parallel) as vol:
            nblocks = geometry.count_blocks(
                np.zeros(len(shape), np.int64), np.array(shape), np.array(block_shape)
            )
            print(f"cache: {fmt_shape(block_shape)} blocks, {nblocks} in all, in {cache_dir}")
            start = np.array([s // 4 for s in shape], dtype=np.int64)
            stop = np.array([s // 4 + max(1, s // 2) for s in shape], dtype=np.int64)
            roi = format_roi(start, stop)
            expected = source[geometry.to_slices(start, stop)]

            t = time.monotonic()
            cold = vol.readData((start, stop))
            cold_s = time.monotonic() - t
            cold_requests, cold_blocks = server.requests, vol.blocks_downloaded
            t = time.monotonic()
            warm = vol.readData((start, stop))
            warm_s = time.monotonic() - t
            warm_requests = server.requests - cold_requests
            if not (np.array_equal(cold, expected) and np.array_equal(warm, expected)):
                raise Failure(f"the data read for roi {roi} differs from the served volume")
            print(
                f"read {roi} cold: {cold_s * 1000:.0f} ms, {cold_requests} requests, {cold_blocks} blocks "
                f"downloaded; data equals the source"
            )
            print(
                f"read {roi} warm: {warm_s * 1000:.0f} ms, {warm_requests} requests "
                f"({cold_s / max(warm_s, 1e-6):.0f}x faster)"
            )

            before_requests, before_bytes = server.requests, vol.remote.stats.bytes_received
            report = vol.downloadAllBlocks(progress=want_progress(args), raise_on_failure=False)
            print(f"prefetch: {report.summary()}")
            if report.failed:
                raise Failure(f"prefetch failed for {len(report.failed)} blocks")
            stats = vol.remote.stats
            prefetched = stats.bytes_received - before_bytes
            print(
                f"prefetch: {server.requests - before_requests} requests, {fmt_bytes(prefetched)} received, "
                f"{prefetched / max(report.seconds, 1e-9) / 1e6:.1f} MB/s with {args.max_parallel} in flight"
            )
            whole = vol.readData((np.zeros(len(shape), np.int64), np.array(shape, np.int64)))
            if not np.array_equal(whole, source):
                raise Failure("the prefetched volume differs from the served volume")
            once = (
                "each exactly once" if server.requests == nblocks == vol.blocks_downloaded else "some twice"
            )
            print(
                f"total: {server.requests} requests, {fmt_bytes(stats.bytes_received)} received, "
                f"{vol.blocks_downloaded} of {nblocks} blocks downloaded ({once}); "
                f"the whole cached volume equals the source"
            )
    rbfs = rbfs_command()
    print("the server has stopped, but every block is cached: these work offline now")
    print(f"  {rbfs} info {description_path}")
    print(f"  {rbfs} status {description_path}")
    print(f"  {rbfs} read {description_path} --roi {roi} -o {os.path.join(directory, 'roi.h5')}")
    print(f"  {rbfs} verify {description_path}")
    print("and against a live server (new port, fresh cache):")
    print(f"  {rbfs} serve --describe {os.path.join(directory, 'live.json')} --cache-dir live-cache")
    return EXIT_OK
