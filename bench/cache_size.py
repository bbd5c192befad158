"""Benchmark — a size-bounded cache (issue 12): eviction overhead, use tracking, gc, footprint query.

1. Cold fill of a volume twice the limit (every second block is evicted again) vs the same fill without
   a limit: ``downloadAllBlocks`` from the package's server (no latency, ``fsync=False``, so the local
   work — where eviction happens — is as large a part of the time as it can be). Target ≤ 1.1×.
2. Warm reads of random small rois of a cached volume with use tracking (the default) vs tracking
   disabled (``fileset.blocks.usage = None``, the read path as it was before issue 12). Target ≤ 1.05×.
3. ``rbfs gc`` of a synthesized cache of 10⁵ blocks (small block files, mtimes spread) down to half its
   footprint: 5·10⁴ evictions, each under its block lock. Budget ≤ 10 s.
4. The footprint query (``CacheLimit.footprint()``, what ``rbfs status`` reads) on a cache of 10⁶ blocks
   (the ledger synthesized; no walk is needed). Budget ≤ 1 s.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import common
import numpy as np

from lazyflow_rbfs import RESTfulBlockwiseFileset
from lazyflow_rbfs.cache.limit import CacheLimit
from lazyflow_rbfs.store import BlockwiseFileset
from lazyflow_rbfs.store.ledger import Ledger

FULL = {"shape": (64, 1024, 1024), "block": (16, 128, 128), "repeats": 5, "rois": 2000, "gc_blocks": 100_000}
QUICK = {"shape": (32, 512, 512), "block": (16, 128, 128), "repeats": 2, "rois": 300, "gc_blocks": 10_000}
FOOTPRINT_BLOCKS = 1_000_000


def _describe(server: common.ServerProcess, directory: Path, block, limit=None) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = server.describe(directory / "volume.json", block_shape=tuple(block), cache_dir="cache")
    if limit is not None:
        data = json.loads(Path(path).read_text())
        data["local_description"]["max_cache_bytes"] = int(limit)
        Path(path).write_text(json.dumps(data))
    return path


def cold_fill(server, directory: Path, block, limit) -> float:
    common.empty_dir(directory)
    path = _describe(server, directory, block, limit)
    t0 = time.perf_counter()
    with RESTfulBlockwiseFileset(path, max_parallel=8, fsync=False) as fs:
        report = fs.downloadAllBlocks()
        if not report.ok:
            raise SystemExit(f"cold fill failed: {report.summary()}")
    return time.perf_counter() - t0


def warm_reads(fs, rois) -> float:
    t0 = time.perf_counter()
    for start, stop in rois:
        fs.readData((start, stop))
    return time.perf_counter() - t0


def synthesize_tree(root: Path, grid, block_bytes: int) -> None:
    """A cache tree of ``grid`` (z, y, x block counts) with 1×10×10 blocks: STATUS.txt + a block file."""
    payload = b"\0" * block_bytes
    now = time.time()
    n = 0
    for z in range(grid[0]):
        for y in range(grid[1]):
            ydir = root / f"z_{z:08d}" / f"y_{y * 10:08d}"
            for x in range(grid[2]):
                d = ydir / f"x_{x * 10:08d}"
                d.mkdir(parents=True)
                roi = f"([{z}, {y * 10}, {x * 10}], [{z + 1}, {y * 10 + 10}, {x * 10 + 10}])"
                (d / f"block-{roi}.h5").write_bytes(payload)
                status = d / "STATUS.txt"
                status.write_bytes(b"")
                t = now - 100_000 + n * 0.5
                os.utime(status, (t, t))
                n += 1


def offline_description(directory: Path, shape, block, cache: str) -> str:
    return common.write_description_offline(directory / "volume.json", shape, block, cache_dir=cache)


def main(argv: list[str] | None = None) -> dict:
    args = common.parse_args(__doc__, argv)
    cfg = QUICK if args.quick else FULL
    repeats = args.repeats or cfg["repeats"]
    shape, block = cfg["shape"], cfg["block"]
    nblocks = len(common.block_grid(shape, block))
    metrics = []
    params: dict = {"shape": shape, "block": block, "blocks": nblocks, "repeats": repeats}

    with common.temp_dir("cache-size") as tmp, common.ServerProcess(shape, seed=3) as server:
        # 1. cold fill under a limit of half the volume vs no limit
        probe = tmp / "probe"
        path = _describe(server, probe, block)
        with RESTfulBlockwiseFileset(path) as fs:
            fs.readData(((0, 0, 0), block))
            block_file = os.path.getsize(fs.getDatasetPathComponents((0, 0, 0)).externalPath)
        limit = nblocks * block_file // 2
        cold_fill(server, tmp / "warm-up", block, limit)
        times = common.interleaved(
            {
                "limited": lambda: cold_fill(server, tmp / "limited", block, limit),
                "unlimited": lambda: cold_fill(server, tmp / "unlimited", block, None),
            },
            repeats,
        )
        metrics.append(
            common.ratio_metric(
                f"cold fill of {nblocks} blocks, limit = half the volume, vs no limit",
                times["limited"],
                times["unlimited"],
                op="<=",
                target=1.1,
                unit="s",
                baseline_name="no limit",
                higher_is_better=False,
            )
        )

        # 2. warm reads with use tracking vs without
        warm = tmp / "warm"
        path = _describe(server, warm, block)
        rng = np.random.default_rng(0)
        rois = []
        for _ in range(cfg["rois"]):
            edges = [min(32, n // 2) for n in shape]
            start = [int(rng.integers(0, n - e)) for n, e in zip(shape, edges)]
            rois.append((start, [s + e for s, e in zip(start, edges)]))
        tracked = RESTfulBlockwiseFileset(path, max_open_files=1024)
        tracked.downloadAllBlocks()
        untracked = RESTfulBlockwiseFileset(path, max_open_files=1024)
        untracked.blocks.usage = None
        for fs in (tracked, untracked):
            warm_reads(fs, rois)  # untimed: handles opened, first uses recorded
        times: dict[str, list[float]] = {"tracked": [], "untracked": []}
        for i in range(2 * repeats):  # order alternates: neither side always runs first
            order = ("tracked", "untracked") if i % 2 else ("untracked", "tracked")
            for name in order:
                times[name].append(warm_reads(tracked if name == "tracked" else untracked, rois))
        got = tracked.readData(((0, 0, 0), shape))
        if not np.array_equal(got, common.make_volume(shape, seed=3)):
            raise SystemExit("the warm cache does not hold the server's volume")
        tracked.close()
        untracked.close()
        metrics.append(
            common.ratio_metric(
                f"warm reads ({cfg['rois']} random 32³ rois), use tracking vs none",
                times["tracked"],
                times["untracked"],
                op="<=",
                target=1.05,
                unit="s",
                baseline_name="no tracking",
                higher_is_better=False,
            )
        )

    # 3. gc of a synthesized cache
    with common.temp_dir("cache-gc") as tmp:
        count = cfg["gc_blocks"]
        grid = (count // 10_000 or 1, 100, 100) if count >= 10_000 else (1, 10, count // 10)
        gshape = (grid[0], grid[1] * 10, grid[2] * 10)
        path = offline_description(tmp, gshape, (1, 10, 10), "cache")
        synthesize_tree(tmp / "cache", grid, 256)
        total = grid[0] * grid[1] * grid[2]
        env = dict(os.environ, PYTHONPATH=str(common.REPO_ROOT))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "lazyflow_rbfs", "gc", path, "--max-cache-size", str(total * 256 // 2)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        seconds = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(f"  rbfs gc: {out.strip()}")
        print(
            f"  rbfs gc: {seconds:.1f} s wall, {cpu:.1f} s CPU (user + system; the rest waits for the disk "
            f"or for a CPU: load average {os.getloadavg()[0]:.1f})"
        )
        metrics.append(
            common.ratio_metric(
                f"rbfs gc of {total} blocks down to half (budget 10 s)",
                [seconds],
                [10.0],
                op="<=",
                target=1.0,
                unit="s",
                baseline_name="budget",
                higher_is_better=False,
            )
        )
        metrics.append(
            common.ratio_metric(
                f"rbfs gc of {total} blocks, CPU time (info)",
                [cpu],
                [10.0],
                op=None,
                target=None,
                unit="s",
                baseline_name="budget",
                higher_is_better=False,
            )
        )
        params["gc_seconds"] = seconds
        params["gc_cpu_seconds"] = cpu

    # 4. the footprint query on 10^6 blocks
    with common.temp_dir("cache-footprint") as tmp:
        path = offline_description(tmp, (100, 1000, 100), (1, 10, 10), "cache")  # 10^6 blocks
        root = tmp / "cache"
        root.mkdir()
        ledger = Ledger(str(root), walk=lambda: (FOOTPRINT_BLOCKS * 4096, FOOTPRINT_BLOCKS))
        ledger.reconcile(wait=True, force=True)  # the synthesized record: as if walked
        local = RESTfulBlockwiseFileset.readDescription(path).local_description
        with BlockwiseFileset(path, "r", preparsedDescription=local) as fs:
            t0 = time.perf_counter()
            limit = CacheLimit(fs.blocks, "50G", track_use=False)
            fp = limit.footprint()
            seconds = time.perf_counter() - t0
        if fp.blocks != FOOTPRINT_BLOCKS:
            raise SystemExit(f"footprint query read {fp}, expected {FOOTPRINT_BLOCKS} blocks")
        metrics.append(
            common.ratio_metric(
                f"footprint query on {FOOTPRINT_BLOCKS} blocks (budget 1 s)",
                [seconds],
                [1.0],
                op="<=",
                target=1.0,
                unit="s",
                baseline_name="budget",
                higher_is_better=False,
            )
        )
        params["footprint_query_seconds"] = seconds
    return common.report("cache_size", "Cache size (issue 12)", metrics, params, args.quick)


if __name__ == "__main__":
    main()
