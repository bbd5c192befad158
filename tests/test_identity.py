"""One cache root, one remote volume: the volume record ``<root>/.rbfs-volume.json`` (issue 9, item 2)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lazyflow_rbfs import BlockwiseFileset, RESTfulBlockwiseFileset, description
from lazyflow_rbfs.cli import main
from lazyflow_rbfs.errors import CacheWriteError, DescriptionError
from lazyflow_rbfs.testing import CutoutServer, PrecomputedSettings, sample_volume
from tests.mounts import remount

SHAPE = (16, 48, 40)
BLOCK = (8, 16, 16)  # 2 x 3 x 3 = 18 blocks, the last x block 8 wide
NBLOCKS = 18
RECORD = ".rbfs-volume.json"
REPO = Path(__file__).resolve().parents[1]


def volume_of(seed: int, dtype: str = "uint8") -> np.ndarray:
    return sample_volume(SHAPE, dtype=dtype, seed=seed)


def write_desc(server: CutoutServer, path: Path, cache_dir: str | None, **options) -> str:
    """A composite description; ``cache_dir=None`` leaves ``dataset_root_dir`` out (default ".")."""
    written = server.write_description(path, block_shape=BLOCK, cache_dir=cache_dir or ".", **options)
    if cache_dir is None:
        obj = json.loads(Path(written).read_text())
        obj["local_description"].pop("dataset_root_dir", None)
        Path(written).write_text(json.dumps(obj))
    return str(written)


def status_files(root: Path) -> list[Path]:
    return sorted(root.rglob("STATUS.txt"))


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err: str, *fragments: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("rbfs: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def two_servers():
    """Two volumes of the same shape: a uint8 one and, by default, another uint8 one with other data."""
    servers = []

    def make(dtype_b: str = "uint8"):
        a = CutoutServer(volume_of(1)).start()
        b = CutoutServer(volume_of(2, dtype_b)).start()
        servers.extend([a, b])
        return a, b

    yield make
    for server in servers:
        server.close()


# ---------------------------------------------------------------------------------------------------------
# Two volumes, one root


@pytest.mark.parametrize("dtype_b", ["uint16", "uint8"])
def test_second_volume_in_the_same_folder_is_refused_before_any_request(two_servers, tmp_path, dtype_b):
    a, b = two_servers(dtype_b)
    path_a = write_desc(a, tmp_path / "a.json", None)  # both default to "." : the same root
    path_b = write_desc(b, tmp_path / "b.json", None)
    with RESTfulBlockwiseFileset(path_a) as vol:
        np.testing.assert_array_equal(vol[...], volume_of(1))
    with pytest.raises(DescriptionError) as info:
        RESTfulBlockwiseFileset(path_b)
    assert info.value.field == "dataset_root_dir"
    message = str(info.value)
    assert str(tmp_path) in message and "b.json" in message
    assert a.url_format.split("/hdf5")[0] in message and b.url_format.split("/hdf5")[0] in message
    if dtype_b == "uint16":
        assert "dtype uint8 in the cache, uint16 here" in message
    assert b.requests == 0
    assert len(status_files(tmp_path)) == NBLOCKS  # volume a's blocks are untouched


def test_a_reader_opened_before_the_other_volume_recorded_the_root_still_refuses(two_servers, tmp_path):
    a, b = two_servers()
    path_a = write_desc(a, tmp_path / "a.json", "shared")
    path_b = write_desc(b, tmp_path / "b.json", "shared")
    early = RESTfulBlockwiseFileset(path_b)  # the root is still empty: nothing to refuse yet
    try:
        with RESTfulBlockwiseFileset(path_a) as vol:
            vol[...]
        with pytest.raises(DescriptionError) as info:
            early[...]  # every block is "available" now, but they are volume a's
        assert info.value.field == "dataset_root_dir"
        assert b.requests == 0
    finally:
        early.close()


def test_two_views_of_one_volume_share_one_root(tmp_path):
    volume = volume_of(3)
    with CutoutServer(volume) as server:
        narrow = write_desc(
            server, tmp_path / "narrow.json", "c", view_origin=(8, 16, 16), view_shape=(8, 20, 24)
        )
        wide = write_desc(server, tmp_path / "wide.json", "c")
        with RESTfulBlockwiseFileset(narrow) as vol:
            np.testing.assert_array_equal(vol[...], volume[8:16, 16:36, 16:40])
        before = server.requests
        assert before == 4
        with RESTfulBlockwiseFileset(wide) as vol:
            np.testing.assert_array_equal(vol[8:16, 16:48, 16:40], volume[8:16, 16:48, 16:40])
            assert server.requests == before  # shared blocks
            np.testing.assert_array_equal(vol[...], volume)
        assert server.requests == NBLOCKS
    assert (tmp_path / "c" / RECORD).is_file()


def test_an_upstream_root_without_a_record_is_adopted_by_the_first_download(tmp_path):
    from lazyflow_rbfs import identity

    volume = volume_of(4)
    with CutoutServer(volume) as server:
        path = write_desc(server, tmp_path / "v.json", "cache")
        # An upstream-style cache: blocks + STATUS.txt written by a local fileset, no record.
        local = description.read_composite(path).local_description
        with BlockwiseFileset(path, "a", preparsedDescription=local) as fs:
            fs.writeData(((0, 0, 0), (8, 48, 40)), volume[0:8])
            fs.setBlockStatusesForRoi(((0, 0, 0), (8, 48, 40)), fs.BLOCK_AVAILABLE)
        record = tmp_path / "cache" / RECORD
        assert not record.exists()  # a local fileset writes no record
        with RESTfulBlockwiseFileset(path) as vol:
            np.testing.assert_array_equal(vol[0:8], volume[0:8])
            assert server.requests == 0 and not record.exists()  # reading never writes
            np.testing.assert_array_equal(vol[...], volume)
            assert server.requests == NBLOCKS // 2
        assert record.is_file()
        assert identity.read_record(tmp_path / "cache") == identity.identity_of(
            description.read_composite(path)
        )


# ---------------------------------------------------------------------------------------------------------
# Concurrent first writers (real processes)


def _first_write(path: str, block_start, barrier, results) -> None:
    try:
        with RESTfulBlockwiseFileset(path, retries=0) as vol:
            barrier.wait(60)
            stop = [min(s + b, n) for s, b, n in zip(block_start, BLOCK, SHAPE)]
            vol.readData((block_start, stop))
    except DescriptionError as exc:
        results.put(("refused", path, exc.field))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results.put(("error", path, repr(exc)))
    else:
        results.put(("ok", path, None))


def _race(paths: list[str], block_starts: list) -> list[tuple]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(paths))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_first_write, args=(p, s, barrier, results)) for p, s in zip(paths, block_starts)
    ]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return out


BLOCK_STARTS = [(0, 0, 0), (0, 16, 16), (8, 32, 0), (8, 0, 32)]


def test_concurrent_first_writers_of_one_volume_all_succeed(tmp_path):
    from lazyflow_rbfs import identity

    with CutoutServer(volume_of(5)) as server:
        path = write_desc(server, tmp_path / "v.json", "shared")
        results = _race([path] * 4, BLOCK_STARTS)
        assert sorted(r[0] for r in results) == ["ok"] * 4
        assert server.requests == 4
    assert len(status_files(tmp_path / "shared")) == 4
    assert identity.read_record(tmp_path / "shared") == identity.identity_of(description.read_composite(path))
    # besides the record, only the cache-level footprint ledger files of issue 12
    ledger = {".rbfs-ledger", ".rbfs-ledger.active"}
    found = [p.name for p in (tmp_path / "shared").iterdir() if p.name.startswith(".rbfs")]
    assert [name for name in found if name not in ledger] == [RECORD]


def test_concurrent_first_writers_of_different_volumes_exactly_one_wins(tmp_path):
    from lazyflow_rbfs import identity

    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(CutoutServer(volume_of(10 + i))) for i in range(4)]
        paths = [write_desc(s, tmp_path / f"v{i}.json", "shared") for i, s in enumerate(servers)]
        results = _race(paths, BLOCK_STARTS)
    winners = [r for r in results if r[0] == "ok"]
    assert len(winners) == 1, results
    assert all(r[0] == "refused" and r[2] == "dataset_root_dir" for r in results if r[0] != "ok")
    winner = winners[0][1]
    assert identity.read_record(tmp_path / "shared") == identity.identity_of(
        description.read_composite(winner)
    )
    # Only the winner's block is marked available: the losers published nothing.
    z, y, x = [s for p, s in zip(paths, BLOCK_STARTS) if p == winner][0]
    status = status_files(tmp_path / "shared")
    assert [p.parent.relative_to(tmp_path / "shared") for p in status] == [
        Path(f"z_{z:08d}", f"y_{y:08d}", f"x_{x:08d}")
    ]


def _record_in_process(root: str, identity_json: dict, barrier, results) -> None:
    from lazyflow_rbfs import identity

    barrier.wait(60)
    try:
        identity.record(root, identity.VolumeIdentity.from_json(identity_json))
    except DescriptionError:
        results.put("refused")
        return
    results.put("ok")


def test_record_race_between_many_processes(tmp_path):
    from lazyflow_rbfs import identity

    with CutoutServer(volume_of(6)) as server:
        same = identity.identity_of(description.read_composite(write_desc(server, tmp_path / "a.json", "r")))
    other = dataclasses.replace(same, location_digest="sha256:other")
    ctx = multiprocessing.get_context("spawn")
    for root, identities, expected in (
        (tmp_path / "same", [same] * 6, ["ok"] * 6),
        (tmp_path / "two", [same, other] * 3, ["ok"] * 3 + ["refused"] * 3),
    ):
        barrier = ctx.Barrier(len(identities))
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_record_in_process, args=(str(root), i.to_json(), barrier, results))
            for i in identities
        ]
        for p in procs:
            p.start()
        got = sorted(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(60)
        assert got == expected
        assert sorted(os.listdir(root)) == [RECORD]  # no temporary file left behind
        json.loads((root / RECORD).read_text())  # complete


# ---------------------------------------------------------------------------------------------------------
# The record itself


def test_the_record_holds_the_identity_and_no_secret(tmp_path):
    from lazyflow_rbfs import identity

    volume = volume_of(7)
    token = "ghp_0123456789abcdefABCDEF0123456789xyzw"
    with CutoutServer(volume) as server:
        host = server.url.split("://", 1)[1]

        def desc_with(query: str, name: str) -> str:
            path = tmp_path / name
            url = f"http://alice:hunter2pw@{host}{server.url_format.split(host, 1)[1]}?{query}"
            write_desc(server, path, "c", url_format=url)
            return str(path)

        first = desc_with(f"access_token={token}&channel=2", "a.json")
        with RESTfulBlockwiseFileset(first) as vol:
            np.testing.assert_array_equal(vol[0:8, 0:16, 0:16], volume[0:8, 0:16, 0:16])
        raw = (tmp_path / "c" / RECORD).read_bytes()
        for secret in (token, "hunter2pw", "alice"):
            assert secret.encode() not in raw
        obj = json.loads(raw)
        assert obj["_schema_name"] == "rbfs-cache-volume" and obj["_schema_version"] == 1
        vol_json = obj["volume"]
        assert vol_json["location"] == server.url_format + "?access_token=***&channel=2"
        assert vol_json["dtype"] == "uint8" and vol_json["axes"] == "zyx"
        assert vol_json["shape"] == list(SHAPE) and vol_json["block_shape"] == list(BLOCK)
        assert vol_json["origin_offset"] == [0, 0, 0] and vol_json["scale"] is None
        assert vol_json["format"] == "hdf5" and vol_json["location_digest"].startswith("sha256:")

        # A rotated token (and other credentials) is still the same volume: cached blocks are reused.
        rotated = desc_with("access_token=ghp_ZZZZ9999999999999999999999999999&channel=2", "rotated.json")
        requests = server.requests
        with RESTfulBlockwiseFileset(rotated) as vol:
            np.testing.assert_array_equal(vol[0:8, 0:16, 0:16], volume[0:8, 0:16, 0:16])
        assert server.requests == requests
        # Another channel is another volume.
        with pytest.raises(DescriptionError, match="channel=2 in the cache, .*channel=3 here"):
            RESTfulBlockwiseFileset(desc_with("access_token=x&channel=3", "other.json"))
        # So is another dataset id, though the record shows it as *** (it looks like a token).
        hidden = desc_with("dataset=3f2a9c0e5d7b41a8a2c1", "hidden.json")
        with open(hidden) as f:
            obj = json.load(f)
        obj["local_description"]["dataset_root_dir"] = "h"
        Path(hidden).write_text(json.dumps(obj))
        with RESTfulBlockwiseFileset(hidden) as vol:
            vol[0:8, 0:16, 0:16]
        assert b"3f2a9c0e5d7b41a8a2c1" not in (tmp_path / "h" / RECORD).read_bytes()
        requests = server.requests
        obj["remote_description"]["url_format"] = obj["remote_description"]["url_format"].replace(
            "3f2a9c0e5d7b41a8a2c1", "9e8d7c6b5a4f3e2d1c0b"
        )
        Path(hidden).write_text(json.dumps(obj))
        with pytest.raises(DescriptionError, match="hidden query values"):
            RESTfulBlockwiseFileset(hidden)
        assert server.requests == requests
    readable, canonical = identity.scrub_location(
        "HTTPS://u:p@Example.org/a/b?Signature=abc&X-Amz-Date=1&c=4"
    )
    assert readable == "https://example.org/a/b?Signature=***&X-Amz-Date=***&c=4"
    assert canonical == "https://example.org/a/b?c=4"


@pytest.mark.parametrize(
    "damage", ["garbage", "deep", "wrong schema", "newer", "missing field", "symlink", "directory"]
)
def test_a_damaged_record_is_refused_and_left_alone(tmp_path, damage):
    with CutoutServer(volume_of(8)) as server:
        path = write_desc(server, tmp_path / "v.json", "c")
        with RESTfulBlockwiseFileset(path) as vol:
            vol[0:8, 0:16, 0:16]
        record = tmp_path / "c" / RECORD
        good = json.loads(record.read_text())
        record.unlink()
        outside = tmp_path / "outside.json"
        outside.write_text(json.dumps(good))
        outside_text = outside.read_text()
        if damage == "garbage":
            record.write_bytes(b"\x00{not json")
        elif damage == "deep":
            record.write_text("[" * 60000)
        elif damage == "newer":
            record.write_text(json.dumps({**good, "_schema_version": 2}))
        elif damage == "wrong schema":
            record.write_text(json.dumps({**good, "_schema_name": "something"}))
        elif damage == "missing field":
            del good["volume"]["dtype"]
            record.write_text(json.dumps(good))
        elif damage == "symlink":
            record.symlink_to(outside)
        else:
            record.mkdir()
        before = os.lstat(record)
        requests = server.requests
        with pytest.raises(DescriptionError) as info:
            with RESTfulBlockwiseFileset(path) as vol:
                vol[...]
        assert info.value.field == "dataset_root_dir"
        assert str(record) in str(info.value) and "damaged" in str(info.value)
        assert server.requests == requests
        after = os.lstat(record)
        assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
            before.st_ino,
            before.st_mtime_ns,
            before.st_size,
        )
        assert outside.read_text() == outside_text


def test_a_local_fileset_checks_what_it_can_of_a_recorded_root(tmp_path):
    with CutoutServer(volume_of(9)) as server:
        path = write_desc(server, tmp_path / "v.json", "c")
        with RESTfulBlockwiseFileset(path) as vol:
            vol[...]
    local = description.read_composite(path).local_description
    with BlockwiseFileset(path, "r", preparsedDescription=local) as fs:  # same kind of blocks: fine
        np.testing.assert_array_equal(fs.readData(((0, 0, 0), SHAPE)), volume_of(9))
    changes = (("dtype", np.uint16), ("block_shape", np.array([8, 16, 8])), ("shape", np.array([16, 48, 32])))
    for name, value in changes:
        other = description.parse_local(local)
        setattr(other, name, value)
        other.view_shape = None
        with pytest.raises(DescriptionError) as info:
            BlockwiseFileset(path, "r", preparsedDescription=other)
        assert info.value.field == "dataset_root_dir" and name in str(info.value)


def test_export_subset_carries_no_record_and_refuses_a_root_of_another_volume(tmp_path):
    volume = volume_of(11)
    with CutoutServer(volume) as server:
        path = write_desc(server, tmp_path / "v.json", "c")
        with RESTfulBlockwiseFileset(path) as vol:
            exported = vol.exportSubset(((0, 0, 0), (8, 32, 32)), tmp_path / "export")
            assert not list((tmp_path / "export").rglob(RECORD))
            with BlockwiseFileset(exported) as fs:
                np.testing.assert_array_equal(fs.readData(((0, 0, 0), (8, 32, 32))), volume[:8, :32, :32])
            # An export into a root that holds another kind of volume is refused, and creates nothing.
            foreign = json.loads((tmp_path / "c" / RECORD).read_text())
            foreign["volume"]["dtype"] = "uint16"
            (tmp_path / "busy" / "c").mkdir(parents=True)
            (tmp_path / "busy" / "c" / RECORD).write_text(json.dumps(foreign))
            with pytest.raises(DescriptionError, match="dataset_root_dir"):
                vol.exportSubset(((0, 0, 0), (8, 32, 32)), tmp_path / "busy")
            assert sorted(p.name for p in (tmp_path / "busy").rglob("*")) == sorted(["c", RECORD])


def test_link_less_file_systems_record_under_a_lock(tmp_path, monkeypatch):
    from lazyflow_rbfs import identity

    with CutoutServer(volume_of(12)) as server:
        ident = identity.identity_of(description.read_composite(write_desc(server, tmp_path / "v.json", "c")))

    def no_links(src, dst, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted", dst)

    monkeypatch.setattr(os, "link", no_links)
    root = tmp_path / "root"
    identity.record(root, ident)
    identity.record(root, ident)
    assert identity.read_record(root) == ident
    with pytest.raises(DescriptionError):
        identity.record(root, dataclasses.replace(ident, dtype="uint16"))
    assert sorted(os.listdir(root)) == [RECORD]


@pytest.fixture
def small_tmpfs(tmpfs):
    return tmpfs("mnt", 256)


def test_a_record_on_a_full_disk_is_a_cache_write_error(small_tmpfs, tmp_path):
    with CutoutServer(volume_of(13)) as server:
        path = write_desc(server, tmp_path / "v.json", str(small_tmpfs / "c"))
        (small_tmpfs / "c").mkdir()
        with open(small_tmpfs / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        with RESTfulBlockwiseFileset(path, retries=0) as vol:
            with pytest.raises(CacheWriteError) as info:
                vol[0:8, 0:16, 0:16]
        assert info.value.errno == errno.ENOSPC
        assert str(small_tmpfs / "c" / RECORD) in str(info.value)
        names = sorted(p.name for p in (small_tmpfs / "c").rglob("*"))
        assert RECORD not in names and "STATUS.txt" not in names
        assert not [n for n in names if n.endswith(".partial")]


def test_a_record_on_a_read_only_disk_is_a_cache_write_error(small_tmpfs, tmp_path):
    from lazyflow_rbfs import identity

    with CutoutServer(volume_of(13)) as server:
        ident = identity.identity_of(description.read_composite(write_desc(server, tmp_path / "v.json", "c")))
    (small_tmpfs / "c").mkdir()
    remount(small_tmpfs, "ro")
    with pytest.raises(CacheWriteError) as info:
        identity.record(small_tmpfs / "c", ident)
    assert info.value.errno == errno.EROFS and isinstance(info.value, OSError)
    assert os.listdir(small_tmpfs / "c") == []


# ---------------------------------------------------------------------------------------------------------
# Command line


def test_cli_verify_status_and_info_refuse_a_root_of_another_volume(two_servers, tmp_path, capsys):
    a, b = two_servers()  # same dtype, shape and blocks: only the record tells them apart
    path_a = write_desc(a, tmp_path / "a.json", "shared")
    path_b = write_desc(b, tmp_path / "b.json", "shared")
    code, _, err = _run(capsys, "prefetch", path_a, "--no-progress")
    assert code == 0, err
    for command in ("verify", "status", "info", "purge-locks"):
        code, out, err = _run(capsys, command, path_b)
        assert code == 2, (command, out, err)
        _one_error_line(err, "dataset_root_dir", str(tmp_path / "shared"))
    code, _, err = _run(capsys, "read", path_b, "--roi", "0:8,0:16,0:16", "-o", tmp_path / "x.npy")
    assert code == 2
    _one_error_line(err, "dataset_root_dir")
    assert not (tmp_path / "x.npy").exists()
    assert b.requests == 0
    code, out, _ = _run(capsys, "verify", path_a)
    assert code == 0 and out.strip().endswith("OK")


def test_cli_describe_refuses_a_cache_dir_of_another_source(tmp_path, capsys):
    settings = PrecomputedSettings(chunk_xyz=(16, 16, 8), scales=1)
    with (
        CutoutServer(volume_of(14), precomputed=settings) as a,
        CutoutServer(volume_of(15), precomputed=settings) as b,
    ):
        code, _, err = _run(
            capsys, "describe", a.precomputed_url, "-o", tmp_path / "a.json", "--cache-dir", "shared"
        )
        assert code == 0, err
        code, _, err = _run(capsys, "prefetch", tmp_path / "a.json", "--no-progress")
        assert code == 0, err
        code, _, err = _run(
            capsys, "describe", b.precomputed_url, "-o", tmp_path / "b.json", "--cache-dir", "shared"
        )
        assert code == 2
        _one_error_line(err, "dataset_root_dir", str(tmp_path / "shared"), b.precomputed_url)
        assert not (tmp_path / "b.json").exists()
        # Described again into a cache of its own, it works.
        code, _, err = _run(capsys, "describe", b.precomputed_url, "-o", tmp_path / "b.json")
        assert code == 0, err
        with RESTfulBlockwiseFileset(tmp_path / "b.json") as vol:
            np.testing.assert_array_equal(vol[...], volume_of(15))


def test_serve_describe_defaults_to_a_cache_dir_of_its_own(tmp_path, capsys):
    volume = volume_of(16)
    npy = tmp_path / "vol.npy"
    np.save(npy, volume)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lazyflow_rbfs",
            "serve",
            str(npy),
            "--describe",
            str(tmp_path / "served.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for line in proc.stdout:
            if "Ctrl-C" in line:
                break
        local = description.read_composite(tmp_path / "served.json").local_description
        assert local.dataset_root_dir == "served-blocks"
        code, _, err = _run(
            capsys, "read", tmp_path / "served.json", "--roi", "0:8,:,:", "-o", tmp_path / "r.npy"
        )
        assert code == 0, err
        np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), volume[0:8])
        assert (tmp_path / "served-blocks" / RECORD).is_file()
        assert not list(tmp_path.glob("z_*"))  # nothing cached beside the description
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    # Served again (on another port: another URL), the old cache is refused before serving.
    code, out, err = _run(capsys, "serve", npy, "--describe", tmp_path / "served.json")
    assert code == 2 and "Ctrl-C" not in out
    _one_error_line(err, "dataset_root_dir", str(tmp_path / "served-blocks"))
    # The library call behind it defaults the same way.
    with CutoutServer(volume) as server:
        written = server.write_description(tmp_path / "lib.json", block_shape=BLOCK)
        assert description.read_composite(written).local_description.dataset_root_dir == "lib-blocks"


def test_shutil_copy_of_a_cache_keeps_its_record(tmp_path):
    """A cache copied elsewhere (with its record) still opens with its description."""
    volume = volume_of(17)
    with CutoutServer(volume) as server:
        path = write_desc(server, tmp_path / "v.json", "c")
        with RESTfulBlockwiseFileset(path) as vol:
            vol[...]
        moved = tmp_path / "moved"
        moved.mkdir()
        shutil.copytree(tmp_path / "c", moved / "c")
        shutil.copy(path, moved / "v.json")
        requests = server.requests
        with RESTfulBlockwiseFileset(moved / "v.json") as vol:
            np.testing.assert_array_equal(vol[...], volume)
        assert server.requests == requests


def test_what_is_and_is_not_part_of_the_identity(tmp_path):
    from lazyflow_rbfs import identity
    from lazyflow_rbfs.testing import BossSettings

    with CutoutServer(
        volume_of(18), boss=BossSettings(), precomputed=PrecomputedSettings(scales=2)
    ) as server:

        def ident(name: str, **options) -> identity.VolumeIdentity:
            path = server.write_description(tmp_path / name, block_shape=BLOCK, **options)
            return identity.identity_of(description.read_composite(path))

        boss = ident("b.json", format="boss")
        assert boss.scale == 0 and boss.location.endswith(
            "/v1/cutout/"
            + "/".join((server.boss.collection, server.boss.experiment, server.boss.channel))
            + "/"
        )
        assert ident("b2.json", format="boss", boss_encoding="npygz", compression="gzip") == boss
        assert ident("b3.json", format="boss", view_origin=(8, 16, 16)) == boss
        assert ident("b4.json", format="boss", level=1).scale == 1
        pc = ident("p.json", format="precomputed")
        assert pc.scale == 0 and pc.location == server.precomputed_url
        assert ident("p2.json", format="precomputed", fill_missing=True) == pc
        assert ident("p3.json", format="precomputed", level=1) != pc
        hdf5 = ident("h.json")
        assert hdf5 != ident("n.json", format="npz")  # another URL, another volume
