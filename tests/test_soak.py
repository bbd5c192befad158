"""Soak: many processes and threads, a misbehaving server, kills and maintenance, all at once.

Several reader processes (each with several threads) read overlapping random rois through one cache while
the server answers with a mix of faults (503s, truncated bodies, HTML pages, wrong shapes, short stalls).
Alongside, reader processes are killed with SIGKILL mid-download, a block file is damaged by hand, and
``rbfs verify --repair`` and ``rbfs purge-locks`` run in their own processes. Every voxel any reader gets
must equal the source; at the end every cached block equals the source and nothing is left behind.

Bounded to about a minute on two cores: the run is driven by request counts, not by the clock.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from lazyflow_rbfs import RESTfulBlockwiseFileset
from lazyflow_rbfs.testing import CutoutServer, sample_volume

SHAPE = (32, 128, 96)
BLOCK = (8, 32, 32)  # 4 x 4 x 3 = 48 blocks
SEED = 11

READER = r"""
import json, random, sys, threading
import numpy as np
from lazyflow_rbfs import RESTfulBlockwiseFileset
from lazyflow_rbfs.errors import DownloadError, LockTimeoutError
from lazyflow_rbfs.testing import sample_volume

desc, seed, shape = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
reads, threads, volume_seed = (int(a) for a in sys.argv[4:7])
source = sample_volume(shape, seed=volume_seed)
wrong, failed, unexpected, good = [], [], [], [0]
lock = threading.Lock()

def run(k):
    try:
        read(k)
    except BaseException as exc:  # anything but the tolerated faults is a failure of the soak
        with lock:
            unexpected.append(repr(exc))

def read(k):
    rng = random.Random(seed * 100 + k)
    # Each thread has its own fileset half of the time, shares one otherwise.
    vol = shared if k % 2 else RESTfulBlockwiseFileset(desc, max_parallel=3, retries=1, timeout=(5, 5))
    for _ in range(reads):
        start = [rng.randrange(0, s - 1) for s in shape]
        stop = [rng.randrange(a + 1, min(s, a + 40) + 1) for a, s in zip(start, shape)]
        try:
            got = vol.readData((start, stop))
        except (DownloadError, LockTimeoutError) as exc:   # faults the retries could not absorb
            with lock:
                failed.append(type(exc).__name__)
            continue
        expected = source[tuple(slice(a, b) for a, b in zip(start, stop))]
        with lock:
            if not np.array_equal(got, expected):
                bad = got != expected
                zeros = int((got[bad] == 0).mean() * 100)  # percent of the wrong voxels that are zero
                wrong.append((start, stop, np.argwhere(bad).min(0).tolist(), zeros))
            else:
                good[0] += 1
    if vol is not shared:
        vol.close()

shared = RESTfulBlockwiseFileset(desc, max_parallel=4, retries=1, timeout=(5, 5))
print("ready", flush=True)
workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
shared.close()
print(json.dumps({"wrong": wrong, "unexpected": unexpected, "failed": len(failed), "good": good[0]}))
sys.exit(1 if wrong or unexpected else 0)
"""

FAULTS = ("status", "truncate", "html", "wrong_shape", "stall")


def _chaos(server: CutoutServer, stop: threading.Event) -> None:
    """Add one random fault after every few requests the server sees (paced by requests, not time)."""
    rng = random.Random(5)
    seen = server.requests
    while not stop.is_set():
        if not server.wait_for_requests(seen + 4, timeout=0.5):
            continue
        seen = server.requests
        kind = rng.choice(FAULTS)
        if kind == "status":
            server.faults.fail_next(rng.choice([1, 2]), status=rng.choice([500, 503]))
        elif kind == "stall":
            server.faults.stall(1, seconds=0.2)
        else:
            getattr(server.faults, kind)(1)


def _rbfs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lazyflow_rbfs", *args], capture_output=True, text=True, timeout=120
    )


def _start_reader(desc: Path, seed: int, reads: int, threads: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", READER, str(desc), str(seed), json.dumps(SHAPE)]
        + [str(reads), str(threads), str(SEED)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


@pytest.mark.timeout(300)
def test_soak_readers_faults_kills_and_maintenance(tmp_path):
    source = sample_volume(SHAPE, seed=SEED)
    with CutoutServer(source) as server:
        desc = Path(server.write_description(tmp_path / "vol.json", block_shape=BLOCK, cache_dir="cache"))
        root = tmp_path / "cache"
        stop_chaos = threading.Event()
        chaos = threading.Thread(target=_chaos, args=(server, stop_chaos), daemon=True)
        chaos.start()
        try:
            readers = [_start_reader(desc, seed, reads=40, threads=4) for seed in range(3)]
            assert server.wait_for_requests(10, timeout=60)

            # Kill readers mid-download, three times. Before each victim a few cached blocks are deleted
            # by hand (file first or STATUS.txt first), so there is something to download; the server
            # holds requests at its gate until one is in flight, then the victim dies with SIGKILL.
            rng = random.Random(3)
            for victim_seed in (100, 101, 102):
                published = sorted(root.rglob("STATUS.txt"))
                for status in rng.sample(published, k=min(3, len(published))):
                    doomed = [*status.parent.glob("*.h5"), status]
                    for path in doomed if rng.random() < 0.5 else doomed[::-1]:
                        path.unlink(missing_ok=True)
                server.pause()
                try:
                    victim = _start_reader(desc, victim_seed, reads=50, threads=3)
                    assert server.wait_for_in_flight(1, timeout=60)
                    victim.send_signal(signal.SIGKILL)
                    victim.wait(30)
                finally:
                    server.resume()

            # Damage a published block by hand, then let maintenance run alongside the readers.
            published = sorted(root.rglob("STATUS.txt"))
            if published:
                block_dir = published[len(published) // 2].parent
                for f in block_dir.glob("*.h5"):
                    f.write_bytes(b"garbage, not HDF5")
            maintenance = [_rbfs("verify", str(desc), "--repair"), _rbfs("purge-locks", str(desc))]
            for done in maintenance:
                assert done.returncode in (0, 1), done.stderr  # 1: verify found (and repaired) bad blocks
                assert "Traceback" not in done.stderr, done.stderr

            results = []
            for proc in readers:
                out, err = proc.communicate(timeout=240)
                assert proc.returncode == 0, (out, err)
                results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            stop_chaos.set()
            server.faults.clear()
            chaos.join(10)

        assert all(r["wrong"] == [] for r in results), results
        assert sum(r["good"] for r in results) > 0, results

        # The end state: stale locks purged, every trusted block equal to the source, nothing partial.
        assert _rbfs("purge-locks", str(desc)).returncode == 0
        assert list(root.rglob("*.partial")) == []
        assert list(root.rglob("*.lock")) == []
        with RESTfulBlockwiseFileset(str(desc)) as vol:
            cached = 0
            for block_start in vol.iterBlockStarts():
                if vol.getBlockStatus(block_start) != vol.BLOCK_AVAILABLE:
                    continue
                cached += 1
                where = vol.getDatasetPathComponents(block_start)
                with h5py.File(where.externalPath, "r") as f:
                    data = f[where.internalPath][()]
                region = tuple(slice(a, a + n) for a, n in zip(block_start, data.shape))
                np.testing.assert_array_equal(data, source[region], err_msg=where.externalPath)
            assert cached > 0
            report = vol.verify()
            assert report.ok, report
            np.testing.assert_array_equal(vol[...], source)
        verified = _rbfs("verify", str(desc))
        assert verified.returncode == 0, verified.stdout + verified.stderr
