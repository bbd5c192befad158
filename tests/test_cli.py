"""Tests of the ``rbfs`` command line, in process through ``main([...])`` and as real subprocesses.

Every test that touches HTTP talks to a real :class:`CutoutServer` on 127.0.0.1, port 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest

from lazyflow_rbfs.cli import main, parse_roi, parse_shape, resolve_roi
from lazyflow_rbfs.cli.commands import read as read_command
from lazyflow_rbfs.cli.commands import status as status_commands
from lazyflow_rbfs.errors import OutOfBoundsError
from lazyflow_rbfs.store import BlockwiseFileset
from lazyflow_rbfs.testing import CutoutServer, sample_volume

REPO = Path(__file__).resolve().parents[1]
SHAPE = (16, 64, 64)
BLOCK = (8, 32, 32)  # 2 x 2 x 2 = 8 blocks
NBLOCKS = 8


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONWARNINGS", None)
    return env


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def _assert_one_line_error(err: str, *fragments: str) -> None:
    lines = _error_lines(err)
    assert len(lines) == 1, f"expected one error line, got {lines!r}"
    assert lines[0].startswith("rbfs: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def volume() -> np.ndarray:
    return sample_volume(SHAPE)


@pytest.fixture
def served(tmp_path, volume):
    with CutoutServer(volume) as server:
        path = tmp_path / "volume.json"
        server.write_description(path, block_shape=BLOCK, cache_dir="cache")
        yield server, str(path)


def _status(capsys, path: str, *extra: str) -> dict:
    code, out, err = _run(capsys, "status", path, "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def _block_file(cache: Path, start: tuple[int, int, int]) -> Path:
    d = cache / f"z_{start[0]:08d}" / f"y_{start[1]:08d}" / f"x_{start[2]:08d}"
    files = [p for p in d.iterdir() if p.name.endswith(".h5")]
    assert len(files) == 1, list(d.iterdir())
    return files[0]


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0:64,0:512,0:512", ((0, 64), (0, 512), (0, 512))),
        (":,10:,:20", ((None, None), (10, None), (None, 20))),
        (" 1 : 2 , 3:4 ", ((1, 2), (3, 4))),
        ("5,-3:-1", ((5, 6), (-3, -1))),
        ("-1", ((-1, None),)),
        (":", ((None, None),)),
    ],
)
def test_parse_roi_accepts_slice_syntax(text, expected):
    assert parse_roi(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  ",
        "0:1:2",
        "a:b",
        "1.5:3",
        "1+1:3",
        "__import__('os').system('true')",
        "0:10,,0:3",
        "[0:1]",
        "0-1",
    ],
)
def test_parse_roi_rejects_anything_else(text):
    with pytest.raises(ValueError, match="expected a roi"):
        parse_roi(text)


def test_resolve_roi_fills_open_ends_and_counts_negatives_from_the_end():
    start, stop = resolve_roi(parse_roi(":,10:,-8:-2"), (16, 64, 64))
    assert start.tolist() == [0, 10, 56]
    assert stop.tolist() == [16, 64, 62]
    start, stop = resolve_roi(parse_roi("3,-1,0:1"), (16, 64, 64))
    assert start.tolist() == [3, 63, 0] and stop.tolist() == [4, 64, 1]
    start, stop = resolve_roi(None, (4, 5))
    assert start.tolist() == [0, 0] and stop.tolist() == [4, 5]


@pytest.mark.parametrize("text", ["0:8,0:8", "0:17,:,:", "5:5,:,:", "6:2,:,:", "-20:,:,:", "0:8,:,:,:"])
def test_resolve_roi_rejects_rois_outside_the_volume_without_clamping(text):
    with pytest.raises(OutOfBoundsError):
        resolve_roi(parse_roi(text), (16, 64, 64), "zyx")


def test_parse_shape():
    assert parse_shape("64,512,512") == (64, 512, 512)
    assert parse_shape("32x128x128") == (32, 128, 128)
    for bad in ("", "0,1", "a,b", "1.5", "-1,2"):
        with pytest.raises(ValueError):
            parse_shape(bad)


# ---------------------------------------------------------------- generic


def test_help_in_a_real_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "lazyflow_rbfs", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=str(REPO),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    for command in ("info", "prefetch", "read", "export", "status", "verify", "purge-locks", "serve", "demo"):
        assert command in proc.stdout


def test_version(capsys):
    code, out, _ = _run(capsys, "--version")
    assert code == 0
    assert "0.1.0" in out


@pytest.mark.parametrize(
    "argv",
    [[], ["bogus"], ["info"], ["prefetch", "x.json", "-j", "0"], ["read", "x.json", "--roi", "0:1"]],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv):
    code, _, err = _run(capsys, *argv)
    assert code == 2
    _assert_one_line_error(err)


def test_missing_description_exits_2(capsys, tmp_path):
    for command in ("info", "prefetch", "status", "verify", "purge-locks"):
        code, _, err = _run(capsys, command, tmp_path / "nope.json")
        assert code == 2, command
        _assert_one_line_error(err, "does not exist")


def test_invalid_or_foreign_json_exits_2(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = _run(capsys, "info", bad)
    assert code == 2
    _assert_one_line_error(err, "JSON")
    other = tmp_path / "other.json"
    other.write_text('{"_schema_name": "something-else", "_schema_version": 1.0}')
    code, _, err = _run(capsys, "info", other)
    assert code == 2
    _assert_one_line_error(err, "blockwise-fileset-description")


def test_verbose_shows_the_traceback(capsys, tmp_path):
    code, _, err = _run(capsys, "-v", "info", tmp_path / "nope.json")
    assert code == 2
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("rbfs: error: ")


def test_keyboard_interrupt_exits_130(capsys, monkeypatch, served):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(status_commands, "_cmd_info", interrupted)
    code, _, err = _run(capsys, "info", served[1])
    assert code == 130
    assert len(_error_lines(err)) == 1


def test_unexpected_errors_exit_1_in_one_line(capsys, monkeypatch, served):
    def broken(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(status_commands, "_cmd_status", broken)
    code, _, err = _run(capsys, "status", served[1])
    assert code == 1
    _assert_one_line_error(err, "RuntimeError", "boom second line")


# ---------------------------------------------------------------- info


def test_info_describes_a_composite(capsys, served):
    server, path = served
    code, out, err = _run(capsys, "info", path)
    assert code == 0, err
    assert "RESTful-blockwise-fileset-description" in out
    assert server.url_format in out
    assert "16 x 64 x 64" in out
    assert "8 x 32 x 32" in out
    assert "zyx" in out and "uint8" in out
    assert "blocks:" in out and "8 (2 x 2 x 2)" in out
    assert "0 of 8 blocks available" in out
    assert server.requests == 0  # info never touches the network


def test_info_hides_secrets_in_the_url(capsys, served, tmp_path):
    _, path = served
    desc = json.loads(Path(path).read_text())
    desc["remote_description"]["url_format"] = (
        desc["remote_description"]["url_format"].replace("http://", "http://alice:hunter2@")
        + "?api_token=s3cr3t&x=1"
    )
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps(desc))
    code, out, err = _run(capsys, "info", secret)
    assert code == 0, err
    assert "hunter2" not in out and "s3cr3t" not in out
    assert "alice:***@" in out and "api_token=***" in out and "x=1" in out


def test_info_of_a_plain_local_description(capsys, served, tmp_path):
    _, path = served
    assert _run(capsys, "prefetch", path, "--no-progress")[0] == 0
    assert (
        _run(
            capsys,
            "export",
            path,
            "--roi",
            "0:8,0:32,:",
            "-o",
            tmp_path / "sub",
            "--format",
            "blockwise-subset",
        )[0]
        == 0
    )
    local = tmp_path / "sub" / "volume.json"
    code, out, err = _run(capsys, "info", local)
    assert code == 0, err
    assert "blockwise-fileset-description" in out
    assert "remote url" not in out
    assert "2 of 2 blocks available" in out
    code, _, err = _run(capsys, "prefetch", local)
    assert code == 2
    _assert_one_line_error(err, "nothing to download")


# ---------------------------------------------------------------- prefetch / status


def test_status_counts_before_and_after_prefetch(capsys, served):
    server, path = served
    before = _status(capsys, path)
    assert (before["total"], before["available"], before["missing"], before["partial"]) == (8, 0, 8, 0)
    assert before["available_bytes"] == 0

    code, out, err = _run(capsys, "prefetch", path, "--roi", "0:8,:,:", "--no-progress")
    assert code == 0, err
    assert "4 downloaded" in out
    assert server.requests == 4
    half = _status(capsys, path)
    assert (half["available"], half["missing"]) == (4, 4)
    assert _status(capsys, path, "--roi", "8:16,:,:")["available"] == 0

    code, out, err = _run(capsys, "download", path, "-j", "3", "--no-progress", "--retries", "1")
    assert code == 0, err
    assert "4 downloaded" in out and "4 already cached" in out
    assert server.requests == NBLOCKS
    after = _status(capsys, path)
    assert (after["available"], after["missing"], after["partial"]) == (8, 0, 0)
    assert after["available_bytes"] > 0

    code, out, _ = _run(capsys, "status", path)
    assert code == 0 and "available: 8 (100%)" in out


def test_prefetch_progress_bar_on_request(capsys, served):
    _, path = served
    code, out, err = _run(capsys, "prefetch", path, "--progress")
    assert code == 0
    assert "8/8" in err  # tqdm's bar, on stderr
    assert "8/8" not in out


def test_prefetch_against_a_failing_server_exits_1_with_one_line(capsys, served):
    server, path = served
    server.faults.fail_matching("/hdf5/", status=503)
    code, out, err = _run(capsys, "prefetch", path, "--retries", "0", "--timeout", "5", "--no-progress")
    assert code == 1
    _assert_one_line_error(err, "8 of 8 blocks failed", "503")
    assert "8 failed" in out
    assert _status(capsys, path)["available"] == 0


def test_prefetch_bad_roi_syntax_exits_2(capsys, served):
    server, path = served
    code, _, err = _run(capsys, "prefetch", path, "--roi", "0:8;0:4")
    assert code == 2
    _assert_one_line_error(err, "--roi")
    code, _, err = _run(capsys, "prefetch", path, "--roi", "0:99,:,:")
    assert code == 2
    _assert_one_line_error(err, "not inside the volume")
    assert server.requests == 0


# ---------------------------------------------------------------- read / export


@pytest.mark.parametrize("suffix", [".npy", ".h5"])
def test_read_writes_the_roi_equal_to_the_source(capsys, served, volume, tmp_path, suffix):
    server, path = served
    out_path = tmp_path / "out" / f"roi{suffix}"
    out_path.parent.mkdir()
    code, out, err = _run(capsys, "read", path, "--roi", "3:13,5:,-40:-1", "-o", out_path)
    assert code == 0, err
    expected = volume[3:13, 5:, 24:63]
    if suffix == ".npy":
        data = np.load(out_path)
    else:
        with h5py.File(out_path, "r") as f:
            data = f["data"][()]
            assert f["data"].attrs["axes"] == "zyx"
    assert data.dtype == volume.dtype
    np.testing.assert_array_equal(data, expected)
    assert os.listdir(out_path.parent) == [out_path.name]  # no temp files left
    assert server.requests == NBLOCKS


def test_read_h5_dataset_name_and_whole_volume(capsys, served, volume, tmp_path):
    _, path = served
    out_path = tmp_path / "all.h5"
    code, _, err = _run(capsys, "read", path, "--roi", ":,:,:", "-o", out_path, "--dataset", "raw/vol")
    assert code == 0, err
    with h5py.File(out_path, "r") as f:
        np.testing.assert_array_equal(f["raw/vol"][()], volume)


def test_read_failure_leaves_no_output(capsys, served, tmp_path):
    server, path = served
    out_path = tmp_path / "roi.npy"
    out_path.write_bytes(b"old content")
    server.faults.fail_matching("/hdf5/", status=500)
    code, _, err = _run(capsys, "read", path, "--roi", ":,:,:", "-o", out_path, "--retries", "0")
    assert code == 1
    _assert_one_line_error(err, "500")
    assert out_path.read_bytes() == b"old content"
    assert not any(n.endswith(".partial") for n in os.listdir(tmp_path))


def test_read_usage_errors(capsys, served, tmp_path):
    _, path = served
    for argv, fragment in [
        (["--roi", "0:4,0:4,0:4", "-o", tmp_path / "x.txt"], ".npy"),
        (["--roi", "0:4,0:4,0:4", "-o", tmp_path / "x.npy", "--dataset", "d"], "--dataset"),
        (["--roi", "0:4,0:4", "-o", tmp_path / "x.npy"], "3 comma-separated"),
        (["--roi", "0:4,x,0:4", "-o", tmp_path / "x.npy"], "--roi"),
        (["--roi", "0:4,0:4,0:4", "-o", tmp_path / "no" / "x.npy"], "does not exist"),
    ]:
        code, _, err = _run(capsys, "read", path, *argv)
        assert code == 2, argv
        _assert_one_line_error(err, fragment)
    assert not (tmp_path / "x.npy").exists()


def test_export_single_hdf5(capsys, served, volume, tmp_path):
    _, path = served
    code, out, err = _run(capsys, "export", path, "--roi", "1:9,2:40,3:50", "-o", tmp_path / "exp")
    assert code == 0, err
    files = list((tmp_path / "exp").rglob("*.h5"))
    assert len(files) == 1
    with h5py.File(files[0], "r") as f:
        np.testing.assert_array_equal(f["cube"][()], volume[1:9, 2:40, 3:50])
    assert str(files[0]) in out


def test_export_blockwise_subset_downloads_and_copies_the_blocks(capsys, served, volume, tmp_path):
    server, path = served
    code, out, err = _run(
        capsys, "export", path, "--roi", "8:16,0:32,:", "-o", tmp_path / "sub", "--format", "blockwise-subset"
    )
    assert code == 0, err
    assert server.requests == 2
    with BlockwiseFileset(str(tmp_path / "sub" / "volume.json"), "r") as fs:
        np.testing.assert_array_equal(fs.readData(([8, 0, 0], [16, 32, 64])), volume[8:16, 0:32, :])

    code, _, err = _run(
        capsys,
        "export",
        path,
        "--roi",
        "1:16,0:32,:",
        "-o",
        tmp_path / "sub2",
        "--format",
        "blockwise-subset",
    )
    assert code == 2
    _assert_one_line_error(err, "block boundaries")
    assert server.requests == 2


# ---------------------------------------------------------------- verify / purge


def test_verify_detects_a_corrupt_block_and_repair_makes_the_next_read_download_it(
    capsys, served, volume, tmp_path
):
    server, path = served
    assert _run(capsys, "prefetch", path, "--no-progress")[0] == 0
    code, out, err = _run(capsys, "verify", path)
    assert code == 0, err
    assert "checked 8" in out and "OK" in out

    victim = _block_file(tmp_path / "cache", (8, 32, 0))
    victim.write_bytes(b"this is not an HDF5 file")
    code, out, err = _run(capsys, "verify", path)
    assert code == 1
    _assert_one_line_error(err, "1 bad blocks", "--repair")
    assert "[8, 32, 0]" in out
    code, _, _ = _run(capsys, "verify", path, "--roi", "0:8,:,:")  # the bad block is outside this roi
    assert code == 0

    code, out, err = _run(capsys, "verify", path, "--repair")
    assert code == 0, err
    assert "repaired" in out
    code, out, err = _run(capsys, "verify", path)
    assert code == 0, err
    assert "checked 7" in out
    assert _status(capsys, path)["missing"] == 1

    requests = server.requests
    code, _, err = _run(capsys, "read", path, "--roi", "8:16,32:64,0:32", "-o", tmp_path / "again.npy")
    assert code == 0, err
    assert server.requests == requests + 1
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), volume[8:16, 32:64, 0:32])
    assert _run(capsys, "verify", path)[0] == 0


def test_verify_reports_stray_temp_files(capsys, served, tmp_path):
    _, path = served
    assert _run(capsys, "prefetch", path, "--roi", "0:8,0:32,0:32", "--no-progress")[0] == 0
    block = _block_file(tmp_path / "cache", (0, 0, 0))
    stray = block.parent / f"{block.name}.99999.abcdef.partial"
    stray.write_bytes(b"half a block")
    code, out, err = _run(capsys, "verify", path)
    assert code == 1
    _assert_one_line_error(err, "1 stray temp files")
    assert stray.name in out
    code, _, err = _run(capsys, "verify", path, "--repair")
    assert code == 0, err
    assert not stray.exists()


def test_purge_locks_counts_what_it_removed(capsys, served, tmp_path):
    _, path = served
    assert _run(capsys, "prefetch", path, "--roi", "0:8,0:32,0:64", "--no-progress")[0] == 0
    first = _block_file(tmp_path / "cache", (0, 0, 0))
    second = _block_file(tmp_path / "cache", (0, 0, 32))
    (first.parent / f"{first.name}.lock").write_bytes(b"")  # upstream lazyflow's stale lock
    (second.parent / f"{second.name}.4242.0123456789ab.partial").write_bytes(b"junk")
    code, out, err = _run(capsys, "purge-locks", path)
    assert code == 0, err
    assert "removed 2 " in out
    code, out, _ = _run(capsys, "purge-locks", path)
    assert code == 0 and "removed 0 " in out


# ---------------------------------------------------------------- serve / demo


def test_serve_in_a_subprocess_until_interrupted(capsys, volume, tmp_path):
    npy = tmp_path / "vol.npy"
    np.save(npy, volume)
    desc = tmp_path / "served.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lazyflow_rbfs",
            "serve",
            str(npy),
            "--describe",
            str(desc),
            "--block-shape",
            "8,32,32",
            "--cache-dir",
            "served-cache",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=str(REPO),
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        assert any("http://127.0.0.1:" in line for line in lines), lines
        out_path = tmp_path / "roi.npy"
        code, _, err = _run(capsys, "read", desc, "--roi", "2:10,:,30:", "-o", out_path)
        assert code == 0, err
        np.testing.assert_array_equal(np.load(out_path), volume[2:10, :, 30:])
        assert (tmp_path / "served-cache").is_dir()
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in rest


def test_serve_usage_errors(capsys, tmp_path):
    code, _, err = _run(capsys, "serve", tmp_path / "missing.npy")
    assert code == 2
    _assert_one_line_error(err, "does not exist")
    (tmp_path / "v.txt").write_text("x")
    code, _, err = _run(capsys, "serve", tmp_path / "v.txt")
    assert code == 2
    _assert_one_line_error(err, ".npy")
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = np.zeros((2, 2, 2), np.uint8)
        f["b"] = np.zeros((2, 2, 2), np.uint8)
    code, _, err = _run(capsys, "serve", tmp_path / "two.h5")
    assert code == 2
    _assert_one_line_error(err, "--dataset")
    code, _, err = _run(capsys, "serve", "--block-shape", "1,2,3")
    assert code == 2
    _assert_one_line_error(err, "--describe")


def test_demo_end_to_end_in_a_subprocess(capsys, tmp_path):
    directory = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "lazyflow_rbfs", "demo", "--dir", str(directory), "--no-progress"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=str(REPO),
        timeout=60,  # deadlock guard; the demo takes seconds
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "data equals the source" in out
    assert "0 requests" in out  # the warm read
    assert "each exactly once" in out
    assert "MB/s" in out
    description = directory / "volume.json"
    assert f"rbfs status {description}" in out
    status = _status(capsys, str(description))
    assert status["total"] == 32 and status["available"] == 32  # 64x512x512 in 32x128x128 blocks
    assert _run(capsys, "verify", description)[0] == 0


def test_demo_in_process_with_a_small_volume(capsys, tmp_path):
    code, out, err = _run(
        capsys, "demo", "--dir", tmp_path, "--shape", "8,64,64", "--block-shape", "4,32,32", "--progress"
    )
    assert code == 0, err
    assert "8 of 8 blocks downloaded (each exactly once)" in out
    assert "8/8" in err  # the progress bar was asked for
    assert (tmp_path / "volume.json").exists()
    code, _, err = _run(capsys, "demo", "--dir", tmp_path, "--shape", "8,64,64")
    assert code == 2  # a second run in the same directory could not show a cold read
    _assert_one_line_error(err, "already holds a cache")


# ---------------------------------------------------------------- ilastik


def test_ilastik_forwards_arguments_and_exit_status(capsys, monkeypatch):
    seen = []

    def fake_main(argv):
        seen.append(list(argv))
        return 3

    monkeypatch.setitem(sys.modules, "lazyflow_rbfs.ilastik", types.SimpleNamespace(main=fake_main))
    code, _, _ = _run(capsys, "ilastik", "--", "--headless", "--project=x.ilp")
    assert code == 3
    code, _, _ = _run(capsys, "-v", "ilastik", "--", "--help")  # ilastik's help (rbfs ilastik --help: ours)
    assert code == 3
    code, _, _ = _run(capsys, "ilastik", "--headless", "--project=x.ilp")
    assert code == 3
    assert seen == [["--headless", "--project=x.ilp"], ["--help"], ["--headless", "--project=x.ilp"]]


def test_ilastik_unavailable_exits_2(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lazyflow_rbfs.ilastik", None)
    code, _, err = _run(capsys, "ilastik", "--", "--headless")
    assert code == 2
    _assert_one_line_error(err, "ilastik")


@pytest.mark.parametrize(
    ("start", "stop", "block", "max_rows"),
    [(3, 29, 8, 1), (3, 29, 8, 8), (3, 29, 8, 16), (0, 64, 8, 1000), (5, 6, 8, 1), (0, 7, 8, 3)],
)
def test_read_slabs_tile_the_roi_on_block_boundaries(start, stop, block, max_rows):
    slabs = list(read_command._slabs(np.array([start, 0]), np.array([stop, 5]), block, max_rows))
    edges = [int(s[0]) for s, _ in slabs] + [int(slabs[-1][1][0])]
    assert edges[0] == start and edges[-1] == stop
    assert all(int(e[0]) == int(s2[0]) for (_, e), (s2, _) in zip(slabs, slabs[1:]))  # contiguous
    assert all(edge % block == 0 for edge in edges[1:-1])  # inner edges on block boundaries
    for s, e in slabs:
        assert e[0] > s[0] and (e[0] - s[0] <= max(max_rows, block))
        assert s[1] == 0 and e[1] == 5
    if max_rows >= stop - start:
        assert len(slabs) == 1


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_before_or_after_the_command_enables_debug_logs(capsys, served, where):
    _, path = served
    argv = ["-v", "prefetch", path, "--no-progress"] if where == "before" else ["prefetch", path, "-v"]
    code, _, err = _run(capsys, *argv)
    assert code == 0
    assert "DEBUG" in err and "downloading block" in err
    code, _, err = _run(capsys, "prefetch", path, "--no-progress")
    assert code == 0 and err == ""  # quiet by default


def _start_serve(tmp_path, *args):
    proc = subprocess.Popen(
        [sys.executable, "-m", "lazyflow_rbfs", "serve", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=str(REPO),
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C" in line:
            break
    return proc, lines


def _stop_serve(proc):
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    return out


def test_serve_injects_faults_and_speaks_precomputed(capsys, volume, tmp_path):
    npy = tmp_path / "vol.npy"
    np.save(npy, volume)
    desc = tmp_path / "flaky.json"
    proc, lines = _start_serve(
        tmp_path, npy, "--describe", desc, "--block-shape", "8,32,32", "--fail", "2:503", "--truncate", "1"
    )
    try:
        assert any("fault: HTTP 503 for the next 2 request(s)" in line for line in lines), lines
        assert any("fault: bodies cut off halfway for the next 1 request(s)" in line for line in lines), lines
        # The 503s and the cut-off body are retried within --retries: one prefetch gets every block.
        code, out, err = _run(capsys, "prefetch", desc, "--no-progress", "--retries", "3", "-j", "1")
        assert code == 0, err
        nblocks = int(np.prod([-(-n // b) for n, b in zip(volume.shape, (8, 32, 32))]))
        assert f"{nblocks} downloaded" in out
        out_path = tmp_path / "all.npy"
        assert _run(capsys, "read", desc, "--roi", ":,:,:", "-o", out_path)[0] == 0
        np.testing.assert_array_equal(np.load(out_path), volume)
        assert f"stopped after {nblocks + 3} requests" in _stop_serve(proc)
    finally:
        if proc.poll() is None:
            proc.kill()

    pc = tmp_path / "pc.json"
    proc, lines = _start_serve(
        tmp_path, npy, "--describe", pc, "--format", "precomputed", "--cache-dir", "pc"
    )
    try:
        assert any(line.startswith("precomputed: http://127.0.0.1:") for line in lines), lines
        out_path = tmp_path / "pc.npy"
        code, _, err = _run(capsys, "read", pc, "--roi", "1:9,3:40,5:", "-o", out_path)
        assert code == 0, err
        np.testing.assert_array_equal(np.load(out_path), volume[1:9, 3:40, 5:])
    finally:
        _stop_serve(proc) if proc.poll() is None else None


def test_serve_rejects_bad_fault_specs(capsys):
    for args in (["--fail", "x"], ["--fail", "2:abc"], ["--truncate", "0"], ["--stall", "-1"]):
        code, _, err = _run(capsys, "serve", *args)
        assert code == 2, args
        _assert_one_line_error(err, "")


def test_verify_deep_reads_every_voxel_and_finds_a_damaged_compressed_chunk(capsys, volume, tmp_path):
    with CutoutServer(volume) as server:
        path = server.write_description(
            tmp_path / "volume.json", block_shape=BLOCK, cache_dir="cache", compression="gzip"
        )
        assert _run(capsys, "prefetch", path, "--roi", "0:8,0:32,0:32", "--no-progress")[0] == 0
    victim = _block_file(tmp_path / "cache", (0, 0, 0))
    data = bytearray(victim.read_bytes())
    with h5py.File(victim, "r") as f:  # the first chunk's bytes, from HDF5's own chunk index
        info = f["cube"].id.get_chunk_info(0)
    for i in range(info.byte_offset + 8, info.byte_offset + info.size - 8):
        data[i] ^= 0xFF  # the compressed stream is garbage now, the file's metadata intact
    victim.write_bytes(bytes(data))

    code, out, err = _run(capsys, "verify", path)
    assert code == 0, err  # the structure is fine: a shallow check cannot see inside the chunks
    code, out, err = _run(capsys, "verify", path, "--deep")
    assert code == 1
    _assert_one_line_error(err, "1 bad blocks", "--repair")
