"""Benchmark — the new formats against tensorstore and cloud-volume, on the same files from the same server.

tensorstore (an independent writer) writes one random ``uint8`` volume in each format into a folder:
N5 (gzip), zarr v2 (blosc lz4), zarr v3 (gzip), zarr v3 sharded (``sharding_indexed``, gzip inner
chunks), neuroglancer precomputed unsharded (raw) and sharded (``neuroglancer_uint64_sharded_v1``, gzip).
One :class:`~lazyflow_rbfs.testing.CutoutServer`, in a separate spawned process, serves that folder as
static files with Range support and an injected latency per request. For each format, each round reads
the whole volume (chunk-aligned) with:

* **ours cold**: ``describe_source`` (untimed: the metadata) into an empty cache, then
  ``RESTfulBlockwiseFileset(desc, max_parallel=P).readData`` (timed; it includes the reader's one
  metadata request); local ``block_shape`` = the remote chunk, so both sides fetch the same chunks;
* **ours warm**: the same read by a *new* fileset object from the disk cache (the server must see no
  request);
* **tensorstore cold / warm**: ``ts.open`` with a new ``Context`` (untimed: the metadata) over the ``http``
  kvstore, ``http_request_concurrency`` P and no in-memory cache, then ``read()`` (timed); tensorstore has
  no disk cache, so its "warm" read is a second read by a new context (the server's files are in the page
  cache by then);
* **cloud-volume cold / warm** (precomputed only): ``CloudVolume`` with its disk cache in an empty
  folder, then a *new* object on the same folder (as ``bench_precomputed_peer.py``).

A format whose reader is not registered in this checkout (or that ``rbfs describe`` refuses, e.g.
sharded precomputed before it is supported) is reported as SKIPPED with the reason; rerun after merging.
Ratios are ours / peer per round (median over rounds; ≤ 1: we are faster); they are information, no
targets. Every read is compared with the source voxels in the first round (untimed).

Run: ``python bench/formats_peers.py [--quick] [--repeats N] [--latency S] [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
import numpy as np

FULL = {"shape": (128, 512, 512), "chunk": (64, 64, 64), "latency": 0.010, "parallel": 16, "repeats": 3}
QUICK = {"shape": (64, 128, 128), "chunk": (32, 64, 64), "latency": 0.010, "parallel": 16, "repeats": 1}


# ---------------------------------------------------------------------------------------------------------
# The formats: how tensorstore writes and reads each one, and what rbfs describe is given


@dataclass(frozen=True)
class Case:
    name: str
    label: str
    #: tensorstore spec (without kvstore) creating the volume, from shape and chunk (C order).
    create: Callable[[tuple[int, ...], tuple[int, ...]], dict[str, Any]]
    #: rbfs describe source from the folder's URL.
    source: Callable[[str], str]
    #: tensorstore array (as read) -> C-order (z, y, x) view.
    to_zyx: Callable[[np.ndarray], np.ndarray]
    cloudvolume: bool = False


def _xyz(shape: tuple[int, ...]) -> list[int]:
    return [int(n) for n in shape[::-1]]


def _precomputed(shape: tuple[int, ...], chunk: tuple[int, ...], sharding: dict | None) -> dict[str, Any]:
    scale: dict[str, Any] = {
        "key": "s0",
        "size": _xyz(shape),
        "voxel_offset": [0, 0, 0],
        "chunk_size": _xyz(chunk),
        "resolution": [8, 8, 8],
        "encoding": "raw",
    }
    if sharding is not None:
        scale["sharding"] = sharding
    return {
        "driver": "neuroglancer_precomputed",
        "multiscale_metadata": {"type": "image", "data_type": "uint8", "num_channels": 1},
        "scale_metadata": scale,
    }


def _sharding(shape: tuple[int, ...], chunk: tuple[int, ...]) -> dict[str, Any]:
    nchunks = int(np.prod([common.ceil_div(n, c) for n, c in zip(shape, chunk)]))
    bits = max(1, (nchunks - 1).bit_length())
    return {
        "@type": "neuroglancer_uint64_sharded_v1",
        "hash": "murmurhash3_x86_128",
        "preshift_bits": min(3, bits),
        "minishard_bits": 2,
        "shard_bits": max(0, bits - 5),
        "minishard_index_encoding": "gzip",
        "data_encoding": "gzip",
    }


def _zarr3(shape: tuple[int, ...], chunk: tuple[int, ...], sharded: bool) -> dict[str, Any]:
    inner = [{"name": "bytes"}, {"name": "gzip", "configuration": {"level": 5}}]
    if sharded:
        shard = [min(n, 2 * c) for n, c in zip(shape, chunk)]
        codecs = [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(chunk),
                    "codecs": inner,
                    "index_codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "crc32c"},
                    ],
                },
            }
        ]
        grid = shard
    else:
        codecs, grid = inner, list(chunk)
    return {
        "driver": "zarr3",
        "metadata": {
            "shape": list(shape),
            "data_type": "uint8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}},
            "codecs": codecs,
        },
    }


CASES = [
    Case(
        "n5",
        "N5 (gzip)",
        lambda shape, chunk: {
            "driver": "n5",
            "metadata": {
                "dimensions": _xyz(shape),
                "blockSize": _xyz(chunk),
                "dataType": "uint8",
                "compression": {"type": "gzip"},
            },
        },
        lambda url: f"n5://{url}",
        lambda a: a.transpose(),
    ),
    Case(
        "zarr2",
        "zarr v2 (blosc lz4)",
        lambda shape, chunk: {
            "driver": "zarr",
            "metadata": {
                "shape": list(shape),
                "chunks": list(chunk),
                "dtype": "|u1",
                "compressor": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1},
            },
        },
        lambda url: f"zarr://{url}",
        lambda a: a,
    ),
    Case(
        "zarr3", "zarr v3 (gzip)", lambda s, c: _zarr3(s, c, False), lambda url: f"zarr://{url}", lambda a: a
    ),
    Case(
        "zarr3_sharded",
        "zarr v3 sharded (gzip chunks)",
        lambda s, c: _zarr3(s, c, True),
        lambda url: f"zarr://{url}",
        lambda a: a,
    ),
    Case(
        "precomputed",
        "precomputed (raw)",
        lambda s, c: _precomputed(s, c, None),
        lambda url: f"precomputed://{url}",
        lambda a: a[..., 0].transpose(2, 1, 0),
        cloudvolume=True,
    ),
    Case(
        "precomputed_sharded",
        "precomputed sharded (gzip)",
        lambda s, c: _precomputed(s, c, _sharding(s, c)),
        lambda url: f"precomputed://{url}",
        lambda a: a[..., 0].transpose(2, 1, 0),
        cloudvolume=True,
    ),
]


def write_case(case: Case, folder: Path, volume: np.ndarray, chunk: tuple[int, ...]) -> None:
    import tensorstore as ts

    spec = case.create(volume.shape, chunk)
    spec.update(kvstore={"driver": "file", "path": str(folder)}, create=True, delete_existing=True)
    store = ts.open(spec).result()
    if case.name == "n5":
        store[...] = volume.transpose()
    elif case.name.startswith("precomputed"):
        store[...] = volume.transpose(2, 1, 0)[..., np.newaxis]
    else:
        store[...] = volume


# ---------------------------------------------------------------------------------------------------------
# The server: one CutoutServer in a spawned process, serving the folder under /files/data/


def _server_main(conn: Any, folder: str, latency: float) -> None:
    try:
        from lazyflow_rbfs.testing import CutoutServer

        server = CutoutServer(np.zeros((1, 1, 1), np.uint8), latency=latency, files={"data": folder}).start()
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", server.files_url("data")))
    try:
        while True:
            try:
                cmd = conn.recv()
            except EOFError:
                break
            if cmd == "stop":
                conn.send(("ok", None))
                break
            if cmd == "reset":
                server.reset_stats()
                conn.send(("ok", None))
            elif cmd == "stats":
                log = server.request_log
                conn.send(
                    (
                        "ok",
                        {
                            "requests": len(log),
                            "ranged": sum(1 for r in log if r.headers.get("Range")),
                            "errors": sum(1 for r in log if r.status >= 400 and r.status != 404),
                            "max_in_flight": server.max_in_flight,
                        },
                    )
                )
            else:
                conn.send(("error", f"unknown command {cmd!r}"))
    finally:
        server.close()


class FilesServer:
    def __init__(self, folder: Path, latency: float) -> None:
        self.folder, self.latency = folder, latency
        self.url = ""

    def __enter__(self) -> FilesServer:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_server_main, args=(child, str(self.folder), self.latency))
        self._proc.start()
        child.close()
        status, payload = self._conn.recv()
        if status != "ready":
            raise RuntimeError(f"the files server failed to start:\n{payload}")
        self.url = payload
        return self

    def call(self, cmd: str) -> Any:
        self._conn.send(cmd)
        status, payload = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"server command {cmd!r} failed: {payload}")
        return payload

    def __exit__(self, *exc: Any) -> None:
        try:
            self.call("stop")
        except (OSError, EOFError, RuntimeError):
            pass
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()


def _timed(server: FilesServer, read: Callable[[], np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
    server.call("reset")
    t0 = time.perf_counter()
    data = read()
    seconds = time.perf_counter() - t0
    return data, {"seconds": seconds, **server.call("stats")}


def _verify(who: str, phase: str, data: np.ndarray, source: np.ndarray | None) -> None:
    if source is not None and not np.array_equal(data, source):
        raise SystemExit(f"{who} {phase} read does not equal the source voxels")


# ---------------------------------------------------------------------------------------------------------
# Contenders


class Skipped(Exception):
    """This checkout cannot read the format (the reason is the message)."""


def ours(case: Case, server: FilesServer, url: str, work: Path, cfg: dict, source: Any) -> dict[str, Any]:
    from lazyflow_rbfs import RESTfulBlockwiseFileset
    from lazyflow_rbfs.describe import describe_source
    from lazyflow_rbfs.errors import DescriptionError
    from lazyflow_rbfs.remote import formats

    scheme = case.source(url).split("://", 1)[0]
    if not any(scheme in fmt.source_schemes for fmt in formats.registered()):
        raise Skipped(f"no reader of {scheme}:// is registered in this checkout (rerun after merging it)")
    common.empty_dir(work)
    work.mkdir(parents=True)
    try:
        desc = describe_source(case.source(url), work / "d.json", block_shape=cfg["chunk"], cache_dir="c")
    except DescriptionError as exc:
        raise Skipped(f"rbfs describe refuses it here: {exc}") from None
    shape = tuple(cfg["shape"])
    out = {}
    for phase in ("cold", "warm"):
        fs = RESTfulBlockwiseFileset(desc, max_parallel=cfg["parallel"])
        try:
            data, out[phase] = _timed(server, lambda fs=fs: fs.readData(((0, 0, 0), shape)))
        finally:
            fs.close()
        _verify("rbfs", phase, data, source)
    if out["warm"]["requests"]:
        raise SystemExit(f"rbfs warm read of {case.name} made {out['warm']['requests']} requests")
    return out


def tensorstore_round(case: Case, server: FilesServer, url: str, work: Path, cfg: dict, source: Any) -> dict:
    import tensorstore as ts

    spec = {"driver": case.create(tuple(cfg["shape"]), tuple(cfg["chunk"]))["driver"]}
    spec["kvstore"] = {"driver": "http", "base_url": url}
    out = {}
    for phase in ("cold", "warm"):
        context = ts.Context(
            {"cache_pool": {"total_bytes_limit": 0}, "http_request_concurrency": {"limit": cfg["parallel"]}}
        )
        store = ts.open(spec, context=context, read=True).result()
        data, out[phase] = _timed(server, lambda store=store: store.read().result())
        _verify("tensorstore", phase, case.to_zyx(data), source)
        del store, context
    return out


def cloudvolume_round(case: Case, server: FilesServer, url: str, work: Path, cfg: dict, source: Any) -> dict:
    from cloudvolume import CloudVolume

    common.empty_dir(work)
    work.mkdir(parents=True)
    z, y, x = cfg["shape"]
    out = {}
    for phase in ("cold", "warm"):
        vol = CloudVolume(
            f"precomputed://{url}",
            mip=0,
            cache=str(work / "cache"),
            parallel=1,
            green_threads=False,
            progress=False,
            fill_missing=False,
            lru_bytes=0,
        )
        cutout, out[phase] = _timed(server, lambda vol=vol: vol[0:x, 0:y, 0:z])
        _verify("cloud-volume", phase, np.asarray(cutout)[..., 0].transpose(2, 1, 0), source)
        del vol, cutout
    return out


# ---------------------------------------------------------------------------------------------------------
# Run


def run_case(case: Case, server: FilesServer, tmp: Path, cfg: dict, source: np.ndarray) -> dict[str, Any]:
    url = f"{server.url}/{case.name}"
    contenders: dict[str, Callable[..., dict]] = {"rbfs": ours, "tensorstore": tensorstore_round}
    if case.cloudvolume:
        try:
            import cloudvolume  # noqa: F401
        except ImportError as exc:
            print(
                f"  {case.name}: cloud-volume is not installed ({exc}); pip install -r bench/requirements.txt"
            )
        else:
            contenders["cloud-volume"] = cloudvolume_round
    rounds: dict[str, list[dict]] = {who: [] for who in contenders}
    for i in range(cfg["repeats"] + 1):  # round 0: warm-up (untimed imports, connections), verified
        names = list(contenders)
        names = names[i % len(names) :] + names[: i % len(names)]
        for who in names:
            try:
                r = contenders[who](
                    case, server, url, tmp / f"{case.name}-{who}", cfg, source if i == 0 else None
                )
            except Skipped as exc:
                return {"skipped": str(exc)}
            if i:
                rounds[who].append(r)
    return {"rounds": rounds}


def _median(rounds: list[dict], phase: str, key: str = "seconds") -> float:
    return statistics.median(r[phase][key] for r in rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per format")
    parser.add_argument("--latency", type=float, default=None, help="seconds the server adds per request")
    parser.add_argument("--only", nargs="+", choices=[c.name for c in CASES], help="only these formats")
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.repeats:
        cfg["repeats"] = args.repeats
    if args.latency is not None:
        cfg["latency"] = args.latency
    cases = [c for c in CASES if not args.only or c.name in args.only]
    try:
        import tensorstore  # noqa: F401
    except ImportError:
        print("tensorstore is not installed: pip install -r bench/requirements.txt")
        return 1
    source = common.make_volume(cfg["shape"], seed=11)
    chunk = tuple(cfg["chunk"])
    results: dict[str, dict[str, Any]] = {}
    with common.temp_dir("formats") as tmp:
        data = tmp / "data"
        for case in cases:
            write_case(case, data / case.name, source, chunk)
        with FilesServer(data, cfg["latency"]) as server:
            for case in cases:
                print(f"{case.label} ...", flush=True)
                results[case.name] = run_case(case, server, tmp / "work", cfg, source)
    return report(cases, results, cfg, args.quick)


def report(cases: list[Case], results: dict[str, dict], cfg: dict, quick: bool) -> int:
    nchunks = int(np.prod([common.ceil_div(n, c) for n, c in zip(cfg["shape"], cfg["chunk"])]))
    mib = np.prod(cfg["shape"]) / common.MiB
    print(
        f"\nwhole volume {cfg['shape']} uint8 ({mib:.0f} MiB), {nchunks} chunks of {cfg['chunk']}, latency "
        f"{cfg['latency'] * 1000:.0f} ms, {cfg['parallel']} requests in flight, median of {cfg['repeats']} "
        f"round(s); each cell: milliseconds / requests the server saw"
    )
    columns = ("ours cold", "ours warm", "ts cold", "ts warm", "cv cold", "cv warm")
    print(f"{'format':<30}" + "".join(f"{c:>15}" for c in columns))
    metrics: list[common.Metric] = []
    skipped = {}
    for case in cases:
        res = results[case.name]
        if "skipped" in res:
            skipped[case.name] = res["skipped"]
            print(f"{case.label:<30} SKIPPED: {res['skipped'][:240]}")
            continue
        rounds = res["rounds"]
        cells = []
        for who in ("rbfs", "tensorstore", "cloud-volume"):
            for phase in ("cold", "warm"):
                if who not in rounds:
                    cells.append(f"{'—':>15}")
                    continue
                secs, reqs = _median(rounds[who], phase), _median(rounds[who], phase, "requests")
                cells.append(f"{secs * 1000:9.1f} / {reqs:<3.0f}")
        print(f"{case.label:<30}" + "".join(cells))
        for peer in ("tensorstore", "cloud-volume"):
            if peer not in rounds:
                continue
            for phase in ("cold", "warm"):
                metrics.append(
                    common.ratio_metric(
                        f"{case.label}: {phase} read vs {peer}",
                        [r[phase]["seconds"] for r in rounds["rbfs"]],
                        [r[phase]["seconds"] for r in rounds[peer]],
                        op=None,
                        target=None,
                        unit="s",
                        baseline_name=peer,
                        higher_is_better=False,
                    )
                )
    print("\nratios ours / peer (≤ 1: ours faster):")
    params = dict(cfg, nchunks=nchunks, skipped=skipped)
    common.report(
        "formats_peers",
        "New formats vs tensorstore and cloud-volume (same files, same server)",
        metrics,
        params,
        quick,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
