"""Where sources live (issue 11): HTTP byte ranges, file:// and plain paths, public buckets, and how
``rbfs describe`` finds the format at a plain location."""

from __future__ import annotations

import os
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lazyflow_rbfs import RESTfulBlockwiseFileset, locations
from lazyflow_rbfs.describe import describe_source
from lazyflow_rbfs.description.fields import check_location_base
from lazyflow_rbfs.errors import ClosedError, DescriptionError, DownloadError, InvalidResponseError
from lazyflow_rbfs.remote import formats
from lazyflow_rbfs.remote.files import FileClient, open_client
from lazyflow_rbfs.remote.formats import Probe, ProbeRequest, RemoteFormat
from lazyflow_rbfs.remote.formats.base import sniff_file
from lazyflow_rbfs.remote.http import HttpClient
from lazyflow_rbfs.testing import CutoutServer, PrecomputedSettings, sample_volume

PAYLOAD = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable


@pytest.fixture
def served(tmp_path: Path):
    folder = tmp_path / "bucket"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "shard").write_bytes(PAYLOAD)
    (folder / "small").write_bytes(b"0123")
    with CutoutServer(np.zeros((2, 2, 2), np.uint8), files={"b": folder}) as server:
        yield server, folder


def ranges_seen(server: CutoutServer) -> list[str | None]:
    return [rec.headers.get("Range") for rec in server.request_log]


# -- HTTP byte ranges ---------------------------------------------------------------------------------------


def test_byte_ranges_read_exactly_the_bytes_asked_for(served):
    server, _ = served
    url = server.files_url("b", "sub/shard")
    with HttpClient(retries=0) as client:
        assert client.get(url, byte_range=(100, 612)) == PAYLOAD[100:612]
        assert client.get(url, byte_range=(-16, None)) == PAYLOAD[-16:]
        assert client.get(url, byte_range=(0, 1)) == PAYLOAD[:1]
        # A suffix longer than the file is the whole file.
        assert client.get(server.files_url("b", "small"), byte_range=(-100, None)) == b"0123"
        assert client.get(url) == PAYLOAD
    assert ranges_seen(server) == ["bytes=100-611", "bytes=-16", "bytes=0-0", "bytes=-100", None]
    # Range requests ask for the bytes as stored, never an HTTP-compressed body.
    assert server.request_log[0].headers.get("Accept-Encoding") == "identity"


def test_a_server_without_range_support_is_a_clear_error_made_once(served):
    server, _ = served
    server.range_requests = False
    url = server.files_url("b", "sub/shard")
    with HttpClient(retries=3, backoff=0) as client:
        with pytest.raises(DownloadError, match="does not support HTTP Range requests") as info:
            client.get(url, byte_range=(10, 20))
        assert type(info.value) is DownloadError and info.value.status == 200
        assert server.requests == 1  # not retried: it will not change
        # ... but a range that is the whole file may be answered with the whole file.
        assert client.get(server.files_url("b", "small"), byte_range=(0, 4)) == b"0123"
        assert client.get(server.files_url("b", "small"), byte_range=(-10, None)) == b"0123"


def test_a_range_past_the_end_is_a_download_error_with_status_416(served):
    server, _ = served
    with HttpClient(retries=2, backoff=0) as client:
        with pytest.raises(DownloadError) as info:
            client.get(server.files_url("b", "small"), byte_range=(10, 20))
    assert info.value.status == 416
    assert server.requests == 1


def test_a_range_cut_short_by_the_end_of_the_file_is_invalid(served):
    server, _ = served
    with HttpClient(retries=0) as client:
        with pytest.raises(InvalidResponseError, match="shorter than its index says"):
            client.get(server.files_url("b", "small"), byte_range=(2, 10))


def test_bad_byte_ranges_are_refused_before_any_request(served):
    server, _ = served
    with HttpClient() as client:
        for bad in ((5, 5), (6, 2), (-1, 3), (0, None), ("0", 4), (True, 3)):
            with pytest.raises(ValueError, match="byte_range"):
                client.get(server.files_url("b", "small"), byte_range=bad)
    assert server.requests == 0


class _LyingRanges(BaseHTTPRequestHandler):
    """Answers every Range request with 206 and a Content-Range of other bytes."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        body = b"x" * 10
        self.send_response(206)
        self.send_header("Content-Range", "bytes 50-59/100")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_206_of_other_bytes_is_refused():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _LyingRanges)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with HttpClient(retries=0) as client:
            with pytest.raises(
                InvalidResponseError, match="asked for bytes 0-9 but the server sent bytes 50-59"
            ):
                client.get(f"http://127.0.0.1:{httpd.server_address[1]}/x", byte_range=(0, 10))
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- files --------------------------------------------------------------------------------------------------


def test_file_client_reads_files_and_ranges_like_the_http_client(tmp_path: Path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(PAYLOAD)
    root = locations.file_url(tmp_path / "d")
    with FileClient(root, retries=0) as client:
        assert client.get(f"{root}/f") == PAYLOAD
        assert client.get(f"{root}/f", byte_range=(7, 9)) == PAYLOAD[7:9]
        assert client.get(f"{root}/f", byte_range=(-3, None)) == PAYLOAD[-3:]
        with pytest.raises(DownloadError) as info:
            client.get(f"{root}/missing")
        assert info.value.status == 404 and type(info.value) is DownloadError
        with pytest.raises(InvalidResponseError, match="more than the 100 bytes"):
            client.get(f"{root}/f", max_bytes=100)
        with pytest.raises(InvalidResponseError, match="shorter than its index says"):
            client.get(f"{root}/f", byte_range=(len(PAYLOAD) - 2, len(PAYLOAD) + 2))
        stats = client.stats
        assert stats.requests == 6 and stats.errors == 3
        assert stats.bytes_received == len(PAYLOAD) + 2 + 3
    with pytest.raises(ClosedError):
        client.get(f"{root}/f")


def test_file_client_never_reads_outside_its_root(tmp_path: Path):
    (tmp_path / "root").mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(b"do not read")
    os.symlink(secret, tmp_path / "root" / "link")
    root = locations.file_url(tmp_path / "root")
    with FileClient(root, retries=0) as client:
        for url in (f"{root}/../secret", f"{root}/link", locations.file_url(secret)):
            with pytest.raises(DownloadError, match="outside the source's folder"):
                client.get(url)


def test_open_client_picks_the_client_by_location(tmp_path: Path):
    with open_client(locations.file_url(tmp_path)) as client:
        assert isinstance(client, FileClient)
    with open_client("https://example.org/x") as client:
        assert isinstance(client, HttpClient)


# -- locations ----------------------------------------------------------------------------------------------


def test_locations_resolve_to_http_or_file_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert locations.resolve("gs://bkt/a/b/") == "https://storage.googleapis.com/bkt/a/b"
    assert locations.resolve("s3://bkt/a") == "https://bkt.s3.amazonaws.com/a"
    assert locations.resolve("vol dir/x") == (tmp_path / "vol dir" / "x").as_uri()
    assert locations.resolve("file:///data/a%20b/") == "file:///data/a%20b"
    assert locations.resolve("boss://a/b/c") is None
    for bad in ("file://host/x", "", "gs://"):
        with pytest.raises(DescriptionError):
            locations.resolve(bad)
    assert locations.join("file:///d", "a/b", "c") == "file:///d/a/b/c"
    for bad in ("../x", "a/../b", "/abs", "a//b", "a\\b"):
        with pytest.raises(ValueError):
            locations.join("file:///d", bad)


def test_location_fields_accept_urls_buckets_and_absolute_paths():
    assert check_location_base("s3://b/k/", "f", "x") == "https://b.s3.amazonaws.com/k"
    assert check_location_base("/data/v", "f", "x") == "file:///data/v"
    assert check_location_base("file:///data/v/", "f", "x") == "file:///data/v"
    assert check_location_base("https://h/v/", "f", "x") == "https://h/v"
    for bad in ("relative/path", "ftp://h/x", "gs://", "file://host/x"):
        with pytest.raises(DescriptionError) as info:
            check_location_base(bad, "remote_description.f", "x")
        assert info.value.field == "remote_description.f"


# -- a real format through file:// --------------------------------------------------------------------------


def mirror_precomputed(server: CutoutServer, folder: Path) -> None:
    """Copy the server's precomputed volume (info and every chunk of scale 0) into ``folder``, as files."""
    import json

    base = server.precomputed_url
    info = json.loads(urllib.request.urlopen(f"{base}/info").read())
    (folder).mkdir(parents=True)
    (folder / "info").write_text(json.dumps(info))
    scale = info["scales"][0]
    (folder / scale["key"]).mkdir()
    size, chunk = scale["size"], scale["chunk_sizes"][0]
    for z in range(0, size[2], chunk[2]):
        for y in range(0, size[1], chunk[1]):
            for x in range(0, size[0], chunk[0]):
                name = "_".join(f"{a}-{min(a + c, n)}" for a, c, n in zip((x, y, z), chunk, size))
                body = urllib.request.urlopen(f"{base}/{scale['key']}/{name}").read()
                (folder / scale["key"] / name).write_bytes(body)


def test_a_precomputed_copy_on_disk_is_described_and_read_through_the_cache(tmp_path: Path):
    volume = sample_volume((8, 32, 32))
    settings = PrecomputedSettings(chunk_xyz=(16, 16, 8), gzip=False, scales=1)
    with CutoutServer(volume, precomputed=settings) as server:
        mirror_precomputed(server, tmp_path / "copy")
    # The server is gone: the copy is read from the file system (a plain path, then a file:// URL).
    for source in (str(tmp_path / "copy"), locations.file_url(tmp_path / "copy")):
        out = describe_source(source, tmp_path / f"d{len(source)}.json", block_shape=(8, 16, 16))
        with RESTfulBlockwiseFileset(out) as fs:
            np.testing.assert_array_equal(fs.readData(([0, 0, 0], [8, 32, 32])), volume)
            assert fs.remote.stats.requests == 5  # the info file, then each chunk once
            np.testing.assert_array_equal(fs[2:5, 3:30, 1:2], volume[2:5, 3:30, 1:2])
            assert fs.remote.stats.requests == 5  # warm: no read


# -- finding the format at a plain location -----------------------------------------------------------------


class _SniffedFormat(RemoteFormat):
    """A second format reading plain locations, found by a ``toy.json`` file."""

    names = ("sniffed-toy",)
    fields: dict[str, Any] = {}
    url_source = "nothing"
    source_help = "a folder holding toy.json"
    location_schemes = locations.LOCATION_SCHEMES
    sniff_help = "'toy.json' (toy)"

    def validate(self, out: dict[str, Any], prefix: str) -> None:
        pass

    def open_reader(self, desc: Any, client: Any) -> Any:
        raise NotImplementedError

    def source_url(self, desc: Any) -> str:
        return "toy"

    def identity_location(self, desc: Any) -> Any:
        raise NotImplementedError

    def parse_source(self, source: str) -> str | None:
        return locations.resolve(source)

    def sniff(self, location: str, client: Any) -> bool:
        return sniff_file(client, f"{location}/toy.json", 1000)

    def probe(self, source: str, request: ProbeRequest) -> Probe:
        raise NotImplementedError


@pytest.fixture
def sniffed_format():
    fmt = _SniffedFormat()
    formats.register(fmt)
    try:
        yield fmt
    finally:
        formats.unregister(fmt)


def test_describe_looks_at_a_plain_location_to_find_its_format(sniffed_format, served, tmp_path: Path):
    server, folder = served
    request = ProbeRequest(retries=0)
    (folder / "toy.json").write_text("{}")
    assert formats.detect(server.files_url("b"), request) is sniffed_format
    assert formats.detect(str(folder), request) is sniffed_format
    (folder / "toy.json").unlink()
    (folder / "info").write_text("{}")
    assert formats.detect(server.files_url("b"), request).name == "precomputed"
    assert formats.detect(locations.file_url(folder), request).name == "precomputed"
    (folder / "info").unlink()
    with pytest.raises(DescriptionError, match="found no volume at .*'info'.*'toy.json'") as info:
        formats.detect(server.files_url("b"), request)
    assert info.value.field == "source"
    # A format named by its scheme is not looked for.
    assert formats.detect(f"precomputed://{server.files_url('b')}", request).name == "precomputed"


# -- lazyflow_rbfs.open -------------------------------------------------------------------------------------


def test_open_goes_from_a_url_to_a_cached_fileset_and_reopens_offline(tmp_path: Path, caplog):
    import lazyflow_rbfs

    volume = sample_volume((8, 32, 32))
    settings = PrecomputedSettings(chunk_xyz=(16, 16, 8), scales=2)
    cache = tmp_path / "cache"
    with CutoutServer(volume, precomputed=settings) as server:
        with lazyflow_rbfs.open(server.precomputed_url, cache, block_shape=(8, 16, 16), max_parallel=2) as fs:
            assert isinstance(fs, RESTfulBlockwiseFileset)
            assert fs.shape == (8, 32, 32) and fs.block_shape == (8, 16, 16)
            np.testing.assert_array_equal(fs[:, :, :], volume)
        assert (cache / "description.json").is_file() and (cache / "blocks").is_dir()
        with lazyflow_rbfs.open(server.precomputed_url, tmp_path / "half", scale=1) as fs:
            assert fs.shape == (8, 16, 16)
        with pytest.raises(TypeError):
            lazyflow_rbfs.open(server.precomputed_url, tmp_path / "c2", no_such_option=1)
    # The server is gone: the description already in the cache is opened, its blocks read warm.
    with caplog.at_level("WARNING", logger="lazyflow_rbfs.opener"):
        with lazyflow_rbfs.open(server.precomputed_url, cache, retries=0, timeout=2) as fs:
            np.testing.assert_array_equal(fs[2:6, 0:32, 5:9], volume[2:6, 0:32, 5:9])
            assert fs.remote.stats.requests == 0
    assert "opening the description already in" in caplog.text


def test_a_star_import_does_not_shadow_the_builtin_open():
    import lazyflow_rbfs

    namespace: dict = {}
    exec("from lazyflow_rbfs import *", namespace)  # noqa: S102 - the test is about star imports
    assert "open" not in namespace and "RESTfulBlockwiseFileset" in namespace
    assert callable(lazyflow_rbfs.open) and lazyflow_rbfs.open.__module__ == "lazyflow_rbfs.opener"
