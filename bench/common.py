"""Shared helpers of the benchmark suite: timing, statistics, RSS, temp dirs, a server process, results.

Every benchmark compares the package against a baseline measured in the same run on the same data, and
reports the *median* of several repeats plus the spread (min..max of the per-repeat ratios), because the
machines are shared and noisy. Results are merged into ``bench/results/latest.json`` (one entry per
benchmark) and :func:`write_markdown` renders them as the table shown in ``bench/README.md``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_JSON = RESULTS_DIR / "latest.json"
RESULTS_MD = RESULTS_DIR / "latest.md"

# The suite measures the checkout it lives in, installed or not.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

MiB = 1 << 20
GiB = 1 << 30


# ----------------------------------------------------------------------------------------------------------
# Statistics and targets
# ----------------------------------------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max, count and spread (``(max - min) / median``, in percent) of ``values``."""
    vals = [float(v) for v in values]
    med = statistics.median(vals)
    lo, hi = min(vals), max(vals)
    return {
        "median": med,
        "min": lo,
        "max": hi,
        "n": len(vals),
        "spread_pct": 100.0 * (hi - lo) / med if med else 0.0,
    }


def interleaved(
    runs: dict[str, Callable[[], float | None]],
    repeats: int,
    *,
    before_each: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Run every callable of ``runs`` once per round, ``repeats`` rounds, in turn (A B C A B C ...).

    Interleaving spreads a noisy neighbour's bursts over all contenders instead of one. A callable
    returns its own measured seconds, or ``None`` to be timed here around the call. ``before_each(name)``
    runs untimed before every call (e.g. to empty a cache directory).
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            if before_each is not None:
                before_each(name)
            t0 = time.perf_counter()
            measured = fn()
            elapsed = time.perf_counter() - t0
            times[name].append(elapsed if measured is None else float(measured))
    return times


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda v, t: v >= t,
    "<=": lambda v, t: v <= t,
}


@dataclass
class Metric:
    """One figure of a benchmark: a ratio (median and spread over repeats) checked against a target.

    ``ratio`` is oriented as the target states it: ``>=`` targets are "ours / baseline throughput",
    ``<=`` targets are "ours / baseline time (or cost)". ``ours`` and ``baseline`` are the medians of the
    raw measurements (``unit``), kept for the table. A metric with ``op=None`` is informative only.
    """

    name: str
    ratio: float
    ratio_min: float
    ratio_max: float
    op: str | None
    target: float | None
    ours: float
    baseline: float
    unit: str
    baseline_name: str
    repeats: int
    note: str = ""
    passed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Why a missed target was missed, from figures measured in the same run (printed with MISS).
    reason: str = ""

    def __post_init__(self) -> None:
        if self.op is not None and self.passed is None:
            self.passed = _OPS[self.op](self.ratio, float(self.target))

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "info"
        return "PASS" if self.passed else "MISS"

    def target_text(self) -> str:
        return "—" if self.op is None else f"{'≥' if self.op == '>=' else '≤'} {self.target:g}×"

    def line(self) -> str:
        return (
            f"  {self.name:<44} {self.ratio:7.3f}×  [{self.ratio_min:.3f}..{self.ratio_max:.3f}]  "
            f"target {self.target_text():<8} {self.verdict:<4}  "
            f"(ours {_fmt(self.ours, self.unit)}, {self.baseline_name} {_fmt(self.baseline, self.unit)}, "
            f"n={self.repeats}){'  ' + self.note if self.note else ''}"
            + (f"\n      why: {self.reason}" if self.reason and self.passed is False else "")
        )


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 10 else f"{value:.2f} s"
    if unit == "MiB/s":
        return f"{value:.0f} MiB/s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:.4g} {unit}"


def ratio_metric(
    name: str,
    ours: Sequence[float],
    baseline: Sequence[float],
    *,
    op: str | None,
    target: float | None,
    unit: str,
    baseline_name: str,
    higher_is_better: bool,
    note: str = "",
    extra: dict[str, Any] | None = None,
) -> Metric:
    """A :class:`Metric` from paired per-repeat measurements of ours and of the baseline.

    The ratio is taken per round (ours and baseline measured back to back), and its median and range are
    reported; ``higher_is_better`` says whether the raw unit is a throughput (ratio ours/baseline) or a
    cost (also ours/baseline — the target's direction says which way is good).
    """
    del higher_is_better  # the ratio is always ours / baseline; kept for readability at the call sites
    if len(ours) != len(baseline):
        raise ValueError(f"paired measurements differ in length: {len(ours)} vs {len(baseline)}")
    ratios = [o / b for o, b in zip(ours, baseline)]
    s = summarize(ratios)
    return Metric(
        name=name,
        ratio=s["median"],
        ratio_min=s["min"],
        ratio_max=s["max"],
        op=op,
        target=target,
        ours=statistics.median(ours),
        baseline=statistics.median(baseline),
        unit=unit,
        baseline_name=baseline_name,
        repeats=len(ratios),
        note=note,
        extra=extra or {},
    )


# ----------------------------------------------------------------------------------------------------------
# Environment: machine, memory, temp dirs
# ----------------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
    except (ValueError, OSError):
        pass
    versions: dict[str, str] = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        import h5py

        versions["h5py"] = h5py.__version__
        versions["hdf5"] = h5py.version.hdf5_version
    except ImportError:
        pass
    for mod in ("zarr", "requests", "urllib3"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    import importlib.metadata

    for dist in ("cloud-volume", "tensorstore"):  # the peers (not imported here: slow, heavy)
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1) if mem_gib else None,
        "os": f"{platform.system()} {platform.release()}",
        "tmp": bench_tmp_root(),
        "versions": versions,
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """Resident set size of this process now."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / MiB
    except ImportError:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MiB


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_tmp_root() -> str:
    """Where benchmark data goes: ``$RBFS_BENCH_TMP`` or the system temp dir (``/tmp``)."""
    return os.environ.get("RBFS_BENCH_TMP") or tempfile.gettempdir()


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory under :func:`bench_tmp_root`, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"rbfs-bench-{prefix}-", dir=bench_tmp_root()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def tmpfs_root() -> str | None:
    """A writable tmpfs to put a cache on for the "file system's share" figures (``/dev/shm``), or None.

    Only the cache moves there; the server, the data and the client are the same. The difference between
    a fill on the benchmark's file system and one on tmpfs is what that file system costs.
    """
    candidate = "/dev/shm"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            tmpfs = any(line.split()[1:3] == [candidate, "tmpfs"] for line in mounts)
    except OSError:
        return None
    return candidate if tmpfs and os.access(candidate, os.W_OK) else None


@contextmanager
def tmpfs_dir(prefix: str) -> Iterator[Path | None]:
    """A fresh directory on :func:`tmpfs_root` (None without one), removed afterwards."""
    root = tmpfs_root()
    if root is None:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix=f"rbfs-bench-{prefix}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def inode_cost(root: Path, n: int = 256) -> dict[str, float]:
    """CPU microseconds the file system under ``root`` spends to create one directory and one empty file
    (means of ``n`` each, created as a cache creates them: a new directory, then a file in it); the
    files are removed afterwards. On ext4 without a journal, inode allocation scans the inode bitmap past
    recently deleted inodes, and costs vary from tens of microseconds to a millisecond."""
    work = Path(tempfile.mkdtemp(prefix="rbfs-bench-inodes-", dir=root))
    dirs: list[float] = []
    files: list[float] = []
    try:
        for i in range(n):
            leaf = work / f"d{i:06d}"
            c0 = cpu_seconds()
            os.mkdir(leaf)
            c1 = cpu_seconds()
            os.close(os.open(leaf / "f", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
            c2 = cpu_seconds()
            dirs.append(c1 - c0)
            files.append(c2 - c1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # getrusage counts in ticks on some kernels: a mean over many is meaningful, a median may be 0.
    return {"mkdir_us": 1e6 * statistics.fmean(dirs), "create_us": 1e6 * statistics.fmean(files)}


#: Inodes a cold publish creates per block: its directory (one per block in the upstream layout), the lock
#: file, the block file and ``STATUS.txt``.
INODES_PER_BLOCK = {"directories": 1, "files": 3}


def inode_cpu_per_block_us(cost: dict[str, float]) -> float:
    return INODES_PER_BLOCK["directories"] * cost["mkdir_us"] + INODES_PER_BLOCK["files"] * cost["create_us"]


def empty_dir(path: Path) -> None:
    """Remove ``path`` and everything in it (if present)."""
    shutil.rmtree(path, ignore_errors=True)


def make_volume(shape: Sequence[int], seed: int = 0, kind: str = "random") -> np.ndarray:
    """Deterministic benchmark data: uniform random ``uint8`` (``kind="random"``) or zeros (``"zeros"``).

    Random bytes are the worst case for any codec and make misplaced blocks visible in checksums.
    """
    shape = tuple(int(s) for s in shape)
    if kind == "zeros":
        return np.zeros(shape, dtype=np.uint8)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def block_grid(shape: Sequence[int], block: Sequence[int]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(start, stop)`` of every block of a regular grid, C order, clipped to ``shape``."""
    import itertools

    ranges = [range(0, s, b) for s, b in zip(shape, block)]
    return [
        (tuple(start), tuple(min(a + b, s) for a, b, s in zip(start, block, shape)))
        for start in itertools.product(*ranges)
    ]


def write_description_offline(
    path: Path, shape: Sequence[int], block_shape: Sequence[int], cache_dir: str
) -> str:
    """A composite description of a (not running) cutout server volume of ``shape`` ``uint8``.

    Uses :meth:`CutoutServer.write_description`, so the JSON is exactly what the package writes; the
    server only binds a port and is closed without serving (the warm benchmarks never download).
    """
    from lazyflow_rbfs.testing import CutoutServer

    fake = np.broadcast_to(np.uint8(0), tuple(int(s) for s in shape))
    server = CutoutServer(fake)
    try:
        return server.write_description(path, block_shape=block_shape, cache_dir=cache_dir)
    finally:
        server.close()


# ----------------------------------------------------------------------------------------------------------
# The cutout server in its own process
# ----------------------------------------------------------------------------------------------------------


def _server_main(conn: Any, spec: dict[str, Any]) -> None:
    """Child process: serve a volume with :class:`CutoutServer`, answer commands over ``conn``."""
    try:
        from lazyflow_rbfs.testing import CutoutServer
        from lazyflow_rbfs.testing import server as server_module

        backlog = os.environ.get("RBFS_BENCH_SERVER_BACKLOG")
        if backlog:  # what-if knob for diagnosis only (listen backlog); see README "Findings"
            server_module._HTTPServer.request_queue_size = int(backlog)
        volume = make_volume(spec["shape"], spec.get("seed", 0), spec.get("kind", "random"))
        apis: dict[str, Any] = {}
        if spec.get("precomputed"):
            from lazyflow_rbfs.testing import PrecomputedSettings

            chunk_z, chunk_y, chunk_x = spec["precomputed"]["chunk_zyx"]
            apis["precomputed"] = PrecomputedSettings(
                chunk_xyz=(chunk_x, chunk_y, chunk_z), scales=1, gzip=spec["precomputed"]["gzip"]
            )
        server = CutoutServer(volume, latency=spec.get("latency", 0.0), **apis).start()
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    info = {
        "url_format": server.url_format,
        "axes": server.axes,
        "url_axes": server.url_axes,
        "shape": server.shape,
        "origin_offset": server.origin_offset,
        "dataset": server.dataset_name,
        "pid": os.getpid(),
    }
    if spec.get("precomputed"):
        info["precomputed_url"] = server.precomputed_url
        info["precomputed_info"] = server.precomputed_info()
    conn.send(("ready", info))
    try:
        while True:
            try:
                cmd, *args = conn.recv()
            except EOFError:
                break
            try:
                if cmd == "stop":
                    conn.send(("ok", None))
                    break
                if cmd == "stats":
                    log = server.request_log
                    reply = {
                        "requests": server.requests,
                        "max_in_flight": server.max_in_flight,
                        "bytes_sent": server.bytes_sent,
                        "in_flight": server.in_flight,
                        "errors": sum(1 for r in log if r.status != 200),
                        # precomputed: chunk requests (not the info file), and who asked for gzip
                        "chunk_requests": sum(1 for r in log if not r.path.endswith("/info")),
                        "accept_gzip": sum(1 for r in log if "gzip" in r.headers.get("Accept-Encoding", "")),
                    }
                elif cmd == "reset":
                    server.reset_stats()
                    reply = None
                elif cmd == "describe":
                    path, kwargs = args
                    reply = server.write_description(path, **kwargs)
                elif cmd == "latency":
                    server.latency = float(args[0])
                    reply = None
                elif cmd == "wait_requests":
                    n, timeout = args
                    ok = server.wait_for_requests(n, timeout)
                    reply = (ok, time.monotonic())
                elif cmd == "cpu":
                    reply = cpu_seconds()
                else:
                    raise ValueError(f"unknown server command {cmd!r}")
                conn.send(("ok", reply))
            except Exception:  # report to the parent, keep serving
                conn.send(("error", traceback.format_exc()))
    finally:
        server.close()


class ServerProcess:
    """A :class:`~lazyflow_rbfs.testing.CutoutServer` running in a separate (spawned) process.

    The server's CPU is then not charged to the client being measured. Talk to it with :meth:`call`
    (``"stats"``, ``"reset"``, ``"describe"``, ``"latency"``, ``"wait_requests"``, ``"cpu"``), from one
    thread at a time.

    Parameters
    ----------
    shape
        Volume shape (``zyx``, ``uint8``); the data is :func:`make_volume` ``(shape, seed, kind)``.
    latency
        Seconds the server waits before answering each request.
    precomputed
        ``{"chunk_zyx": (z, y, x), "gzip": bool}`` to serve neuroglancer precomputed too (one scale);
        ``info`` then holds ``precomputed_url`` and ``precomputed_info``.
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        latency: float = 0.0,
        seed: int = 0,
        kind: str = "random",
        precomputed: dict[str, Any] | None = None,
    ) -> None:
        self.spec = {
            "shape": tuple(int(s) for s in shape),
            "latency": latency,
            "seed": seed,
            "kind": kind,
            "precomputed": precomputed,
        }
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Any = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> ServerProcess:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_server_main, args=(child, self.spec), name="rbfs-bench-server")
        self._proc.start()
        child.close()
        self._conn = parent
        status, payload = self._conn.recv()
        if status != "ready":
            self.__exit__(None, None, None)
            raise RuntimeError(f"the benchmark server failed to start:\n{payload}")
        self.info = payload
        return self

    def call(self, cmd: str, *args: Any) -> Any:
        self._conn.send((cmd, *args))
        status, payload = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"server command {cmd!r} failed:\n{payload}")
        return payload

    def describe(self, path: Path, **kwargs: Any) -> str:
        """Write a composite description (``CutoutServer.write_description``) at ``path``."""
        return self.call("describe", str(path), kwargs)

    def url(self, start: Sequence[int], stop: Sequence[int]) -> str:
        """Cutout URL of volume region ``[start, stop)``."""
        values = {}
        for axis, a, b, o in zip(self.info["axes"], start, stop, self.info["origin_offset"]):
            values[f"{axis}_start"], values[f"{axis}_stop"] = int(a) + o, int(b) + o
        return self.info["url_format"].format(**values)

    def __exit__(self, *exc: Any) -> None:
        if self._proc is None:
            return
        try:
            if self._proc.is_alive():
                self.call("stop")
        except (OSError, EOFError, RuntimeError):
            pass
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()
        if self._conn is not None:
            self._conn.close()
        self._proc = None


# ----------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------


def report(benchmark: str, title: str, metrics: list[Metric], params: dict[str, Any], quick: bool) -> dict:
    """Print ``metrics`` and merge them into ``bench/results/latest.json``; return the entry."""
    print(f"{title}  ({'quick' if quick else 'full'})")
    for m in metrics:
        print(m.line())
    entry = {
        "title": title,
        "quick": quick,
        "params": params,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "metrics": [asdict(m) | {"verdict": m.verdict, "target_text": m.target_text()} for m in metrics],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {}
    if RESULTS_JSON.exists():
        try:
            data = json.loads(RESULTS_JSON.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
    data["machine"] = machine_info()
    entry["load_average"] = [round(x, 2) for x in os.getloadavg()]  # how busy the machine was
    loads = " ".join(str(x) for x in entry["load_average"])
    print(f"  (load average at the end: {loads} on {os.cpu_count()} cores)")
    data.setdefault("benchmarks", {})[benchmark] = entry
    tmp = RESULTS_JSON.with_suffix(".json.partial")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, RESULTS_JSON)
    return entry


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)


ORDER = [
    "warm_read",
    "cold_fill",
    "contention",
    "scale",
    "cpu_per_byte",
    "precomputed_peer",
    "distributed",
    "tensorstore_peer",
]


def write_markdown(path: Path = RESULTS_MD) -> str:
    """Render ``latest.json`` as a Markdown table (written to ``path``, returned)."""
    data = json.loads(RESULTS_JSON.read_text(encoding="utf-8"))
    m = data.get("machine", {})
    v = m.get("versions", {})
    lines = [
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB RAM, {m.get('os')}; "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + f"; data under {m.get('tmp')}.",
        "",
        "| benchmark | figure | ratio (median) | spread (min..max) | target | verdict | ours (median) "
        "| baseline (median) | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    benches = data.get("benchmarks", {})
    for key in sorted(benches, key=lambda k: ORDER.index(k) if k in ORDER else 99):
        entry = benches[key]
        mode = " (quick)" if entry.get("quick") else ""
        for met in entry["metrics"]:
            lines.append(
                f"| {entry['title']}{mode} | {met['name']} | {met['ratio']:.3f}× | "
                f"{met['ratio_min']:.3f}..{met['ratio_max']:.3f} | {met['target_text']} | "
                f"**{met['verdict']}** | {_fmt(met['ours'], met['unit'])} | "
                f"{met['baseline_name']}: {_fmt(met['baseline'], met['unit'])} | {met['repeats']} |"
            )
    why = [
        f"* {entry['title']}: {met['name']}: {met['reason']}"
        for entry in benches.values()
        for met in entry["metrics"]
        if met["verdict"] == "MISS" and met.get("reason")
    ]
    if why:
        lines += ["", "Why the misses were missed (measured in the same run):", "", *why]
    loads = [f"{e['title']} {e['load_average'][0]}" for e in benches.values() if e.get("load_average")]
    if loads:
        lines += ["", "Load average (1 min) at the end of each benchmark: " + ", ".join(loads) + "."]
    text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return text


def parse_args(doc: str | None, argv: Sequence[str] | None = None) -> Any:
    """The command line every benchmark script shares: ``--quick`` and ``--repeats N``."""
    import argparse

    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few seconds")
    parser.add_argument(
        "--repeats", type=int, default=None, help="repeats per measurement (default: per script)"
    )
    return parser.parse_args(argv)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
