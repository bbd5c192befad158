"""Issue 11 part A: sharded neuroglancer precomputed (``neuroglancer_uint64_sharded_v1``), png and
compressed_segmentation chunks, read through ``rbfs describe`` and the cache over a local Range-capable
server and over file://. Volumes are written by tensorstore (an independent implementation) and by the
test kit's own writer (``rbfs serve --format precomputed-sharded``)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lazyflow_rbfs import RESTfulBlockwiseFileset
from lazyflow_rbfs.cli import main
from lazyflow_rbfs.describe import describe_source
from lazyflow_rbfs.errors import DescriptionError, DownloadError, InvalidResponseError
from lazyflow_rbfs.remote.codecs import segmentation
from lazyflow_rbfs.remote.codecs.base import Expected
from lazyflow_rbfs.remote.formats import precomputed_shards as shards
from lazyflow_rbfs.testing import CutoutServer, sample_volume, static

ts = pytest.importorskip("tensorstore")

REPO = Path(__file__).resolve().parents[1]
SIZE_XYZ = (40, 36, 20)  # y and z are not multiples of the chunk: edge chunks are cut short
CHUNK_XYZ = (8, 8, 4)
BLOCK = (4, 8, 8)  # one chunk per block (z, y, x)

MURMUR_GZIP = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "preshift_bits": 1,
    "hash": "murmurhash3_x86_128",
    "minishard_bits": 2,
    "shard_bits": 2,
    "minishard_index_encoding": "gzip",
    "data_encoding": "gzip",
}
IDENTITY_RAW = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "preshift_bits": 0,
    "hash": "identity",
    "minishard_bits": 1,
    "shard_bits": 1,
    "minishard_index_encoding": "raw",
    "data_encoding": "raw",
}


def labels(shape: tuple[int, ...], dtype: str, seed: int = 0) -> np.ndarray:
    """Blocky labels (few distinct values per region, as segmentations are) with noise in uint8 images."""
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    coarse = rng.integers(1, 2**40 if dtype == "uint64" else 2**31, size=[-(-n // 3) for n in shape])
    return np.repeat(np.repeat(np.repeat(coarse, 3, 0), 3, 1), 3, 2)[
        tuple(slice(0, n) for n in shape)
    ].astype(dtype)


def ts_write(
    folder: Path,
    dtype: str,
    encoding: str,
    sharding: dict | None,
    *,
    channels: int = 1,
    size_xyz=SIZE_XYZ,
    chunk_xyz=CHUNK_XYZ,
    volume: np.ndarray | None = None,
) -> np.ndarray:
    """Write a volume with tensorstore; return what tensorstore reads back, as (c,) z, y, x."""
    scale = {
        "size": list(size_xyz),
        "chunk_size": list(chunk_xyz),
        "encoding": encoding,
        "resolution": [4, 4, 40],
    }
    if sharding is not None:
        scale["sharding"] = sharding
    if encoding == "compressed_segmentation":
        scale["compressed_segmentation_block_size"] = [4, 4, 2]
    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(folder)},
            "multiscale_metadata": {"type": "image", "data_type": dtype, "num_channels": channels},
            "scale_metadata": scale,
            "create": True,
        }
    ).result()
    if volume is None:
        volume = labels((*size_xyz, channels), dtype)
    store.write(volume).result()
    back = np.asarray(store.read().result()).transpose(3, 2, 1, 0)  # x, y, z, c -> c, z, y, x
    return back[0] if channels == 1 else back


def shard_requests(server: CutoutServer) -> list[tuple[str, str | None]]:
    return [(r.path, r.headers.get("Range")) for r in server.request_log if r.path.endswith(".shard")]


def read_all(desc: str, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    with RESTfulBlockwiseFileset(desc) as fs:
        out = fs.readData(((0,) * len(shape), shape))
        return out, fs.remote.stats.requests


CASES = {
    "uint8-raw-identity": ("uint8", "raw", IDENTITY_RAW),
    "uint8-raw-murmur-gzip": ("uint8", "raw", MURMUR_GZIP),
    "uint64-compressed_segmentation-murmur-gzip": ("uint64", "compressed_segmentation", MURMUR_GZIP),
    "uint32-compressed_segmentation-identity": ("uint32", "compressed_segmentation", IDENTITY_RAW),
    "uint8-png-murmur-gzip": ("uint8", "png", MURMUR_GZIP),
    "uint8-jpeg-identity": ("uint8", "jpeg", IDENTITY_RAW),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tensorstore_sharded_volume_is_read_over_http_and_file_once_per_range(case, tmp_path):
    dtype, encoding, sharding = CASES[case]
    expected = ts_write(tmp_path / "vol", dtype, encoding, sharding)
    with CutoutServer(sample_volume((4, 8, 8)), files={"d": tmp_path}) as server:
        desc = describe_source(
            server.files_url("d", "vol"), tmp_path / "http.json", block_shape=BLOCK, cache_dir="http-cache"
        )
        remote = json.loads(Path(desc).read_text())["remote_description"]
        assert remote["precomputed_encoding"] == encoding
        assert remote["precomputed_sharding"]["hash"] == sharding["hash"]
        server.reset_stats()
        got, requests = read_all(desc, expected.shape)
        np.testing.assert_array_equal(got, expected)
        log = shard_requests(server)
        assert all(rng is not None for _, rng in log), "every shard read is a Range request"
        duplicates = [k for k, n in collections.Counter(log).items() if n > 1]
        assert duplicates == [], f"byte ranges fetched twice: {duplicates}"
        nchunks = int(np.prod([-(-s // c) for s, c in zip(SIZE_XYZ, CHUNK_XYZ)]))
        nshards = 2 ** sharding["shard_bits"]
        nminishards = nshards * 2 ** sharding["minishard_bits"]
        # info + at most one shard index per shard, one index per minishard, one data range per chunk.
        assert len(log) <= nshards + nminishards + nchunks
        assert requests == len(server.request_log)
        # A warm reader (a new fileset object) makes no request.
        server.reset_stats()
        again, requests = read_all(desc, expected.shape)
        np.testing.assert_array_equal(again, expected)
        assert requests == 0 and server.request_log == []
        # ... nor does one in a new process.
        script = (
            "import sys, numpy as np\n"
            "from lazyflow_rbfs import RESTfulBlockwiseFileset\n"
            "with RESTfulBlockwiseFileset(sys.argv[1]) as fs:\n"
            f"    a = fs.readData(((0, 0, 0), {tuple(expected.shape)}))\n"
            "    print(fs.remote.stats.requests, int(a.astype('uint64').sum() % 1000003))\n"
        )
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        out = subprocess.run(
            [sys.executable, "-c", script, desc], capture_output=True, text=True, env=env, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["0", str(int(expected.astype("uint64").sum() % 1000003))]
        assert server.request_log == []
    # The same folder over file://, through a plain path.
    desc = describe_source(str(tmp_path / "vol"), tmp_path / "file.json", block_shape=BLOCK, cache_dir="fc")
    assert json.loads(Path(desc).read_text())["remote_description"]["precomputed_url"].startswith("file:///")
    got, _ = read_all(desc, expected.shape)
    np.testing.assert_array_equal(got, expected)


def test_concurrent_blocks_fetch_each_index_once_and_adjacent_chunks_in_one_request(tmp_path):
    # One shard, one minishard: every chunk of a block is adjacent in the shard (identity hash, ids in
    # Morton order), so a block of 2x2x2 chunks is one data request.
    one = dict(IDENTITY_RAW, minishard_bits=0, shard_bits=0)
    expected = ts_write(tmp_path / "vol", "uint8", "raw", one, size_xyz=(32, 32, 16))
    with CutoutServer(sample_volume((4, 8, 8)), files={"d": tmp_path}) as server:
        desc = describe_source(
            server.files_url("d", "vol"), tmp_path / "d.json", block_shape=(8, 16, 16), cache_dir="c"
        )
        server.reset_stats()
        with RESTfulBlockwiseFileset(desc, max_parallel=8) as fs:
            np.testing.assert_array_equal(fs.readData(((0, 0, 0), expected.shape)), expected)
        log = shard_requests(server)
    assert log.count(("/files/d/vol/4_4_40/0.shard", "bytes=0-15")) == 1  # the shard index, once
    nblocks = 2 * 2 * 2
    data = [r for r in log if r[1] != "bytes=0-15"]
    # One minishard index, then one request per block (its 8 chunks are adjacent).
    assert len(data) == 1 + nblocks, data
    assert len(set(data)) == len(data)


def test_test_kit_writer_is_read_by_tensorstore_and_by_rbfs(tmp_path):
    volume = labels((2, 10, 20, 24), "uint8", seed=3)  # 2 channels
    rel = static.write_source("precomputed-sharded", volume, "czyx", tmp_path, chunk_xyz=(8, 8, 4))
    store = ts.open(
        {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(tmp_path / rel)}}
    )
    np.testing.assert_array_equal(np.asarray(store.result().read().result()).transpose(3, 2, 1, 0), volume)
    desc = describe_source(str(tmp_path / rel), tmp_path / "d.json", block_shape=(2, 4, 8, 8), cache_dir="c")
    np.testing.assert_array_equal(read_all(desc, volume.shape)[0], volume)
    seg = labels((10, 20, 24), "uint64", seed=4)
    rel = static.write_source(
        "precomputed-sharded",
        seg,
        "zyx",
        tmp_path,
        folder_name="seg",
        encoding="compressed_segmentation",
        chunk_xyz=(8, 8, 4),
        hash="identity",
    )
    store = ts.open(
        {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(tmp_path / rel)}}
    )
    np.testing.assert_array_equal(np.asarray(store.result().read().result())[..., 0].transpose(2, 1, 0), seg)


def test_unsharded_png_and_compressed_segmentation_are_read(tmp_path):
    for dtype, encoding, channels in (
        ("uint8", "png", 3),
        ("uint16", "png", 1),
        ("uint64", "compressed_segmentation", 1),
    ):
        folder = tmp_path / f"{encoding}-{dtype}"
        expected = ts_write(folder, dtype, encoding, None, channels=channels)
        desc = describe_source(str(folder), tmp_path / f"{folder.name}.json", cache_dir=f"c-{folder.name}")
        np.testing.assert_array_equal(read_all(desc, expected.shape)[0], expected)


# -- missing chunks, missing shards ---------------------------------------------------------------------


def test_a_chunk_missing_from_its_minishard_or_shard_is_404_unless_fill_missing(tmp_path):
    volume = labels((8, 16, 16), "uint8", seed=5)
    static.write_source(
        "precomputed-sharded", volume, "zyx", tmp_path, chunk_xyz=(8, 8, 4), omit={(1, 0, 1)}, shard_bits=1
    )
    expected = volume.copy()
    expected[4:8, 0:8, 8:16] = 0
    with CutoutServer(sample_volume((4, 8, 8)), files={"d": tmp_path}) as server:
        url = server.files_url("d", "sharded")
        desc = describe_source(url, tmp_path / "a.json", block_shape=(4, 8, 8), cache_dir="a")
        with RESTfulBlockwiseFileset(desc) as fs:
            np.testing.assert_array_equal(fs.readData(((0, 0, 0), (4, 16, 16))), volume[:4])
            with pytest.raises(DownloadError) as info:
                fs.readData(((4, 0, 8), (8, 8, 16)))
        assert info.value.status == 404 and "fill_missing" in str(info.value)
        desc = describe_source(
            url, tmp_path / "b.json", block_shape=(4, 8, 8), cache_dir="b", fill_missing=True
        )
        np.testing.assert_array_equal(read_all(desc, volume.shape)[0], expected)
    # A shard file that does not exist: all its chunks are missing.
    shard_files = sorted((tmp_path / "sharded" / "1_1_1").iterdir())
    assert len(shard_files) == 2
    shard_files[0].unlink()
    desc = describe_source(
        str(tmp_path / "sharded"), tmp_path / "c.json", block_shape=(4, 8, 8), cache_dir="c"
    )
    with RESTfulBlockwiseFileset(desc) as fs, pytest.raises(DownloadError) as info:
        fs.readData(((0, 0, 0), volume.shape))
    assert info.value.status == 404 and ".shard (chunk " in str(info.value)
    desc = describe_source(
        str(tmp_path / "sharded"),
        tmp_path / "d.json",
        block_shape=(4, 8, 8),
        cache_dir="d",
        fill_missing=True,
    )
    info = json.loads((tmp_path / "sharded" / "info").read_text())
    spec = shards.parse_sharding(info["scales"][0]["sharding"], "info")
    gone = int(shard_files[0].name.split(".")[0], 16)
    for position in np.ndindex(2, 2, 2):  # the x, y, z grid of 8 x 8 x 4 chunks
        if spec.locate(shards.compressed_morton_code(position, (2, 2, 2)))[0] == gone:
            x, y, z = position
            expected[z * 4 : z * 4 + 4, y * 8 : y * 8 + 8, x * 8 : x * 8 + 8] = 0
    np.testing.assert_array_equal(read_all(desc, volume.shape)[0], expected)


# -- hostile shards -----------------------------------------------------------------------------------------


def _one_shard(tmp_path: Path) -> tuple[np.ndarray, Path]:
    volume = labels((4, 8, 16), "uint8", seed=6)
    static.write_source(
        "precomputed-sharded",
        volume,
        "zyx",
        tmp_path,
        chunk_xyz=(8, 8, 4),
        minishard_bits=0,
        shard_bits=0,
        hash="identity",
        minishard_index_encoding="raw",
        data_encoding="raw",
    )
    return volume, tmp_path / "sharded" / "1_1_1" / "0.shard"


@pytest.mark.parametrize(
    "damage",
    ["index-past-end", "huge-minishard", "start-after-end", "chunk-past-end", "huge-chunk", "ragged-index"],
)
def test_a_hostile_shard_is_an_invalid_response_never_a_huge_request(damage, tmp_path):
    volume, shard = _one_shard(tmp_path)
    body = bytearray(shard.read_bytes())
    start, end = np.frombuffer(bytes(body[:16]), "<u8")
    table = np.frombuffer(bytes(body[16 + int(start) : 16 + int(end)]), "<u8").reshape(3, -1).copy()
    if damage == "index-past-end":
        body[:16] = np.array([start, len(body) + 100], "<u8").tobytes()
    elif damage == "huge-minishard":
        body[:16] = np.array([0, 2**40], "<u8").tobytes()
    elif damage == "start-after-end":
        body[:16] = np.array([end, start], "<u8").tobytes()
    elif damage in ("chunk-past-end", "huge-chunk"):
        table[2, -1] = 60_000 if damage == "chunk-past-end" else 2**45  # within / beyond a chunk's limit
        body[16 + int(start) : 16 + int(end)] = table.tobytes()
    else:
        body[:16] = np.array([start, end - 8], "<u8").tobytes()
    shard.write_bytes(bytes(body))
    with CutoutServer(sample_volume((4, 8, 8)), files={"d": tmp_path}) as server:
        for source in (server.files_url("d", "sharded"), str(tmp_path / "sharded")):
            desc = describe_source(source, tmp_path / f"{len(source)}.json", cache_dir=f"c{len(source)}")
            with RESTfulBlockwiseFileset(desc) as fs, pytest.raises(InvalidResponseError):
                fs.readData(((0, 0, 0), volume.shape))
        for _, header in shard_requests(server):
            first, last = (int(v) for v in header.split("=")[1].split("-"))
            assert last - first < 1 << 20, f"a hostile index made the reader ask for {header}"


def test_compressed_segmentation_structure_is_checked_before_the_library_sees_it():
    codec = segmentation.codec_for((4, 4, 2))
    chunk = labels((1, 4, 8, 8), "uint64", seed=7)
    body = codec.encode(chunk)
    expected = Expected("http://h/c", chunk.shape, np.dtype(np.uint64))
    np.testing.assert_array_equal(codec.decode(body, expected), chunk)
    words = np.frombuffer(body, "<u4").copy()
    bad_bits = words.copy()
    bad_bits[1] = (bad_bits[1] & 0xFFFFFF) | (3 << 24)  # 3 bits per value: not a valid width
    past_table = words.copy()
    past_table[1] = (len(words) - 1) | (16 << 24)  # a 16-bit block whose table starts at the last word
    for damaged in (body[:-4], body[:6], bad_bits.tobytes(), past_table.tobytes(), words[:3].tobytes()):
        with pytest.raises(InvalidResponseError):
            codec.decode(damaged, expected)
    # Random damage never crashes the process (the library itself does not check its input).
    rng = np.random.default_rng(8)
    for _ in range(500):
        damaged = bytearray(body)
        for i in rng.integers(0, len(body), size=3):
            damaged[i] = int(rng.integers(0, 256))
        try:
            codec.decode(bytes(damaged), expected)
        except InvalidResponseError:
            pass


# -- servers without Range support, changed sources, missing packages ------------------------------------


def test_a_server_without_range_support_is_a_clear_error_for_describe_and_read(tmp_path, capsys):
    ts_write(tmp_path / "vol", "uint8", "raw", MURMUR_GZIP)
    with CutoutServer(sample_volume((4, 8, 8)), files={"d": tmp_path}) as server:
        url = server.files_url("d", "vol")
        assert main(["describe", url, "-o", str(tmp_path / "d.json"), "--block-shape", "4,8,8"]) == 0
        capsys.readouterr()
        server.range_requests = False
        code = main(["describe", url, "-o", str(tmp_path / "e.json")])
        err = capsys.readouterr().err
        assert code != 0 and "does not support HTTP Range requests" in err and "sharded" in err, err
        assert not (tmp_path / "e.json").exists()
        code = main(["read", str(tmp_path / "d.json"), "--roi", "0:4,0:8,0:8", "-o", str(tmp_path / "o.npy")])
        err = capsys.readouterr().err
        assert code != 0 and "does not support HTTP Range requests" in err and "sharded" in err, err


def test_describe_records_the_sharding_and_the_reader_refuses_a_changed_source(tmp_path):
    ts_write(tmp_path / "vol", "uint8", "raw", MURMUR_GZIP)
    desc = describe_source(str(tmp_path / "vol"), tmp_path / "d.json", cache_dir="c")
    info_path = tmp_path / "vol" / "info"
    info = json.loads(info_path.read_text())
    info["scales"][0]["sharding"]["minishard_bits"] = 3
    info_path.write_text(json.dumps(info))
    with RESTfulBlockwiseFileset(desc) as fs, pytest.raises(DescriptionError) as err:
        fs.readData(((0, 0, 0), (1, 1, 1)))
    assert err.value.field == "precomputed_sharding" and "changed" in str(err.value)
    info["scales"][0]["sharding"]["minishard_bits"] = 2
    info["scales"][0]["encoding"] = "png"
    info_path.write_text(json.dumps(info))
    with RESTfulBlockwiseFileset(desc) as fs, pytest.raises(DescriptionError) as err:
        fs.readData(((0, 0, 0), (1, 1, 1)))
    assert err.value.field == "precomputed_encoding"


def test_missing_optional_packages_are_named(tmp_path, monkeypatch):
    ts_write(tmp_path / "m", "uint8", "raw", MURMUR_GZIP)
    ts_write(tmp_path / "s", "uint32", "compressed_segmentation", IDENTITY_RAW)
    monkeypatch.setitem(sys.modules, "mmh3", None)  # import mmh3 fails
    with pytest.raises(DescriptionError, match="mmh3"):
        describe_source(str(tmp_path / "m"), tmp_path / "m.json")
    monkeypatch.setitem(sys.modules, "compressed_segmentation", None)
    with pytest.raises(DescriptionError, match="compressed-segmentation"):
        describe_source(str(tmp_path / "s"), tmp_path / "s.json")


def test_compressed_morton_codes_and_shard_names():
    # Grid 4 x 4 x 2: 2 bits of x and y, 1 bit of z, interleaved x0 y0 z0 x1 y1.
    assert shards.compressed_morton_code((2, 3, 1), (4, 4, 2)) == 0b11110
    assert shards.compressed_morton_code((1, 0, 0), (4, 4, 2)) == 1
    assert shards.compressed_morton_code((0, 0, 1), (4, 4, 2)) == 4
    # An axis of one chunk takes no bits.
    assert shards.compressed_morton_code((3, 0, 1), (4, 1, 2)) == 0b111  # x0 z0 x1
    spec = shards.parse_sharding(dict(IDENTITY_RAW, shard_bits=5), "x")
    assert spec.shard_name(3) == "03.shard" and spec.locate(0b1011011) == (0b01101, 1)
    for bad in (dict(IDENTITY_RAW, hash="md5"), dict(IDENTITY_RAW, minishard_bits=40), {"@type": "other"}):
        with pytest.raises(ValueError):
            shards.parse_sharding(bad, "x")


def test_serve_writes_and_describes_a_sharded_volume(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    volume = labels((16, 40, 40), "uint8", seed=9)
    np.save(tmp_path / "v.npy", volume)
    desc = tmp_path / "served.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lazyflow_rbfs",
            "serve",
            str(tmp_path / "v.npy"),
            "--format",
            "precomputed-sharded",
            "--describe",
            str(desc),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(tmp_path),
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        assert any("serving precomputed-sharded at http://127.0.0.1:" in line for line in lines), lines
        remote = json.loads(desc.read_text())["remote_description"]
        assert remote["precomputed_sharding"]["hash"] == "murmurhash3_x86_128"
        np.testing.assert_array_equal(read_all(str(desc), volume.shape)[0], volume)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
