"""zarr v2/v3 arrays, OME-Zarr 0.4/0.5 images and zarr v3 sharding (issue 11, part B).

Arrays are written by independent libraries (zarr-python 3.x, tensorstore) and read back through
``rbfs describe`` and the block cache, over the test server (static files with Range) and over file://.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    GzipCodec,
    ShardingCodec,
    TransposeCodec,
    ZstdCodec,
)

import lazyflow_rbfs
from lazyflow_rbfs import RESTfulBlockwiseFileset, description, locations
from lazyflow_rbfs.describe import describe_source
from lazyflow_rbfs.errors import DescriptionError, DownloadError, InvalidResponseError
from lazyflow_rbfs.remote import formats
from lazyflow_rbfs.remote.formats import ProbeRequest
from lazyflow_rbfs.testing import CutoutServer, static

REPO = Path(__file__).resolve().parents[1]
SHAPE = (20, 30, 40)  # not a multiple of the chunks: edge chunks are partial
CHUNKS = (8, 16, 16)


def volume(dtype: str = "uint16", shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    rng = np.random.default_rng(11)
    data = rng.integers(0, 200, size=shape)
    return (data + np.arange(shape[-1])).astype(dtype)  # compressible, position-dependent


@pytest.fixture
def served(tmp_path: Path):
    folder = tmp_path / "data"
    folder.mkdir()
    with CutoutServer(np.zeros((2, 2, 2), np.uint8), files={"d": folder}) as server:
        yield server, folder


def read_all(source: str, out: Path, **options) -> tuple[np.ndarray, RESTfulBlockwiseFileset]:
    """Describe ``source`` and read the whole volume through the cache (cold); returns data and the
    (closed) fileset."""
    path = describe_source(source, out, **options)
    with RESTfulBlockwiseFileset(path) as fs:
        data = fs.readData(([0] * len(fs.shape), list(fs.shape)))
    return data, fs


def check_requests(server: CutoutServer, since: int) -> list[tuple[str, str | None]]:
    """The (path, Range) pairs requested since log entry ``since``; each at most once."""
    pairs = [(r.path, r.headers.get("Range")) for r in server.request_log[since:]]
    twice = [p for p, n in collections.Counter(pairs).items() if n > 1]
    assert not twice, f"fetched more than once: {twice}"
    return pairs


def read_both_ways(server: CutoutServer, folder: Path, rel: str, tmp_path: Path, expected: np.ndarray, **kw):
    """Read ``rel`` over HTTP (checking request counts and a warm re-read) and over file://."""
    before = len(server.request_log)
    source = server.files_url("d", rel)
    path = describe_source(source, tmp_path / "http.json", **kw)
    described = len(server.request_log)
    with RESTfulBlockwiseFileset(path) as fs:
        np.testing.assert_array_equal(fs.readData(([0] * expected.ndim, list(expected.shape))), expected)
        assert fs.remote.stats.requests == len(server.request_log) - described
    pairs = check_requests(server, described)
    with RESTfulBlockwiseFileset(path) as fs:  # warm: another reader makes no request
        np.testing.assert_array_equal(fs[tuple(slice(0, n) for n in expected.shape)], expected)
        assert fs.remote.stats.requests == 0
    assert len(server.request_log) - before == len(pairs) + (described - before)
    data, _ = read_all(locations.file_url(folder / rel), tmp_path / "file.json", **kw)
    np.testing.assert_array_equal(data, expected)
    return pairs, description.read_composite(path)


# -- zarr v2 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "compressor, separator, order, dtype",
    [
        (numcodecs.Blosc(cname="lz4", shuffle=1), ".", "C", "<u2"),
        (numcodecs.Zstd(level=3), "/", "F", ">u2"),
        (numcodecs.GZip(level=5), ".", "F", "<i4"),
        (numcodecs.Zlib(level=1), "/", "C", ">f4"),
        (numcodecs.LZ4(), ".", "C", "|u1"),
        (numcodecs.BZ2(), ".", "C", "<u2"),
        (numcodecs.LZMA(), "/", "C", "<u2"),
        (None, ".", "F", ">i8"),
    ],
)
def test_zarr_v2_arrays_written_by_zarr_python_read_back(
    served, tmp_path, compressor, separator, order, dtype
):
    server, folder = served
    expected = volume(np.dtype(dtype).newbyteorder("=").name)
    arr = zarr.create_array(
        str(folder / "a.zarr"),
        shape=SHAPE,
        chunks=CHUNKS,
        dtype=dtype,
        zarr_format=2,
        compressors=compressor,
        order=order,
        chunk_key_encoding={"name": "v2", "separator": separator},
        fill_value=0,
    )
    arr[:] = expected
    pairs, composite = read_both_ways(server, folder, "a.zarr", tmp_path, expected)
    remote = composite.remote_description
    assert (remote.format, remote.zarr_format, remote.zarr_path, remote.axes) == ("zarr", 2, "", "zyx")
    block = composite.local_description.block_shape.tolist()
    assert all(b % c == 0 or b == n for b, c, n in zip(block, CHUNKS, SHAPE))  # aligned to the chunks
    chunk_paths = [p for p, _ in pairs if not p.endswith(".zarray")]
    assert len(chunk_paths) == 3 * 2 * 3  # each chunk once; the metadata once
    assert all(("/" in p.rsplit("a.zarr/", 1)[1]) == (separator == "/") for p in chunk_paths)


def test_zarr_v2_written_by_tensorstore_reads_back(served, tmp_path):
    ts = pytest.importorskip("tensorstore")
    server, folder = served
    expected = volume("float32")
    spec = {
        "driver": "zarr",
        "kvstore": {"driver": "file", "path": str(folder / "ts.zarr")},
        "metadata": {
            "shape": list(SHAPE),
            "chunks": [16, 8, 32],
            "dtype": "<f4",
            "order": "F",
            "compressor": {"id": "zlib", "level": 3},
        },
        "create": True,
    }
    ts.open(spec).result().write(expected).result()
    read_both_ways(server, folder, "ts.zarr", tmp_path, expected)


# -- zarr v3 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters, serializer, compressors",
    [
        ((), BytesCodec(endian="little"), ()),
        ((), BytesCodec(endian="big"), (GzipCodec(level=4),)),
        ((TransposeCodec(order=(2, 0, 1)),), BytesCodec(), (ZstdCodec(level=2),)),
        ((), BytesCodec(), (BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),)),
        ((), BytesCodec(), (Crc32cCodec(),)),
        ((TransposeCodec(order=(1, 2, 0)),), BytesCodec(endian="big"), (GzipCodec(), Crc32cCodec())),
    ],
)
def test_zarr_v3_arrays_written_by_zarr_python_read_back(served, tmp_path, filters, serializer, compressors):
    server, folder = served
    expected = volume("uint16")
    arr = zarr.create_array(
        str(folder / "a.zarr"),
        shape=SHAPE,
        chunks=CHUNKS,
        dtype="uint16",
        filters=filters,
        serializer=serializer,
        compressors=compressors,
        dimension_names=["z", "y", "x"],
    )
    arr[:] = expected
    pairs, composite = read_both_ways(server, folder, "a.zarr", tmp_path, expected)
    assert composite.remote_description.zarr_format == 3
    assert len([p for p, _ in pairs if "/c/" in p]) == 18


def test_v3_dimension_names_become_axes_and_unknown_names_are_refused(served, tmp_path):
    server, folder = served
    expected = volume("uint8", (3, 10, 12))
    arr = zarr.create_array(
        str(folder / "c.zarr"),
        shape=expected.shape,
        chunks=(1, 8, 8),
        dtype="uint8",
        dimension_names=["c", "y", "x"],
    )
    arr[:] = expected
    _, composite = read_both_ways(server, folder, "c.zarr", tmp_path, expected)
    assert composite.remote_description.axes == "cyx"
    zarr.create_array(
        str(folder / "q.zarr"),
        shape=(4, 4),
        chunks=(2, 2),
        dtype="uint8",
        dimension_names=["y", "wavelength"],
    )
    with pytest.raises(DescriptionError, match="'wavelength' cannot be mapped") as info:
        describe_source(str(folder / "q.zarr"), tmp_path / "q.json")
    assert info.value.field == "axes"
    zarr.create_array(str(folder / "n.zarr"), shape=(2, 4, 5, 6), chunks=(1, 4, 5, 6), dtype="uint8")
    path = describe_source(str(folder / "n.zarr"), tmp_path / "n.json")
    assert description.read_composite(path).remote_description.axes == "czyx"  # unnamed: zyx-style


def sharded(folder: Path, name: str, expected: np.ndarray, index_location: str, **kw) -> zarr.Array:
    arr = zarr.create_array(
        str(folder / name),
        shape=expected.shape,
        chunks=(16, 32, 32),  # the shard
        serializer=ShardingCodec(
            chunk_shape=CHUNKS, codecs=[BytesCodec(), GzipCodec()], index_location=index_location
        ),
        compressors=None,
        dtype=expected.dtype,
        **kw,
    )
    return arr


@pytest.mark.parametrize("index_location", ["end", "start"])
def test_sharded_arrays_are_read_in_ranges_each_once(served, tmp_path, index_location):
    server, folder = served
    expected = volume("uint16")
    sharded(folder, "s.zarr", expected, index_location)[:] = expected
    # Blocks of one inner chunk, read in parallel: shard indexes are shared, never fetched twice.
    pairs, composite = read_both_ways(server, folder, "s.zarr", tmp_path, expected, block_shape=CHUNKS)
    ranges = [r for _, r in pairs if r is not None]
    index_ranges = [
        r
        for r in ranges
        if (r.startswith("bytes=-") if index_location == "end" else r.startswith("bytes=0-"))
    ]
    assert len(index_ranges) == 2 * 1 * 2  # one index per shard
    assert len(ranges) == 4 + 18  # then each inner chunk once
    assert composite.local_description.block_shape.tolist() == list(CHUNKS)


def test_sharded_array_written_by_tensorstore_with_index_at_start(served, tmp_path):
    ts = pytest.importorskip("tensorstore")
    server, folder = served
    expected = volume("int16")
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(folder / "ts3.zarr")},
        "metadata": {
            "shape": list(SHAPE),
            "data_type": "int16",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [20, 32, 16]}},
            "codecs": [
                {
                    "name": "sharding_indexed",
                    "configuration": {
                        "chunk_shape": [10, 8, 8],
                        "codecs": [
                            {"name": "bytes", "configuration": {"endian": "little"}},
                            {"name": "zstd", "configuration": {"level": 1}},
                        ],
                        "index_codecs": [
                            {"name": "bytes", "configuration": {"endian": "little"}},
                            {"name": "crc32c"},
                        ],
                        "index_location": "start",
                    },
                }
            ],
        },
        "create": True,
    }
    ts.open(spec).result().write(expected).result()
    read_both_ways(server, folder, "ts3.zarr", tmp_path, expected)


# -- missing chunks -----------------------------------------------------------------------------------------


def test_missing_chunks_read_as_the_fill_value(served, tmp_path):
    server, folder = served
    v2 = zarr.create_array(
        str(folder / "m2.zarr"),
        shape=SHAPE,
        chunks=CHUNKS,
        dtype="float32",
        zarr_format=2,
        fill_value=float("nan"),
    )
    v2[2:9, 3:20, :7] = 1.5  # only some chunks written
    data, _ = read_all(server.files_url("d", "m2.zarr"), tmp_path / "m2.json")
    np.testing.assert_array_equal(data, v2[:])  # zarr-python's own reading: NaN outside
    assert np.isnan(data[15, 25, 30]) and data[2, 3, 0] == 1.5
    expected = volume("uint16")
    arr = sharded(folder, "m3.zarr", expected, "end", fill_value=42)
    arr[0:8, 0:16, 0:16] = expected[0:8, 0:16, 0:16]  # one inner chunk of one shard; other shards absent
    assert len(os.listdir(folder / "m3.zarr" / "c" / "0" / "0")) == 1
    server.reset_stats()
    data, fs = read_all(server.files_url("d", "m3.zarr"), tmp_path / "m3.json", block_shape=(20, 30, 40))
    np.testing.assert_array_equal(data, arr[:])
    assert data[19, 29, 39] == 42
    # zarr.json twice (describe, open), 4 shard indexes (3 absent: 404), one inner chunk.
    assert sorted(r.status for r in server.request_log).count(404) == 3
    assert (
        len(
            [
                r
                for r in server.request_log
                if r.headers.get("Range", "").startswith("bytes=") and r.status == 206
            ]
        )
        == 2
    )


def test_a_403_is_an_error_not_a_missing_chunk(served, tmp_path):
    server, folder = served
    arr = zarr.create_array(str(folder / "f.zarr"), shape=SHAPE, chunks=CHUNKS, dtype="uint8", zarr_format=2)
    arr[:] = 1
    path = describe_source(server.files_url("d", "f.zarr"), tmp_path / "f.json")
    server.faults.fail_matching("f.zarr/0.0.0", 403)
    with RESTfulBlockwiseFileset(path, retries=0) as fs:
        with pytest.raises(DownloadError) as info:
            fs.readData(([0, 0, 0], [4, 4, 4]))
    assert info.value.status == 403


# -- OME-Zarr -----------------------------------------------------------------------------------------------


def write_ome(folder: Path, version: str, image: np.ndarray) -> None:
    """An OME-Zarr image written with zarr-python, its NGFF attributes by hand per the spec."""
    fmt = 2 if version == "0.4" else 3
    group = zarr.open_group(str(folder), mode="w", zarr_format=fmt)
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space", "unit": "nanometer"},
        {"name": "y", "type": "space", "unit": "nanometer"},
        {"name": "x", "type": "space", "unit": "nanometer"},
    ]
    datasets = []
    for level, path in enumerate(("s0", "s1")):
        data = image[:, :, :: 2**level, :: 2**level]
        kw = {"dimension_separator": "/"} if fmt == 2 else {"dimension_names": ["c", "z", "y", "x"]}
        if fmt == 2:
            kw = {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
        arr = group.create_array(path, shape=data.shape, chunks=(1, 8, 16, 16), dtype=data.dtype, **kw)
        arr[:] = data
        datasets.append(
            {
                "path": path,
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, 40.0, 4.0 * 2**level, 4.0 * 2**level]}
                ],
            }
        )
    multiscale = {"name": "img", "axes": axes, "datasets": datasets}
    if version == "0.4":
        group.attrs.update({"multiscales": [{"version": "0.4", **multiscale}]})
    else:
        group.attrs.update({"ome": {"version": "0.5", "multiscales": [multiscale]}})


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_images_read_by_level_with_their_axes(served, tmp_path, version):
    server, folder = served
    image = volume("uint8", (2, 12, 30, 40))
    write_ome(folder / "img.zarr", version, image)
    _, composite = read_both_ways(server, folder, "img.zarr", tmp_path, image)
    remote = composite.remote_description
    assert (remote.axes, remote.zarr_path, remote.zarr_format) == ("czyx", "s0", 2 if version == "0.4" else 3)
    for scale in ("s1", 1, "1"):
        data, _ = read_all(
            server.files_url("d", "img.zarr"), tmp_path / f"l{scale}.json", scale=scale, cache_dir=f"c{scale}"
        )
        np.testing.assert_array_equal(data, image[:, :, ::2, ::2])
    with pytest.raises(DescriptionError, match=r"one of \['s0', 's1'\]") as info:
        describe_source(server.files_url("d", "img.zarr"), tmp_path / "x.json", scale="s7")
    assert info.value.field == "scale"
    # The array of a level, given directly, is a plain array.
    path = describe_source(f"zarr://{server.files_url('d', 'img.zarr/s1')}", tmp_path / "direct.json")
    assert description.read_composite(path).remote_description.zarr_path == ""


def test_ome_axes_that_are_not_txyzc_are_refused(served, tmp_path):
    _, folder = served
    write_ome(folder / "img.zarr", "0.4", volume("uint8", (1, 4, 4, 4)))
    attrs = json.loads((folder / "img.zarr" / ".zattrs").read_text())
    attrs["multiscales"][0]["axes"][0] = {"name": "lambda", "type": "space"}
    (folder / "img.zarr" / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(DescriptionError, match="'lambda' cannot be mapped") as info:
        describe_source(str(folder / "img.zarr"), tmp_path / "x.json")
    assert info.value.field == "axes"


# -- detection, sources, descriptions -----------------------------------------------------------------------


def test_describe_finds_zarr_at_a_plain_location_and_honours_the_version_prefix(served, tmp_path):
    server, folder = served
    zarr.create_array(str(folder / "v3.zarr"), shape=(4, 4, 4), chunks=(2, 2, 2), dtype="uint8")
    write_ome(folder / "img.zarr", "0.4", volume("uint8", (1, 4, 4, 4)))
    request = ProbeRequest(retries=0)
    for rel in ("v3.zarr", "img.zarr", "v3.zarr/zarr.json"):
        assert formats.detect(server.files_url("d", rel), request).name == "zarr"
    assert formats.detect(str(folder / "img.zarr"), request).name == "zarr"
    with pytest.raises(DescriptionError, match=r"looked for \.zarray or \.zattrs") as info:
        describe_source(f"zarr2://{server.files_url('d', 'v3.zarr')}", tmp_path / "x.json")
    assert info.value.field == "source"
    with pytest.raises(DescriptionError, match="not a multiscale image"):
        describe_source(str(folder / "v3.zarr"), tmp_path / "x.json", scale=1)
    group = zarr.open_group(str(folder / "plain"), mode="w")
    group.create_array("a", shape=(2,), dtype="uint8")
    with pytest.raises(DescriptionError, match="without OME-Zarr multiscales"):
        describe_source(str(folder / "plain"), tmp_path / "x.json")


def test_zarr_description_fields_are_validated(tmp_path):
    base = {
        "_schema_name": "RESTful-volume-description",
        "_schema_version": 1.0,
        "format": "zarr",
        "axes": "zyx",
        "dtype": "uint8",
        "bounds": [4, 4, 4],
        "zarr_url": "s3://bucket/a.zarr/",
        "zarr_path": "s0",
        "zarr_format": 2,
    }
    desc = description.parse_remote(base)
    assert desc.zarr_url == "https://bucket.s3.amazonaws.com/a.zarr"
    for field, bad in (
        ("zarr_format", 4),
        ("zarr_format", None),
        ("zarr_path", "../x"),
        ("zarr_url", "rel/x"),
    ):
        with pytest.raises(DescriptionError) as info:
            description.parse_remote(dict(base, **{field: bad}))
        assert info.value.field == field


def test_lazyflow_rbfs_open_reads_a_zarr_image(served, tmp_path):
    server, folder = served
    image = volume("uint8", (2, 12, 30, 40))
    write_ome(folder / "img.zarr", "0.5", image)
    with lazyflow_rbfs.open(server.files_url("d", "img.zarr"), tmp_path / "cache", scale="s1") as fs:
        np.testing.assert_array_equal(fs[:, :, :, :], image[:, :, ::2, ::2])


# -- hostile metadata and chunks ----------------------------------------------------------------------------


def test_a_huge_declared_chunk_is_refused_before_any_chunk_is_fetched(served, tmp_path):
    server, folder = served
    (folder / "huge.zarr").mkdir()
    meta = {
        "zarr_format": 2,
        "shape": [10**6] * 3,
        "chunks": [10**5] * 3,
        "dtype": "<u2",
        "compressor": None,
        "fill_value": 0,
        "order": "C",
        "filters": None,
    }
    (folder / "huge.zarr" / ".zarray").write_text(json.dumps(meta))
    with pytest.raises(InvalidResponseError, match="more than the 134217728 bytes"):
        describe_source(server.files_url("d", "huge.zarr"), tmp_path / "h.json")
    assert {r.path.rsplit("/", 1)[1] for r in server.request_log} == {"zarr.json", ".zarray"}  # no chunk


def test_unsupported_filters_are_refused_at_describe_and_at_open(served, tmp_path):
    server, folder = served
    arr = zarr.create_array(
        str(folder / "f.zarr"), shape=(8, 8, 8), chunks=(4, 4, 4), dtype="uint8", zarr_format=2
    )
    arr[:] = 3
    path = describe_source(server.files_url("d", "f.zarr"), tmp_path / "f.json")
    meta = json.loads((folder / "f.zarr" / ".zarray").read_text())
    (folder / "f.zarr" / ".zarray").write_text(
        json.dumps(dict(meta, filters=[{"id": "delta", "dtype": "<u1"}]))
    )
    with pytest.raises(DescriptionError, match=r"filters are not supported \(found filters \['delta'\]\)"):
        describe_source(server.files_url("d", "f.zarr"), tmp_path / "g.json")
    with RESTfulBlockwiseFileset(path) as fs, pytest.raises(DescriptionError, match="filters"):
        fs.readData(([0, 0, 0], [4, 4, 4]))
    # A changed dtype is refused too.
    (folder / "f.zarr" / ".zarray").write_text(json.dumps(dict(meta, dtype="<u2")))
    with RESTfulBlockwiseFileset(path) as fs, pytest.raises(DescriptionError) as info:
        fs.readData(([0, 0, 0], [4, 4, 4]))
    assert info.value.field == "dtype"


def test_damaged_chunks_are_clear_errors(served, tmp_path):
    server, folder = served
    arr = zarr.create_array(
        str(folder / "g.zarr"),
        shape=(8, 8, 8),
        chunks=(4, 4, 4),
        dtype="uint16",
        zarr_format=2,
        compressors=numcodecs.GZip(),
    )
    arr[:] = 5
    path = describe_source(server.files_url("d", "g.zarr"), tmp_path / "g.json", block_shape=(4, 4, 4))
    import gzip

    (folder / "g.zarr" / "0.0.0").write_bytes(gzip.compress(b"\0" * 100))  # inflates to the wrong size
    (folder / "g.zarr" / "0.0.1").write_bytes(gzip.compress(b"\0" * 10**6))  # far too large: not inflated
    with RESTfulBlockwiseFileset(path, retries=0) as fs:
        for start in ((0, 0, 0), (0, 0, 4)):
            with pytest.raises(InvalidResponseError, match="inflates to"):
                fs.readData((start, [s + 4 for s in start]))
    crc = zarr.create_array(
        str(folder / "crc.zarr"), shape=(8, 8), chunks=(4, 4), dtype="uint8", compressors=[Crc32cCodec()]
    )
    crc[:] = 9
    chunk = folder / "crc.zarr" / "c" / "0" / "0"
    body = bytearray(chunk.read_bytes())
    body[3] ^= 0xFF
    chunk.write_bytes(bytes(body))
    path = describe_source(str(folder / "crc.zarr"), tmp_path / "crc.json", block_shape=(4, 4))
    with RESTfulBlockwiseFileset(path, retries=0) as fs:
        with pytest.raises(InvalidResponseError, match="crc32c checksum mismatch"):
            fs.readData(([0, 0], [4, 4]))
        np.testing.assert_array_equal(fs.readData(([4, 4], [8, 8])), 9)


def test_a_shard_index_with_an_impossible_size_is_refused_before_reading_the_chunk(served, tmp_path):
    server, folder = served
    expected = volume("uint16")
    arr = sharded(folder, "s.zarr", expected, "end")
    arr[:] = expected
    shard = folder / "s.zarr" / "c" / "0" / "0" / "0"
    body = bytearray(shard.read_bytes())
    index_at = len(body) - (16 * 8 + 4)
    body[index_at + 8 : index_at + 16] = (10**12).to_bytes(8, "little")  # first inner chunk: 1 TB
    import crc32c

    body[-4:] = crc32c.crc32c(bytes(body[index_at:-4])).to_bytes(4, "little")
    shard.write_bytes(bytes(body))
    path = describe_source(server.files_url("d", "s.zarr"), tmp_path / "s.json", block_shape=CHUNKS)
    server.reset_stats()
    with RESTfulBlockwiseFileset(path, retries=0) as fs:
        with pytest.raises(InvalidResponseError, match="more than the"):
            fs.readData(([0, 0, 0], list(CHUNKS)))
    assert [r.headers.get("Range") for r in server.request_log] == [None, "bytes=-132"]  # zarr.json, index


def test_a_sharded_array_behind_a_server_without_range_support_is_a_clear_error(served, tmp_path):
    server, folder = served
    expected = volume("uint16")
    sharded(folder, "s.zarr", expected, "end")[:] = expected
    path = describe_source(server.files_url("d", "s.zarr"), tmp_path / "s.json")
    server.range_requests = False
    with RESTfulBlockwiseFileset(path, retries=2) as fs:
        with pytest.raises(DownloadError, match="does not support HTTP Range requests"):
            fs.readData(([0, 0, 0], [4, 4, 4]))


# -- the test kit's writers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, settings",
    [
        ("zarr2", {}),
        ("zarr2", {"separator": "/", "order": "F", "big_endian": True, "compressor": "zlib"}),
        ("zarr3", {}),
        ("zarr3-sharded", {}),
        ("zarr3-sharded", {"index_location": "start"}),
        ("ome-zarr", {}),
        ("ome-zarr", {"version": "0.5"}),
    ],
)
def test_the_test_kit_writers_are_read_by_zarr_python_and_by_us(served, tmp_path, fmt, settings):
    server, folder = served
    expected = volume("uint16")
    rel = static.write_source(fmt, expected, "zyx", folder, **settings)
    array_rel = f"{rel}/0" if fmt == "ome-zarr" else rel
    np.testing.assert_array_equal(zarr.open_array(str(folder / array_rel), mode="r")[:], expected)
    read_both_ways(server, folder, rel, tmp_path, expected)


def test_rbfs_serve_serves_an_ome_zarr_image(tmp_path):
    npy = tmp_path / "v.npy"
    expected = volume("uint8", (8, 20, 24))
    np.save(npy, expected)
    desc = tmp_path / "d.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lazyflow_rbfs",
            "serve",
            str(npy),
            "--format",
            "ome-zarr",
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
        assert any("image.ome.zarr" in line for line in lines), lines
        with RESTfulBlockwiseFileset(str(desc)) as fs:
            np.testing.assert_array_equal(fs[:, :, :], expected)
        assert description.read_composite(desc).remote_description.format == "zarr"
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    shutil.rmtree(tmp_path / "d-blocks", ignore_errors=True)


def test_a_shard_index_too_large_is_refused_when_the_metadata_is_read(served, tmp_path):
    _, folder = served
    arr = zarr.create_array(
        str(folder / "big.zarr"), shape=(64, 64), chunks=(64, 64), shards=(64, 64), dtype="uint8"
    )
    meta = json.loads((folder / "big.zarr" / "zarr.json").read_text())
    meta["shape"] = [2**20, 2**20]
    meta["chunk_grid"]["configuration"]["chunk_shape"] = [2**20, 2**20]
    meta["codecs"][0]["configuration"]["chunk_shape"] = [1, 1]  # 2**40 inner chunks per shard
    (folder / "big.zarr" / "zarr.json").write_text(json.dumps(meta))
    del arr
    with pytest.raises(InvalidResponseError, match="its index of .* bytes is more than"):
        describe_source(str(folder / "big.zarr"), tmp_path / "b.json")


def test_the_shard_index_cache_loads_each_index_once_for_concurrent_readers():
    import threading

    from lazyflow_rbfs.remote.formats.zarr_shards import ShardIndexCache

    cache = ShardIndexCache(limit=2)
    started, release = threading.Event(), threading.Event()
    calls = []

    def slow_load():
        calls.append(1)
        started.set()
        assert release.wait(30)
        return np.zeros((1, 2), np.uint64)

    results = []
    first = threading.Thread(target=lambda: results.append(cache.get("u", slow_load)))
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=lambda: results.append(cache.get("u", slow_load)))
    second.start()
    release.set()
    first.join(30)
    second.join(30)
    assert len(calls) == 1 and len(results) == 2 and results[0] is results[1]
    for key in ("a", "b", "c"):  # bounded: the oldest entries are dropped
        cache.get(key, lambda: None)
    assert len(cache) == 2
    assert cache.get("u", lambda: "reloaded") == "reloaded"
