"""N5 datasets (format ``"n5"``): written by tensorstore (an independent writer) and by the test kit, read
back through ``rbfs describe`` and the block cache over the test server's Range-capable files mount and
over ``file://``; request counts, missing blocks, multiscale groups, hostile metadata and block headers."""

from __future__ import annotations

import json
import os
import shlex
import signal
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lazyflow_rbfs import RESTfulBlockwiseFileset, description
from lazyflow_rbfs import open as rbfs_open
from lazyflow_rbfs.cli import main
from lazyflow_rbfs.describe import describe_source
from lazyflow_rbfs.errors import DescriptionError, DownloadError, InvalidResponseError
from lazyflow_rbfs.remote import formats
from lazyflow_rbfs.remote.formats import ProbeRequest
from lazyflow_rbfs.testing import CutoutServer
from lazyflow_rbfs.testing.n5 import encode_block, write_n5, write_n5_dataset

ts = pytest.importorskip("tensorstore")

REPO = Path(__file__).resolve().parents[1]
SHAPE = (13, 22, 27)  # not a multiple of the blocks: edge blocks on every axis
BLOCK = (5, 8, 10)  # C order (z, y, x)
TS_COMPRESSION = {
    "raw": {"type": "raw"},
    "gzip": {"type": "gzip"},
    "bzip2": {"type": "bzip2"},
    "xz": {"type": "xz"},
    "blosc": {"type": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1},
    "zstd": {"type": "zstd", "level": 3},
}


def make_volume(dtype: str, shape: tuple[int, ...] = SHAPE, seed: int = 3) -> np.ndarray:
    """Random voxels of ``dtype``, zero in the z < 5 slab (so tensorstore leaves those blocks out)."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        vol = rng.standard_normal(shape).astype(dtype)
    else:
        vol = rng.integers(1, np.iinfo(dtype).max, size=shape, dtype=dtype)
    vol[:5] = 0
    return vol


def ts_write(folder: Path, volume: np.ndarray, compression: str, block: tuple[int, ...] = BLOCK) -> None:
    """Write ``volume`` (C order) as the N5 dataset ``folder`` with tensorstore."""
    store = ts.open(
        {
            "driver": "n5",
            "kvstore": {"driver": "file", "path": str(folder)},
            "metadata": {
                "dimensions": list(volume.shape[::-1]),
                "blockSize": list(block[::-1]),
                "dataType": volume.dtype.name,
                "compression": TS_COMPRESSION[compression],
            },
            "create": True,
            "delete_existing": True,
        }
    ).result()
    store[...] = volume.T  # tensorstore presents N5 fastest axis first
    del store


def block_grid(shape: tuple[int, ...], block: tuple[int, ...]) -> list[tuple[int, ...]]:
    return list(np.ndindex(*(-(-n // b) for n, b in zip(shape, block))))


def block_paths(prefix: str, shape: tuple[int, ...], block: tuple[int, ...]) -> list[str]:
    """The request paths of every block of the dataset served at ``prefix``."""
    return [f"{prefix}/" + "/".join(str(i) for i in index[::-1]) for index in block_grid(shape, block)]


@pytest.fixture
def files_server():
    with CutoutServer(np.zeros((1, 1, 1), np.uint8)) as server:
        yield server


def _read_all(desc: Path, shape: tuple[int, ...], **options: Any) -> np.ndarray:
    with RESTfulBlockwiseFileset(desc, **options) as fs:
        return fs.readData(((0,) * len(shape), shape))


# ---------------------------------------------------------------------------------------------------------
# tensorstore-written datasets, over HTTP and file://


@pytest.mark.parametrize(
    "compression,dtype",
    [
        ("raw", "uint8"),
        ("gzip", "uint16"),
        ("bzip2", "float32"),
        ("xz", "uint8"),
        ("blosc", "uint16"),
        ("zstd", "float32"),
        ("gzip", "float32"),
        ("blosc", "uint8"),
    ],
)
def test_tensorstore_dataset_over_http_each_block_once_missing_zeros_warm_no_request(
    files_server, tmp_path, compression, dtype
):
    volume = make_volume(dtype)
    ts_write(tmp_path / "data" / "em.n5" / "raw", volume, compression)
    files_server.mount("data", tmp_path / "data")
    source = files_server.files_url("data", "em.n5/raw")
    desc = tmp_path / "vol.json"
    assert main(["describe", source, "-o", str(desc), "--block-shape", "10,16,20", "--cache-dir", "c"]) == 0
    remote = description.read_composite(desc).remote_description
    assert remote.format == "n5" and remote.axes == "zyx" and list(remote.shape) == list(SHAPE)
    assert remote.n5_block_shape == list(BLOCK) and remote.n5_compression == compression
    assert np.dtype(remote.dtype) == np.dtype(dtype)
    files_server.reset_stats()

    np.testing.assert_array_equal(_read_all(desc, SHAPE, max_parallel=4), volume)
    log = files_server.request_log
    paths = [r.path for r in log]
    prefix = "/files/data/em.n5/raw"
    blocks = block_paths(prefix, SHAPE, BLOCK)
    assert sorted(p for p in paths if not p.endswith("attributes.json")) == sorted(blocks)  # each once
    assert paths.count(f"{prefix}/attributes.json") == 1
    missing = {r.path for r in log if r.status == 404}
    zero_blocks = [p for p, idx in zip(blocks, block_grid(SHAPE, BLOCK)) if idx[0] == 0]
    assert missing == set(zero_blocks) and missing  # tensorstore leaves zero blocks out: read as zeros

    files_server.reset_stats()
    np.testing.assert_array_equal(_read_all(desc, SHAPE), volume)  # a new fileset: from the cache
    assert files_server.request_log == []


@pytest.mark.parametrize("compression", ["gzip", "blosc"])
def test_tensorstore_dataset_over_file_url_and_plain_path(tmp_path, compression):
    volume = make_volume("uint16")
    ts_write(tmp_path / "em.n5" / "raw", volume, compression)
    fs = rbfs_open(f"n5://{(tmp_path / 'em.n5' / 'raw').as_uri()}", tmp_path / "cache")
    try:
        np.testing.assert_array_equal(fs.readData(((0, 0, 0), SHAPE)), volume)
        remote = description.read_composite(tmp_path / "cache" / "description.json").remote_description
        assert remote.n5_url.startswith("file:///") and remote.n5_dataset == ""
    finally:
        fs.close()
    desc = tmp_path / "plain.json"
    describe_source(str(tmp_path / "em.n5" / "raw"), desc, block_shape="5,8,10", cache_dir="p")
    np.testing.assert_array_equal(_read_all(desc, SHAPE), volume)


# ---------------------------------------------------------------------------------------------------------
# Multiscale groups


def _ts_group(root: Path, group_attributes: dict[str, Any] | None) -> list[np.ndarray]:
    levels = [make_volume("uint8", (13, 22, 27), seed=1), make_volume("uint8", (13, 11, 14), seed=2)]
    for i, level in enumerate(levels):
        ts_write(root / f"s{i}", level, "gzip")
    if group_attributes is not None:
        (root / "attributes.json").write_text(json.dumps(group_attributes))
    return levels


@pytest.mark.parametrize(
    "group",
    [
        None,  # a group without attributes.json: found by its s0
        {"n5": "2.5.1", "multiScale": True, "scales": [[1, 1, 1], [2, 2, 1]], "axes": ["x", "y", "z"]},
        {"multiscales": [{"datasets": [{"path": "s0"}, {"path": "s1"}]}], "axes": ["x", "y", "z"]},
    ],
)
def test_multiscale_group_scale_by_key_and_index_default_s0(files_server, tmp_path, group):
    levels = _ts_group(tmp_path / "data" / "cell.n5" / "em", group)
    files_server.mount("data", tmp_path / "data")
    source = files_server.files_url("data", "cell.n5/em")
    for scale, want in ((None, 0), ("s1", 1), (1, 1), ("0", 0)):
        desc = tmp_path / f"scale-{scale}.json"
        describe_source(source, desc, scale=scale, cache_dir=f"c-{scale}")
        remote = description.read_composite(desc).remote_description
        assert remote.n5_dataset == f"s{want}" and remote.name == f"em/s{want}"
        assert list(remote.shape) == list(levels[want].shape)
        np.testing.assert_array_equal(_read_all(desc, levels[want].shape), levels[want])
    with pytest.raises(DescriptionError) as info:
        describe_source(source, tmp_path / "bad.json", scale=5)
    assert info.value.field == "scale" and "s1" in str(info.value)
    with pytest.raises(DescriptionError) as info:
        describe_source(source, tmp_path / "bad.json", scale="s9")
    assert info.value.field == "scale"


def test_a_plain_location_is_detected_as_n5_and_a_dataset_refuses_a_scale(files_server, tmp_path):
    _ts_group(tmp_path / "data" / "g.n5", None)
    files_server.mount("data", tmp_path / "data")
    request = ProbeRequest()
    assert formats.detect(files_server.files_url("data", "g.n5"), request).name == "n5"
    assert formats.detect(files_server.files_url("data", "g.n5/s1"), request).name == "n5"
    assert formats.detect(str(tmp_path / "data" / "g.n5"), request).name == "n5"
    with pytest.raises(DescriptionError) as info:
        formats.detect(files_server.files_url("data", "nothing"), request)
    assert "attributes.json" in str(info.value)
    with pytest.raises(DescriptionError) as info:
        describe_source(files_server.files_url("data", "g.n5/s0"), tmp_path / "d.json", scale="s1")
    assert info.value.field == "scale" and "single N5 dataset" in str(info.value)
    with pytest.raises(DescriptionError) as info:  # neither a dataset nor a group with s0
        describe_source("n5://" + files_server.files_url("data", "nothing"), tmp_path / "d.json")
    assert info.value.field == "source"


# ---------------------------------------------------------------------------------------------------------
# The test kit's writer: cropped edge blocks, old-style compressionType, axes, mode 1, rbfs serve


@pytest.mark.parametrize("compression", ["raw", "gzip", "zlib", "bzip2", "xz", "blosc", "zstd"])
def test_cropped_edge_blocks_of_the_kit_writer_read_by_us_and_by_tensorstore(
    files_server, tmp_path, compression
):
    volume = make_volume("uint16")
    keys = write_n5_dataset(volume, tmp_path / "d.n5", block_shape=BLOCK, compression=compression)
    last = "/".join(str(n // b) for n, b in zip(SHAPE[::-1], BLOCK[::-1]))
    body = (tmp_path / "d.n5" / last).read_bytes()
    assert struct.unpack_from(">HH3I", body) == (0, 3, 27 % 10, 22 % 8, 13 % 5)  # cropped at the edge
    assert last in keys
    if compression != "zlib":  # tensorstore (an independent reader) agrees with the kit's writer
        store = ts.open(
            {"driver": "n5", "kvstore": {"driver": "file", "path": str(tmp_path / "d.n5")}}
        ).result()
        np.testing.assert_array_equal(store.read().result().T, volume)
    files_server.mount("data", tmp_path)
    desc = tmp_path / "d.json"
    describe_source(files_server.files_url("data", "d.n5"), desc, cache_dir="c")
    np.testing.assert_array_equal(_read_all(desc, SHAPE), volume)


def test_old_style_compression_type_axes_and_mode_1_blocks(tmp_path):
    volume = np.random.default_rng(5).integers(1, 255, size=(3, 6, 7, 9), dtype=np.uint8)
    write_n5_dataset(volume, tmp_path / "c.n5", block_shape=(3, 4, 4, 4), compression="bzip2", old_style=True)
    attrs = json.loads((tmp_path / "c.n5" / "attributes.json").read_text())
    attrs["axes"] = ["x", "y", "z", "channel"]  # fastest first: C order czyx
    (tmp_path / "c.n5" / "attributes.json").write_text(json.dumps(attrs))
    block = volume[:, 4:, 4:8, 8:]
    (tmp_path / "c.n5" / "2" / "1" / "1" / "0").write_bytes(encode_block(block, "bzip2", mode=1))
    desc = tmp_path / "c.json"
    describe_source(str(tmp_path / "c.n5"), desc, cache_dir="c")
    remote = description.read_composite(desc).remote_description
    assert remote.axes == "czyx" and remote.n5_compression == "bzip2"
    np.testing.assert_array_equal(_read_all(desc, volume.shape), volume)


def test_axis_names_outside_txyzc_are_refused(tmp_path):
    write_n5_dataset(make_volume("uint8"), tmp_path / "a.n5", block_shape=BLOCK, axes="zyx")
    attrs = json.loads((tmp_path / "a.n5" / "attributes.json").read_text())
    assert attrs["axes"] == ["x", "y", "z"]
    attrs["axes"] = ["x", "y", "angle"]
    (tmp_path / "a.n5" / "attributes.json").write_text(json.dumps(attrs))
    with pytest.raises(DescriptionError) as info:
        describe_source(str(tmp_path / "a.n5"), tmp_path / "a.json")
    assert info.value.field == "axes" and "'angle'" in str(info.value)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_rbfs_serve_format_n5_describes_a_multiscale_group(tmp_path, capsys):
    volume = make_volume("uint8", (9, 40, 36))
    np.save(tmp_path / "v.npy", volume)
    desc = tmp_path / "served.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lazyflow_rbfs", "serve", str(tmp_path / "v.npy"), "--format", "n5"]
        + ["--describe", str(desc), "--block-shape", "9,32,32", "--cache-dir", "served-cache"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=str(tmp_path),
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        assert any("serving n5 at http://127.0.0.1:" in line for line in lines), lines
        remote = description.read_composite(desc).remote_description
        assert remote.format == "n5" and remote.n5_dataset == "s0" and remote.axes == "zyx"
        assert main(["read", str(desc), "--roi", "2:9,:,5:", "-o", str(tmp_path / "r.npy")]) == 0
        np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), volume[2:9, :, 5:])
        # The describe command it prints runs as printed (with OUT.json named).
        (hint,) = [line for line in lines if line.startswith("describe it with: ")]
        words = shlex.split(hint[len("describe it with: ") :])
        assert words[words.index("-o") + 1] == "OUT.json"
        words[words.index("-o") + 1] = str(tmp_path / "again.json")
        again = subprocess.run(words, capture_output=True, text=True, env=_env(), timeout=120)
        assert again.returncode == 0, again.stderr
        assert description.read_composite(tmp_path / "again.json").remote_description.format == "n5"
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err


def test_write_n5_levels_halve_y_and_x(tmp_path):
    volume = make_volume("uint8", (4, 10, 12))
    assert write_n5(volume, "zyx", str(tmp_path), block_shape=(4, 4, 4), levels=2) == "volume.n5"
    store = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(tmp_path / "volume.n5/s1")}})
    np.testing.assert_array_equal(store.result().read().result().T, volume[:, ::2, ::2])


# ---------------------------------------------------------------------------------------------------------
# Hostile metadata and blocks


def _served_dataset(server: CutoutServer, tmp_path: Path) -> tuple[Path, np.ndarray, Path]:
    volume = make_volume("uint16")
    folder = tmp_path / "data" / "h.n5"
    write_n5_dataset(volume, folder, block_shape=BLOCK, compression="gzip", skip_zero_blocks=False)
    server.mount("data", tmp_path / "data")
    desc = tmp_path / "h.json"
    describe_source(server.files_url("data", "h.n5"), desc, block_shape=BLOCK, cache_dir="c")
    return desc, volume, folder


def _header(mode: int, sizes: list[int], extra: bytes = b"") -> bytes:
    return struct.pack(f">HH{len(sizes)}I", mode, len(sizes), *sizes) + extra


@pytest.mark.parametrize(
    "body,message",
    [
        (_header(0, [1000, 1000, 1000]) + b"\x1f\x8b" + b"\0" * 50, "between"),  # 2 GB block
        (_header(0, [10, 8]) + b"\0" * 64, "2 in its header"),  # wrong ndim
        (_header(2, [10, 8, 5]) + b"\0" * 64, "mode 2"),  # object mode
        (_header(1, [10, 8, 5], struct.pack(">I", 7)), "elements"),  # varlength count that lies
        (_header(0, [10, 8, 5]) + b"not gzip at all", "gzip"),  # bad data
        (b"\0", "header"),  # cut short
    ],
)
def test_hostile_block_headers_are_invalid_responses_without_huge_allocations(
    files_server, tmp_path, body, message
):
    desc, volume, folder = _served_dataset(files_server, tmp_path)
    (folder / "1" / "1" / "1").write_bytes(body)  # the block at z 5:10, y 8:16, x 10:20
    tracemalloc.start()
    try:
        with RESTfulBlockwiseFileset(desc, retries=0) as fs:
            np.testing.assert_array_equal(fs.readData(((0, 0, 0), (5, 8, 10))), volume[:5, :8, :10])
            tracemalloc.reset_peak()
            with pytest.raises(InvalidResponseError) as info:
                fs.readData(((5, 8, 10), (10, 16, 20)))
            _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message in str(info.value) and "/h.n5/1/1/1" in str(info.value)
    assert peak < 64 * 1024 * 1024  # the header is checked before anything is inflated


def test_a_block_body_larger_than_any_block_is_refused_unread(files_server, tmp_path):
    desc, _, folder = _served_dataset(files_server, tmp_path)
    (folder / "0" / "0" / "0").write_bytes(_header(0, [10, 8, 5]) + os.urandom(4 * 1024 * 1024))
    with RESTfulBlockwiseFileset(desc, retries=0) as fs, pytest.raises(InvalidResponseError):
        fs.readData(((0, 0, 0), (5, 8, 10)))


def test_forbidden_block_is_an_error_never_zeros(files_server, tmp_path):
    desc, _, _ = _served_dataset(files_server, tmp_path)
    files_server.faults.fail_matching("/h.n5/0/0/0", 403)
    with RESTfulBlockwiseFileset(desc, retries=0) as fs, pytest.raises(DownloadError) as info:
        fs.readData(((0, 0, 0), (5, 8, 10)))
    assert info.value.status == 403


@pytest.mark.parametrize(
    "change,field",
    [
        ({"blockSize": [10, 8, 4]}, "n5_block_shape"),
        ({"dataType": "uint8"}, "dtype"),
        ({"compression": {"type": "xz"}}, "n5_compression"),
        ({"dimensions": [27, 22, 3]}, "bounds"),
    ],
)
def test_a_changed_source_is_refused_at_open(files_server, tmp_path, change, field):
    desc, _, folder = _served_dataset(files_server, tmp_path)
    attrs = json.loads((folder / "attributes.json").read_text())
    (folder / "attributes.json").write_text(json.dumps({**attrs, **change}))
    with RESTfulBlockwiseFileset(desc) as fs, pytest.raises(DescriptionError) as info:
        fs.readData(((0, 0, 0), (5, 8, 10)))
    assert info.value.field == field and "changed" in str(info.value)


@pytest.mark.parametrize(
    "attrs,error,text",
    [
        ({"blockSize": [4096, 4096, 4096]}, InvalidResponseError, "128 MiB"),
        ({"compression": {"type": "lz4"}}, DescriptionError, "'lz4'"),
        ({"dataType": "object"}, DescriptionError, "dataType"),
        ({"dimensions": [27, -1, 13]}, InvalidResponseError, "dimensions"),
        ({"blockSize": [10, 8]}, InvalidResponseError, "blockSize"),
    ],
)
def test_hostile_attributes_are_refused_by_describe(tmp_path, attrs, error, text):
    write_n5_dataset(make_volume("uint8"), tmp_path / "a.n5", block_shape=BLOCK)
    base = json.loads((tmp_path / "a.n5" / "attributes.json").read_text())
    (tmp_path / "a.n5" / "attributes.json").write_text(json.dumps({**base, **attrs}))
    with pytest.raises(error) as info:
        describe_source(str(tmp_path / "a.n5"), tmp_path / "a.json")
    assert text in str(info.value)


def test_description_fields_are_validated(tmp_path):
    remote = {
        "_schema_name": "RESTful-volume-description",
        "_schema_version": 1.0,
        "format": "n5",
        "axes": "zyx",
        "dtype": "uint8",
        "bounds": [4, 4, 4],
        "n5_url": "http://h/x.n5/",
        "n5_dataset": "s0",
        "n5_block_shape": [2, 2, 2],
        "n5_compression": "gzip",
    }
    assert description.parse_remote(remote).n5_url == "http://h/x.n5"
    for bad, field in (
        ({"n5_dataset": "../etc"}, "n5_dataset"),
        ({"n5_block_shape": [2, 2]}, "n5_block_shape"),
        ({"n5_block_shape": [2, 0, 2]}, "n5_block_shape"),
        ({"n5_compression": "lz4"}, "n5_compression"),
        ({"n5_url": "ftp://h/x"}, "n5_url"),
    ):
        with pytest.raises(DescriptionError) as info:
            description.parse_remote({**remote, **bad})
        assert info.value.field == field, bad
