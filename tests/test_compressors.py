"""Byte compressors of chunked formats: exact sizes, refused bombs, refused lies (issue 11)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib

import numpy as np
import pytest

from lazyflow_rbfs.errors import InvalidResponseError
from lazyflow_rbfs.remote.codecs import compressors

numcodecs = pytest.importorskip("numcodecs")

DATA = np.arange(5000, dtype=np.uint16).tobytes()  # 10000 bytes

ENCODERS = {
    "raw": lambda b: b,
    "gzip": gzip.compress,
    "zlib": zlib.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda b: bytes(numcodecs.Zstd().encode(b)),
    "lz4": lambda b: bytes(numcodecs.LZ4().encode(b)),
    "blosc": lambda b: bytes(numcodecs.Blosc().encode(b)),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_compressor_inflates_to_exactly_the_chunk(name):
    body = ENCODERS[name](DATA)
    assert compressors.available(name)
    assert compressors.decompress(name, body, len(DATA), "u") == DATA
    with pytest.raises(InvalidResponseError, match="chunk u"):
        compressors.decompress(name, body, len(DATA) - 2, "u")
    with pytest.raises(InvalidResponseError):
        compressors.decompress(name, body, len(DATA) + 2, "u")


@pytest.mark.parametrize("name", ["gzip", "zlib", "bz2", "xz", "zstd", "lz4", "blosc"])
def test_garbage_is_invalid_not_a_crash(name):
    with pytest.raises(InvalidResponseError):
        compressors.decompress(name, b"\x00garbage" * 3, 100, "u")


@pytest.mark.parametrize("name", ["gzip", "zlib", "bz2", "xz"])
def test_a_bomb_is_refused_without_inflating_it(name):
    bomb = ENCODERS[name](bytes(32 * 1024 * 1024))  # 32 MiB of zeros, a few KiB compressed
    assert len(bomb) < 1024 * 1024
    with pytest.raises(InvalidResponseError, match="more than the 4096 bytes"):
        compressors.decompress(name, bomb, 4096, "u")


def test_zstd_and_lz4_and_blosc_sizes_are_checked_before_inflating():
    big = bytes(8 * 1024 * 1024)
    for name in ("zstd", "lz4", "blosc"):
        with pytest.raises(InvalidResponseError, match="states"):
            compressors.decompress(name, ENCODERS[name](big), 4096, "u")


def test_zstd_frame_content_size_is_read_from_the_header():
    for size in (0, 1, 255, 256, 300, 70000, 5 * 2**20):
        frame = ENCODERS["zstd"](bytes(size))
        assert compressors.zstd_content_size(frame) in (size, None)
    with pytest.raises(ValueError):
        compressors.zstd_content_size(b"not zstd")


def test_unknown_compressor_names_are_refused():
    assert not compressors.available("snappy")
    with pytest.raises(ValueError, match="unknown compressor 'snappy'"):
        compressors.decompress("snappy", b"", 0, "u")
