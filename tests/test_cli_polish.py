"""Issue 14: progress, counts and rough edges of the ``rbfs`` command line.

CLI behaviour is tested through the real ``rbfs`` process (``python -m lazyflow_rbfs`` with this checkout on
PYTHONPATH) against a real :class:`CutoutServer` on 127.0.0.1; progress bars through a pseudo-terminal
(the process sees a terminal on stderr, as a user's shell gives it) or through the ``progress`` option.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import shlex
import signal
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from lazyflow_rbfs.cache import ProgressBar, RESTfulBlockwiseFileset
from lazyflow_rbfs.errors import DownloadError
from lazyflow_rbfs.remote.http import HttpClient
from lazyflow_rbfs.testing import CutoutServer, sample_volume

REPO = Path(__file__).resolve().parents[1]
SHAPE = (16, 64, 64)
BLOCK = (8, 32, 32)  # 8 blocks
NBLOCKS = 8


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONWARNINGS", None)
    env["COLUMNS"] = "150"
    return env


def rbfs(*argv: object, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real ``rbfs`` process; stdout and stderr are pipes (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "lazyflow_rbfs", *map(str, argv)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=str(REPO),
        timeout=timeout,  # hang guard
    )


def rbfs_on_a_terminal(*argv: object, timeout: float = 120) -> tuple[int, str, str]:
    """Run ``rbfs`` with stderr on a pseudo-terminal (150 columns); return (status, stdout, terminal text)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lazyflow_rbfs", *map(str, argv)],
            stdout=subprocess.PIPE,
            stderr=slave,
            stdin=subprocess.DEVNULL,
            env=_env(),
            cwd=str(REPO),
        )
        os.close(slave)
        slave = -1
        out, _ = proc.communicate(timeout=timeout)
        reader.join(timeout=timeout)
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


@pytest.fixture
def volume() -> np.ndarray:
    return sample_volume(SHAPE)


@pytest.fixture
def served(tmp_path, volume):
    with CutoutServer(volume) as server:
        path = tmp_path / "volume.json"
        server.write_description(path, block_shape=BLOCK, cache_dir="cache")
        yield server, str(path)


# ---------------------------------------------------------------- progress


def test_progress_bar_shows_failures_and_speed():
    shown = io.StringIO()
    received = [0]
    with ProgressBar(10, bytes_received=lambda: received[0], file=shown) as bar:
        received[0] = 5_000_000
        bar.set(3, failed=0)
        assert "failed" not in bar.postfix() and "MB/s" in bar.postfix()
        bar.set(4, failed=2)
        assert bar.done == 4 and bar.failed == 2
        assert "failed=2" in bar.postfix()
        tick = bar.section(6)  # a second prefetch counted on the same bar
        tick(6, 1)
    text = shown.getvalue()
    assert "10/10" in text and "failed=3" in text and "MB/s" in text


def test_a_prefetch_counts_failures_on_a_bar_it_is_given(served):
    server, path = served
    server.faults.fail_next(2, status=404)  # 404 is not retried: two blocks fail
    shown = io.StringIO()
    with RESTfulBlockwiseFileset(path, max_parallel=1, retries=0) as fs:
        with ProgressBar(NBLOCKS, bytes_received=lambda: fs.remote.stats.bytes_received, file=shown) as bar:
            report = fs.downloadAllBlocks(progress=bar, raise_on_failure=False, max_failures=0)
        assert len(report.failed) == 2
        assert bar.done == NBLOCKS and bar.failed == 2
    assert "failed=2" in shown.getvalue()


def test_read_shows_a_bar_on_a_terminal_and_not_with_no_progress(served, tmp_path, volume):
    _, path = served
    code, out, term = rbfs_on_a_terminal("read", path, "--roi", ":,:,:", "-o", tmp_path / "a.npy")
    assert code == 0, term
    assert f"{NBLOCKS}/{NBLOCKS}" in term and "MB/s" in term
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), volume)
    code, out, term = rbfs_on_a_terminal(
        "read", path, "--roi", ":,:,:", "-o", tmp_path / "b.npy", "--no-progress"
    )
    assert code == 0, term
    assert "/8" not in term and "MB/s" not in term


def test_export_shows_a_bar_when_asked(served, tmp_path):
    _, path = served
    proc = rbfs("export", path, "--roi", "0:8,:,:", "-o", tmp_path / "e.h5", "--progress")
    assert proc.returncode == 0, proc.stderr
    assert "4/4" in proc.stderr  # tqdm's bar, on stderr
    proc = rbfs("export", path, "--roi", "8:16,:,:", "-o", tmp_path / "f.h5")
    assert proc.returncode == 0, proc.stderr
    assert "4/4" not in proc.stderr  # not a terminal, not asked


def test_prefetch_bar_on_a_terminal_shows_failures(served):
    server, path = served
    server.faults.fail_matching("/hdf5/", status=503)
    code, out, term = rbfs_on_a_terminal("prefetch", path, "--retries", "0", "--max-failures", "0")
    assert code == 1
    assert f"failed={NBLOCKS}" in term
    assert "MB/s" in term


# ---------------------------------------------------------------- counts


def test_http_stats_count_attempts_and_retry_causes(served):
    server, path = served
    server.faults.fail_next(2, status=503)
    server.faults.fail_next(1, status=429)
    with RESTfulBlockwiseFileset(path, max_parallel=1, retries=3) as fs:
        fs.downloadAllBlocks(progress=False)
        stats = fs.remote.stats
    assert stats.requests == NBLOCKS
    assert stats.attempts == NBLOCKS + 3 == server.requests
    assert stats.retry_causes == {"HTTP 503": 2, "HTTP 429": 1}
    assert stats.retried == 3


def test_http_stats_count_retries_of_requests_that_failed_in_the_end(served):
    server, _ = served
    server.faults.fail_matching("/hdf5/", status=502)
    with HttpClient(retries=2, backoff=0) as client:
        with pytest.raises(DownloadError, match="502"):
            client.get(server.url + "/hdf5/whatever")
        stats = client.stats
    assert (stats.requests, stats.attempts, stats.errors) == (1, 3, 1)
    assert stats.retry_causes == {"HTTP 502": 2}
    assert stats.retries == 0  # (kept as before: retries of GETs that succeeded)


def test_http_stats_count_timeouts_and_connection_failures():
    import socket

    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        with HttpClient(retries=1, backoff=0, timeout=(5, 0.3)) as client:
            with pytest.raises(TimeoutError):
                client.get(url)
            assert client.stats.retry_causes == {"timeout": 1}
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/x"
    with HttpClient(retries=1, backoff=0) as client:
        with pytest.raises(OSError):
            client.get(url)
        assert client.stats.retry_causes == {"connection": 1}


def test_prefetch_summary_reports_attempts_retries_and_causes(served):
    server, path = served
    server.faults.fail_next(3, status=503)
    proc = rbfs("prefetch", path, "-j", "1", "--retries", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert f"{NBLOCKS} GETs, {NBLOCKS + 3} attempts (3 retries: 3 after HTTP 503)" in proc.stdout


def test_prefetch_failure_text_is_printed_once(served):
    server, path = served
    server.faults.fail_matching("/hdf5/", status=503)
    proc = rbfs("prefetch", path, "--retries", "0", "--no-progress")
    assert proc.returncode == 1
    both = proc.stdout + proc.stderr
    assert both.count("failed with HTTP status 503") == 1, both
    assert "8 failed (8 DownloadError)" in proc.stdout
    assert "8 GETs, 8 attempts (0 retries), 8 failed" in proc.stdout


def test_batch_size_without_scheduler_is_a_usage_error(served):
    server, path = served
    proc = rbfs("prefetch", path, "--batch-size", "4", "--no-progress")
    assert proc.returncode == 2
    assert "--batch-size needs --scheduler" in proc.stderr
    assert server.requests == 0


# ---------------------------------------------------------------- read into HDF5


def test_read_refuses_to_drop_other_datasets_and_adds_with_add(served, tmp_path, volume):
    _, path = served
    out = tmp_path / "out.h5"
    assert rbfs("read", path, "--roi", "0:8,:,:", "-o", out).returncode == 0
    proc = rbfs("read", path, "--roi", "8:16,:,:", "-o", out, "--dataset", "second")
    assert proc.returncode == 2
    assert "--add" in proc.stderr and "data" in proc.stderr
    with h5py.File(out, "r") as f:
        assert list(f) == ["data"]  # untouched
    proc = rbfs("read", path, "--roi", "8:16,:,:", "-o", out, "--dataset", "second", "--add")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["data"][...], volume[0:8])
        np.testing.assert_array_equal(f["second"][...], volume[8:16])
    # the same dataset again replaces it (no other datasets: no --add needed for a single-dataset file)
    single = tmp_path / "single.h5"
    assert rbfs("read", path, "--roi", "0:1,:,:", "-o", single).returncode == 0
    assert rbfs("read", path, "--roi", "1:3,:,:", "-o", single).returncode == 0
    with h5py.File(single, "r") as f:
        np.testing.assert_array_equal(f["data"][...], volume[1:3])


def test_read_add_keeps_the_file_when_the_download_fails(served, tmp_path, volume):
    server, path = served
    out = tmp_path / "out.h5"
    with h5py.File(out, "w") as f:
        f["keep"] = np.arange(10)
    before = out.read_bytes()
    server.faults.fail_matching("/hdf5/", status=503)
    proc = rbfs("read", path, "--roi", ":,:,:", "-o", out, "--add", "--retries", "0", "--no-progress")
    assert proc.returncode == 1
    assert "was not written" in proc.stderr
    assert out.read_bytes() == before  # nothing lost, nothing half-written
    assert {p.name for p in tmp_path.iterdir()} <= {"volume.json", "out.h5", "cache"}  # no temp file left


def test_read_add_needs_an_existing_hdf5_file(served, tmp_path):
    _, path = served
    proc = rbfs("read", path, "--roi", "0:1,:,:", "-o", tmp_path / "new.h5", "--add")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = rbfs("read", path, "--roi", "0:1,:,:", "-o", tmp_path / "x.npy", "--compression", "gzip")
    assert proc.returncode == 2 and "HDF5 outputs only" in proc.stderr


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_read_compression_writes_chunked_compressed_output(served, tmp_path, volume, compression):
    _, path = served
    out = tmp_path / "c.h5"
    proc = rbfs("read", path, "--roi", ":,:,:", "-o", out, "--compression", compression)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out, "r") as f:
        d = f["data"]
        assert d.compression == compression
        assert d.chunks == (16, 64, 64)  # the output's own chunks (<= 64 per axis), not the cache blocks
        np.testing.assert_array_equal(d[...], volume)
        assert d.attrs["axes"] == "zyx"


def test_output_chunks_are_sensible():
    from lazyflow_rbfs.cli.commands.read import output_chunks

    assert output_chunks((1000, 2048, 2048)) == (64, 64, 64)
    assert output_chunks((5, 3, 100, 200, 300)) == (1, 1, 64, 64, 64)
    assert output_chunks((10,)) == (10,)


# ---------------------------------------------------------------- export


def test_export_single_hdf5_takes_a_file_path(served, tmp_path, volume):
    _, path = served
    out = tmp_path / "exported.h5"
    proc = rbfs("export", path, "--roi", "2:10,5:40,0:64", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "exported.h5", "volume.json"]
    with h5py.File(out, "r") as f:
        (name,) = list(f)
        np.testing.assert_array_equal(f[name][...], volume[2:10, 5:40, 0:64])
    # a directory still works (upstream naming), with a note saying how to choose the name
    directory = tmp_path / "dir"
    directory.mkdir()
    proc = rbfs("export", path, "--roi", "0:8,:,:", "-o", directory)
    assert proc.returncode == 0, proc.stderr
    assert "note:" in proc.stderr and "file path" in proc.stderr
    assert len(list(directory.iterdir())) == 1


def test_export_to_a_file_in_a_missing_directory_is_a_usage_error(served, tmp_path):
    _, path = served
    proc = rbfs("export", path, "--roi", "0:8,:,:", "-o", tmp_path / "nope" / "e.h5")
    assert proc.returncode == 2 and "does not exist" in proc.stderr


# ---------------------------------------------------------------- numpy semantics of vol[...]


def test_getitem_clips_and_selects_empty_arrays_like_numpy(served, volume):
    from lazyflow_rbfs.errors import OutOfBoundsError

    server, path = served
    with RESTfulBlockwiseFileset(path) as vol:
        np.testing.assert_array_equal(vol[0:100], volume[0:100])  # clipped: 16 planes
        np.testing.assert_array_equal(vol[10:100, 60:, -3:], volume[10:100, 60:, -3:])
        assert server.requests > 0
        before = server.requests
        for key in [np.s_[0:0], np.s_[5:3], np.s_[100:200], np.s_[2, 0:0, :], np.s_[..., 64:70]]:
            got = vol[key]
            assert got.shape == volume[key].shape, key
            assert got.dtype == volume.dtype
        assert server.requests == before  # nothing to read for an empty selection
        with pytest.raises(TypeError, match="step -1"):
            vol[::-1]
        with pytest.raises(TypeError):
            vol[[0, 1]]
        with pytest.raises(TypeError):
            vol[np.array([True, False])]
        with pytest.raises(OutOfBoundsError):
            vol[16]
        with pytest.raises(OutOfBoundsError):  # readData stays strict
            vol.readData(((0, 0, 0), (100, 64, 64)))
        with pytest.raises(OutOfBoundsError):
            vol.readData(((0, 0, 0), (0, 64, 64)))


# ---------------------------------------------------------------- misspelled description keys


def _with_key(path: str, where: str | None, key: str, value: object) -> dict:
    import json

    with open(path) as f:
        doc = json.load(f)
    (doc if where is None else doc[where])[key] = value
    with open(path, "w") as f:
        json.dump(doc, f)
    return doc


def test_a_misspelled_key_warns_with_the_field_it_probably_meant(served, caplog):
    from lazyflow_rbfs.cache import RESTfulBlockwiseFileset as R
    from lazyflow_rbfs.description import schema

    _, path = served
    _with_key(path, "remote_description", "origin_offest", [1, 2, 3])
    _with_key(path, "local_description", "## view_origin", "a comment near a field name: silent")
    _with_key(path, "local_description", "something_else_entirely", 1)
    schema._warned_misspellings.clear()
    with caplog.at_level("WARNING", logger="lazyflow_rbfs.description"):
        desc = R.readDescription(path)
    assert list(desc.remote_description.origin_offset) == [0, 0, 0]  # still ignored (upstream rules)
    messages = [r.getMessage() for r in caplog.records if "did you mean" in r.getMessage()]
    assert len(messages) == 1, messages
    assert "remote_description.origin_offest" in messages[0]
    assert "remote_description.origin_offset" in messages[0]


def test_probable_field():
    from lazyflow_rbfs.description.schema import edit_distance, probable_field

    fields = ["origin_offset", "bounds", "url_format", "dtype", "axes", "block_shape", "view_origin"]
    assert edit_distance("origin_offest", "origin_offset") == 1  # a swap counts once
    assert probable_field("origin_offest", fields) == "origin_offset"
    assert probable_field("bound", fields) == "bounds"
    assert probable_field("block_shap", fields) == "block_shape"
    assert probable_field("axis", fields) == "axes"
    assert probable_field("## bounds", fields) is None
    assert probable_field("description", fields) is None
    assert probable_field("dtyp", fields) == "dtype"
    assert probable_field("xyz", fields) is None  # too short to tell


def test_rbfs_info_shows_the_misspelling_warning(served):
    _, path = served
    _with_key(path, "local_description", "view_orign", [0, 0, 0])
    proc = rbfs("info", path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("did you mean 'local_description.view_origin'") == 1, proc.stderr


# ---------------------------------------------------------------- describe errors


def test_describe_404_names_the_url_and_what_was_expected(tmp_path, volume):
    with CutoutServer(volume) as server:
        # A format named by its prefix is probed: the failed metadata request is the error.
        proc = rbfs(
            "describe",
            "precomputed://" + server.url + "/nothing",
            "-o",
            tmp_path / "d.json",
            "--retries",
            "0",
        )
        # A plain location is looked at for each format's metadata file: none there says what was looked for.
        plain = rbfs("describe", server.url + "/nothing", "-o", tmp_path / "p.json", "--retries", "0")
        boss = rbfs(
            "describe", "boss://a/b/c", "--boss-url", server.url, "-o", tmp_path / "b.json", "--retries", "0"
        )
    assert plain.returncode == 2
    (line,) = [x for x in plain.stderr.splitlines() if x.strip()]
    assert f"found no volume at {server.url}/nothing" in line
    assert "'info' (neuroglancer precomputed)" in line and "'attributes.json'" in line and "<" not in line
    assert proc.returncode == 1
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert f"GET {server.url}/nothing/info not found (HTTP 404)" in line
    assert "'info' file" in line and "folder that holds 'info'" in line
    assert "url_format" not in line  # there is no description yet
    assert "<" not in line  # no HTML page pasted in
    assert boss.returncode == 1
    assert "not found (HTTP 404)" in boss.stderr and "Boss API" in boss.stderr
    assert "url_format" not in boss.stderr and "<" not in boss.stderr
    assert not (tmp_path / "d.json").exists() and not (tmp_path / "b.json").exists()


# ---------------------------------------------------------------- small ones


def test_purge_locks_counts_leftover_rbfs_lock_files(served, tmp_path):
    _, path = served
    assert rbfs("prefetch", path, "--no-progress").returncode == 0
    leftovers = []
    for directory in sorted({p.parent for p in (tmp_path / "cache").rglob("STATUS.txt")})[:6]:
        lock = directory / ".rbfs.lock"  # what a killed process leaves (its OS lock died with it)
        lock.write_bytes(b"")
        leftovers.append(lock)
    proc = rbfs("purge-locks", path)
    assert proc.returncode == 0, proc.stderr
    assert "removed 6 " in proc.stdout
    assert not any(p.exists() for p in leftovers)
    proc = rbfs("purge-locks", path)
    assert "removed 0 " in proc.stdout


def _serve_until_ready(*argv: object, terminal: bool = False):
    """Start ``rbfs serve`` (stderr on a pseudo-terminal if asked); return (proc, stdout lines, master fd)."""
    master = slave = -1
    if terminal:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lazyflow_rbfs", "serve", *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=slave if terminal else subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        env=_env(),
        cwd=str(REPO),
    )
    if terminal:
        os.close(slave)
    lines = []
    for line in proc.stdout:  # the server prints "press Ctrl-C to stop" once it serves
        lines.append(line)
        if "Ctrl-C" in line:
            break
    return proc, lines, master


def _stop(proc) -> None:
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)


def test_serve_boss_prints_the_source_and_boss_url_for_describe(tmp_path):
    proc, lines, _ = _serve_until_ready("--shape", "8,64,64", "--format", "boss")
    try:
        text = "".join(lines)
        (url,) = [line.split(" at ", 1)[1].strip() for line in lines if line.startswith("serving ")]
        assert f"boss: boss://sample/em/image --boss-url {url}" in text
        (hint,) = [line for line in lines if line.startswith("try: ")]
        command = shlex.split(hint[len("try: ") :].replace("-o boss.json", f"-o {tmp_path / 'boss.json'}"))
        described = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=120)
        assert described.returncode == 0, described.stderr
        assert (tmp_path / "boss.json").exists()
    finally:
        _stop(proc)


def test_serve_shows_progress_while_it_builds_the_sample_volume():
    proc, lines, master = _serve_until_ready("--shape", "64,256,256", terminal=True)
    try:
        assert lines[0].startswith("building the sample volume 64 x 256 x 256 uint8")
        assert any(line.startswith("serving ") for line in lines)
        shown = b""
        while b"64/64" not in shown:  # the bar has been drawn completely before the server printed
            assert select.select([master], [], [], 60)[0], shown  # hang guard
            chunk = os.read(master, 65536)
            assert chunk, shown
            shown += chunk
        assert b"building" in shown and b"plane" in shown
    finally:
        _stop(proc)
        os.close(master)


def test_sample_volume_reports_progress_by_plane():
    calls = []
    from lazyflow_rbfs.testing import volumes

    volume = volumes.sample_volume((300, 128, 128), progress=lambda done, total: calls.append((done, total)))
    assert len(calls) > 1 and calls[-1] == (300, 300)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    np.testing.assert_array_equal(volume, sample_volume((300, 128, 128)))


def test_demo_closing_lines_run_as_printed(tmp_path):
    proc = rbfs("demo", "--dir", tmp_path / "demo", "--shape", "8,64,64", "--block-shape", "4,32,32")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    i = lines.index("the server has stopped, but every block is cached: these work offline now")
    status_line = lines[i + 2].strip()
    command = shlex.split(status_line)
    assert command[:3] == [sys.executable, "-m", "lazyflow_rbfs"]  # not a bare 'rbfs' off an inactive venv
    env = _env()
    env["PATH"] = "/usr/bin:/bin"  # as in a shell where the venv is not activated
    ran = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "available" in ran.stdout


def test_rbfs_command_names_the_script_that_runs(tmp_path):
    script = tmp_path / "bin" / "rbfs"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable}\nimport sys\nfrom lazyflow_rbfs.cli.dev import rbfs_command\n"
        "print(rbfs_command())\n"
    )
    script.chmod(0o755)
    env = _env()
    env["PATH"] = "/usr/bin:/bin"
    out = subprocess.run([str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == str(script), out.stderr
    env["PATH"] = f"{script.parent}:/usr/bin:/bin"
    out = subprocess.run(["rbfs"], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "rbfs", out.stderr


def test_to_dask_without_the_extra_says_what_to_install(served):
    _, path = served
    code = (
        "import sys\n"
        "sys.modules['dask'] = None  # as if the distributed extra were not installed\n"
        "from lazyflow_rbfs.cache import RESTfulBlockwiseFileset\n"
        f"fs = RESTfulBlockwiseFileset({path!r})\n"
        "try:\n"
        "    fs.to_dask()\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'lazyflow_rbfs[distributed]'" in proc.stdout


# ---------------------------------------------------------------- help


def test_every_option_of_every_command_has_help():
    import argparse

    from lazyflow_rbfs.cli.commands import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        (name, action.option_strings or action.dest)
        for name, command in sub.choices.items()
        if name != "ilastik"  # passes its arguments to ilastik (issue 15 owns its help)
        for action in command._actions
        if not action.help
    ]
    assert missing == []


@pytest.mark.parametrize(
    "command,flags",
    [
        ("read", ["--add", "--compression", "--progress", "--no-progress", "gzip,lzf"]),
        ("export", ["--progress", "--no-progress", "OUT", "output file"]),
        ("prefetch", ["--progress", "with --scheduler: blocks per cluster task"]),
        ("serve", ["--progress", "sample volume is built"]),
    ],
)
def test_command_help_shows_the_new_flags(command, flags):
    proc = rbfs(command, "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    for flag in flags:
        assert flag in text, (command, flag)


def test_serve_precomputed_uses_realistic_chunks(tmp_path):
    proc, lines, _ = _serve_until_ready("--shape", "64,256,256", "--format", "precomputed")
    try:
        (hint,) = [line for line in lines if line.startswith("try: ")]
        described = tmp_path / "pc.json"
        command = shlex.split(hint[len("try: ") :].replace("-o precomputed.json", f"-o {described}"))
        ran = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=120)
        assert ran.returncode == 0, ran.stderr
        (following,) = [line for line in ran.stdout.splitlines() if line.startswith("next: ")]
        info = subprocess.run(
            shlex.split(following[len("next: ") :]), capture_output=True, text=True, env=_env(), timeout=120
        )
        assert info.returncode == 0, info.stderr  # the 'next:' line runs as printed
        fetched = rbfs("prefetch", described, "--no-progress")
        assert fetched.returncode == 0, fetched.stderr
    finally:
        _stop(proc)
    # 64 x 256 x 256 in 64³ chunks: the info file and 16 chunks (16 x 16 x 8 chunks took 1 + 2,048)
    assert "17 GETs, 17 attempts" in fetched.stdout, fetched.stdout
