"""Benchmark 6 — precomputed peer: rbfs vs cloud-volume on the same neuroglancer precomputed volume.

The package's CutoutServer serves a random ``uint8`` volume as neuroglancer precomputed (``info`` + raw
chunks) from a separate spawned process, with 10 ms injected latency per request, in two variants: chunks
``gzip``-encoded for clients that accept it (the server's default; both clients do) and ``raw`` (no
``Content-Encoding``). Both clients read the same chunk-aligned region; our local ``block_shape`` is the
precomputed chunk size (z, y, x), so both fetch exactly the same chunks.

* cold: a fresh cache directory each round. rbfs: ``describe_source`` + ``RESTfulBlockwiseFileset(desc,
  max_parallel=16)`` (untimed), then ``readData(region)`` (timed; it includes rbfs's one ``info``
  request). cloud-volume: ``CloudVolume("precomputed://http://…", cache=<fresh dir>, parallel=1,
  green_threads=False, progress=False, fill_missing=False, lru_bytes=0)`` (untimed; fetches ``info``),
  then ``vol[region]`` (timed) with 16 download threads (its thread pool constant, default 20, is set to
  16 to match ``max_parallel``).
* warm: the same region read again from the disk cache by a *fresh* fileset / CloudVolume object (built
  untimed), so neither has open handles or memory caches from the cold read; the server's request
  counter proves 0 requests for both.

cloud-volume runs twice: with its defaults (its disk cache gzips raw chunks) and, as information, with
``compress_cache=False``. Ratios are rbfs time / cloud-volume time (≤ 1.0: we are faster), targets ≤ 0.8×
cold and warm against the default cloud-volume (issue 13; was 1×). The cloud-volume cutout is (x, y, z, c)
in Fortran order; its (z, y, x) view is a zero-copy transpose outside the timed section (the comparison
with the source is untimed for both).
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

from lazyflow_rbfs import RESTfulBlockwiseFileset
from lazyflow_rbfs.describe import describe_source

FULL = {
    "shape": (256, 1024, 1024),
    "start": (64, 256, 256),
    "region": (128, 512, 512),
    "chunk_zyx": (64, 64, 64),
    "latency": 0.010,
    "parallel": 16,
    "repeats": 7,
}
QUICK = {
    "shape": (64, 256, 256),
    "start": (0, 64, 64),
    "region": (64, 128, 128),
    "chunk_zyx": (32, 64, 64),
    "latency": 0.010,
    "parallel": 16,
    "repeats": 3,
}


def _timed(server: common.ServerProcess, read: Any, arg: Any) -> tuple[Any, dict[str, Any]]:
    """Run ``read(arg)`` with the server's counters reset; its result, wall and CPU seconds, server stats."""
    server.call("reset")
    s0 = server.call("cpu")
    c0, t0 = common.cpu_seconds(), time.perf_counter()
    data = read(arg)
    seconds, cpu = time.perf_counter() - t0, common.cpu_seconds() - c0
    server_cpu = server.call("cpu") - s0
    return data, {"seconds": seconds, "cpu": cpu, "server_cpu": server_cpu, "stats": server.call("stats")}


def rbfs_round(
    server: common.ServerProcess, workdir: Path, cfg: dict[str, Any], source: np.ndarray | None
) -> dict[str, Any]:
    """Cold ``readData`` of the region into a fresh cache, then warm with a fresh fileset object."""
    common.empty_dir(workdir)
    workdir.mkdir(parents=True)
    start = cfg["start"]
    stop = tuple(a + n for a, n in zip(start, cfg["region"]))
    desc = describe_source(
        server.info["precomputed_url"],
        workdir / "volume.json",
        block_shape=cfg["chunk_zyx"],
        cache_dir="cache",
    )
    out: dict[str, Any] = {}
    for phase in ("cold", "warm"):
        fs = RESTfulBlockwiseFileset(desc, max_parallel=cfg["parallel"])
        try:
            data, out[phase] = _timed(server, fs.readData, (start, stop))
        finally:
            fs.close()
        if source is not None and not np.array_equal(data, source):
            raise SystemExit(f"rbfs {phase} read does not equal the source voxels")
        del data
    return out


def cloudvolume_round(
    server: common.ServerProcess,
    workdir: Path,
    cfg: dict[str, Any],
    source: np.ndarray | None,
    compress_cache: bool | None = None,
) -> dict[str, Any]:
    """Cold ``vol[region]`` with cloud-volume's disk cache in a fresh dir, then warm with a fresh object.

    ``compress_cache=None`` is cloud-volume's default (gzip the cached files of raw-encoded chunks).
    """
    from cloudvolume import CloudVolume

    common.empty_dir(workdir)
    workdir.mkdir(parents=True)
    (z0, y0, x0) = cfg["start"]
    (z1, y1, x1) = (a + n for a, n in zip(cfg["start"], cfg["region"]))
    out: dict[str, Any] = {}
    for phase in ("cold", "warm"):
        vol = CloudVolume(  # fetches info (untimed, before the counters are reset)
            "precomputed://" + server.info["precomputed_url"],
            mip=0,
            cache=str(workdir / "cache"),
            compress_cache=compress_cache,
            parallel=1,
            green_threads=False,
            progress=False,
            fill_missing=False,
            lru_bytes=0,
        )
        cutout, out[phase] = _timed(server, vol.__getitem__, np.s_[x0:x1, y0:y1, z0:z1])
        # (x, y, z, c) Fortran order -> (z, y, x): a zero-copy view, outside the timed section.
        data = np.asarray(cutout)[..., 0].transpose(2, 1, 0)
        if source is not None and not np.array_equal(data, source):
            raise SystemExit(f"cloud-volume {phase} read does not equal the source voxels")
        del cutout, data, vol
    return out


CONTENDERS = {
    "rbfs": ("rbfs", rbfs_round),
    "cv": ("cloud-volume", cloudvolume_round),
    "cv_plain": (
        "cloud-volume, uncompressed cache",
        lambda *a: cloudvolume_round(*a, compress_cache=False),
    ),
}
#: Information: ours with its cache on tmpfs (when there is one): what the benchmark's file system costs us.
TMPFS_CONTENDER = ("rbfs, cache on tmpfs", "rbfs_tmpfs")


def check(result: dict[str, Any], nchunks: int, parallel: int, who: str) -> None:
    """Cold: one request per chunk, at most ``parallel`` in flight, no errors; warm: no requests at all."""
    cold, warm = result["cold"]["stats"], result["warm"]["stats"]
    if cold["chunk_requests"] != nchunks or cold["errors"]:
        raise SystemExit(f"{who}: cold read made {cold} requests for {nchunks} chunks")
    if cold["max_in_flight"] > parallel:
        raise SystemExit(f"{who}: {cold['max_in_flight']} requests in flight, more than {parallel}")
    if warm["requests"] != 0:
        raise SystemExit(f"{who}: warm read made {warm['requests']} requests (expected 0: disk cache)")


def run_variant(
    cfg: dict[str, Any], gzip: bool, repeats: int, source: np.ndarray, seed: int, nchunks: int
) -> dict[str, list[dict[str, Any]]]:
    """Every contender's rounds against one server (chunks gzip-encoded or raw)."""
    with (
        common.temp_dir("precomputed") as tmp,
        common.tmpfs_dir("precomputed") as shm,
        common.ServerProcess(
            cfg["shape"],
            latency=cfg["latency"],
            seed=seed,
            precomputed={"chunk_zyx": cfg["chunk_zyx"], "gzip": gzip},
        ) as server,
    ):
        contenders = dict(CONTENDERS)
        if shm is not None:
            name, who = TMPFS_CONTENDER
            contenders[who] = (name, lambda server, workdir, *a: rbfs_round(server, shm / workdir.name, *a))
        results: dict[str, list[dict[str, Any]]] = {who: [] for who in contenders}
        # Warm-up (untimed, but checked): imports, first connections, the server's code paths.
        for who, (name, fn) in contenders.items():
            check(fn(server, tmp / f"warmup-{who}", cfg, source), nchunks, cfg["parallel"], name)
            common.empty_dir(tmp / f"warmup-{who}")
            if shm is not None:
                common.empty_dir(shm / f"warmup-{who}")
        names = list(contenders)
        for i in range(repeats):
            # Rotate who goes first; verify every read of the first round (untimed).
            verify = source if i == 0 else None
            for who in names[i % len(names) :] + names[: i % len(names)]:
                name, fn = contenders[who]
                r = fn(server, tmp / f"{who}-{i}", cfg, verify)
                check(r, nchunks, cfg["parallel"], name)
                results[who].append(r)
                common.empty_dir(tmp / f"{who}-{i}")
                if shm is not None:
                    common.empty_dir(shm / f"{who}-{i}")
    return results


def variant_metrics(
    label: str, results: dict[str, list[dict[str, Any]]], nchunks: int
) -> list[common.Metric]:
    def series(who: str, phase: str, key: str = "seconds") -> list[float]:
        return [r[phase][key] for r in results[who]]

    kw: dict[str, Any] = {"unit": "s", "higher_is_better": False}
    metrics = [
        common.ratio_metric(
            f"{label}: cold read of {nchunks} chunks vs cloud-volume",
            series("rbfs", "cold"),
            series("cv", "cold"),
            op="<=",
            target=0.8,
            baseline_name="cloud-volume",
            **kw,
        ),
        common.ratio_metric(
            f"{label}: warm re-read (disk cache) vs cloud-volume",
            series("rbfs", "warm"),
            series("cv", "warm"),
            op="<=",
            target=0.8,
            baseline_name="cloud-volume",
            note="0 requests each",
            **kw,
        ),
        common.ratio_metric(
            f"{label}: cold client CPU vs cloud-volume (info)",
            series("rbfs", "cold", "cpu"),
            series("cv", "cold", "cpu"),
            op=None,
            target=None,
            baseline_name="cloud-volume",
            **kw,
        ),
        common.ratio_metric(
            f"{label}: cold vs cloud-volume, uncompressed cache (info)",
            series("rbfs", "cold"),
            series("cv_plain", "cold"),
            op=None,
            target=None,
            baseline_name="cv plain",
            **kw,
        ),
        common.ratio_metric(
            f"{label}: warm vs cloud-volume, uncompressed cache (info)",
            series("rbfs", "warm"),
            series("cv_plain", "warm"),
            op=None,
            target=None,
            baseline_name="cv plain",
            **kw,
        ),
    ]
    if results.get("rbfs_tmpfs"):
        metrics.append(
            common.ratio_metric(
                f"{label}: cold with our cache on tmpfs vs cloud-volume (info)",
                series("rbfs_tmpfs", "cold"),
                series("cv", "cold"),
                op=None,
                target=None,
                baseline_name="cloud-volume",
                **kw,
            )
        )
    cold, warm = metrics[0], metrics[1]
    med = statistics.median
    if cold.passed is False:
        cold.reason = (
            f"client CPU {med(series('rbfs', 'cold', 'cpu')) * 1000:.0f} ms vs cloud-volume "
            f"{med(series('cv', 'cold', 'cpu')) * 1000:.0f} ms; server CPU "
            f"{med(series('rbfs', 'cold', 'server_cpu')) * 1000:.0f} ms during ours for {nchunks} chunks; "
            f"cloud-volume caches each chunk as one file, ours makes a directory, a lock file, the block "
            f"file and STATUS.txt per block"
            + (
                f": with our cache on tmpfs ours takes {med(series('rbfs_tmpfs', 'cold')) * 1000:.0f} ms "
                f"({metrics[-1].ratio:.2f}×), client CPU "
                f"{med(series('rbfs_tmpfs', 'cold', 'cpu')) * 1000:.0f} ms"
                if results.get("rbfs_tmpfs")
                else ""
            )
        )
    if warm.passed is False:
        warm.reason = (
            f"{med(series('rbfs', 'warm')) / nchunks * 1000:.2f} ms per block for a fresh reader (open the "
            f"fileset, then per block: status, HDF5 open, read) vs cloud-volume "
            f"{med(series('cv', 'warm')) / nchunks * 1000:.2f} ms per chunk file"
        )
    return metrics


def main(argv: list[str] | None = None) -> dict:
    args = common.parse_args(__doc__, argv)
    cfg = QUICK if args.quick else FULL
    repeats = args.repeats or cfg["repeats"]
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    import cloudvolume
    from cloudvolume.datasource.precomputed.image import rx as cv_rx

    cv_default_threads = cv_rx.DEFAULT_THREADS
    cv_rx.DEFAULT_THREADS = cfg["parallel"]  # cloud-volume's download thread pool, same as our max_parallel

    seed = 6
    start, region, chunk = cfg["start"], cfg["region"], cfg["chunk_zyx"]
    if any(a % c or n % c for a, n, c in zip(start, region, chunk)):
        raise SystemExit(f"region {start}+{region} is not aligned to the chunks {chunk}")
    nchunks = int(np.prod([n // c for n, c in zip(region, chunk)]))
    source = common.make_volume(cfg["shape"], seed)[tuple(slice(a, a + n) for a, n in zip(start, region))]
    source = np.ascontiguousarray(source)

    variants = {"gzip": True, "raw": False}
    metrics: list[common.Metric] = []
    params: dict[str, Any] = {
        "volume_shape": cfg["shape"],
        "region_start": start,
        "region_shape": region,
        "chunk_zyx": chunk,
        "chunks": nchunks,
        "latency_s": cfg["latency"],
        "max_parallel": cfg["parallel"],
        "cloudvolume_threads": cfg["parallel"],
        "cloudvolume_default_threads": cv_default_threads,
        "cloudvolume_version": cloudvolume.__version__,
        "repeats": repeats,
        "variants": {},
    }
    requests_lines = []
    try:
        for label, gzip in variants.items():
            results = run_variant(cfg, gzip, repeats, source, seed, nchunks)
            metrics += variant_metrics(label, results, nchunks)
            params["variants"][label] = {
                "server_gzip": gzip,
                "seconds": {
                    f"{who}_{phase}": [round(r[phase]["seconds"], 4) for r in rs]
                    for who, rs in results.items()
                    for phase in ("cold", "warm")
                },
                "cpu_seconds": {
                    f"{who}_{phase}": [round(r[phase]["cpu"], 4) for r in rs]
                    for who, rs in results.items()
                    for phase in ("cold", "warm")
                },
                "requests_first_round": {
                    who: {phase: rs[0][phase]["stats"] for phase in ("cold", "warm")}
                    for who, rs in results.items()
                },
            }
            for who, rs in results.items():
                cold, warm = rs[0]["cold"]["stats"], rs[0]["warm"]["stats"]
                requests_lines.append(
                    f"  requests {label:<4} {dict(CONTENDERS, rbfs_tmpfs=TMPFS_CONTENDER)[who][0]:<33} "
                    f"cold {cold['requests']} "
                    f"({cold['chunk_requests']} chunks, max in flight {cold['max_in_flight']}, "
                    f"gzip accepted {cold['accept_gzip']}), warm {warm['requests']}"
                )
    finally:
        cv_rx.DEFAULT_THREADS = cv_default_threads
    entry = common.report("precomputed_peer", "6. Precomputed peer", metrics, params, args.quick)
    for line in requests_lines:
        print(line)
    return entry


if __name__ == "__main__":
    main()
