"""The remote-format seam: a format defined in one place and registered is read, described, identified and
shown by the whole package (descriptions, RESTfulVolume, the block cache, rbfs info, rbfs describe)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lazyflow_rbfs import RESTfulBlockwiseFileset, RESTfulVolume, description, identity
from lazyflow_rbfs.cli import main
from lazyflow_rbfs.describe import describe_source, parse_source
from lazyflow_rbfs.description.fields import check_http_base, join_field
from lazyflow_rbfs.errors import DescriptionError
from lazyflow_rbfs.remote import formats, remote_advice, source_url
from lazyflow_rbfs.remote.formats import IdentityLocation, Probe, ProbeOption, ProbeRequest, RemoteFormat

SHAPE = (12, 20, 24)


def voxels(start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """The toy volume: every voxel holds z * 10000 + y * 100 + x (absolute coordinates)."""
    z, y, x = np.meshgrid(*(np.arange(a, b) for a, b in zip(start, stop)), indexing="ij")
    return (z * 10000 + y * 100 + x).astype(np.uint32)


class ToyReader:
    def __init__(self, desc: Any) -> None:
        self.url = desc.toy_url
        self.origin = np.asarray(desc.origin_offset)

    def urls(self, start: np.ndarray, stop: np.ndarray) -> list[str]:
        return [f"{self.url}/{(start + self.origin).tolist()}"]

    def fetch(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        return voxels(start + self.origin, stop + self.origin)


class ToyFormat(RemoteFormat):
    names = ("toy",)
    fields = {"toy_url": str}
    url_source = "toy_url"
    source_help = "toy://host/volume"
    source_schemes = ("toy",)
    probe_options = (ProbeOption("toy_flag", "--toy-flag", "a toy option", switch=True),)

    def validate(self, out: dict[str, Any], prefix: str) -> None:
        out["toy_url"] = check_http_base(out["toy_url"], join_field(prefix, "toy_url"), "the toy service")

    def open_reader(self, desc: Any, client: Any) -> ToyReader:
        return ToyReader(desc)

    def source_url(self, desc: Any) -> str:
        return f"{desc.toy_url} (toy)"

    def identity_location(self, desc: Any) -> IdentityLocation:
        return IdentityLocation(desc.toy_url)

    def advice(self, remote_desc: Any, local_desc: Any) -> list[str]:
        return ["toy advice"]

    def parse_source(self, source: str) -> str | None:
        return "http://" + source[len("toy://") :] if source.startswith("toy://") else None

    def probe(self, source: str, request: ProbeRequest) -> Probe:
        remote = remote_dict(self.parse_source(source))
        remote["name"] = "flagged" if request.options.get("toy_flag") else "plain"
        return Probe(remote, (4, 8, 8), 4)


def remote_dict(url: str = "http://toy.example/v") -> dict[str, Any]:
    return {
        "_schema_name": description.REMOTE_SCHEMA_NAME,
        "_schema_version": 1.0,
        "format": "toy",
        "axes": "zyx",
        "dtype": "uint32",
        "origin_offset": [1, 2, 3],
        "bounds": [s + o for s, o in zip(SHAPE, (1, 2, 3))],
        "toy_url": url,
    }


@pytest.fixture
def toy():
    fmt = ToyFormat()
    formats.register(fmt)
    try:
        yield fmt
    finally:
        formats.unregister(fmt)
    assert "toy_url" not in description.REMOTE_FIELDS


def test_a_registered_format_has_its_fields_in_the_schema(toy):
    assert "toy_url" in description.REMOTE_FIELDS and "toy" in description.REMOTE_FORMATS
    assert RESTfulVolume.DescriptionFields is description.REMOTE_FIELDS
    desc = description.parse_remote(remote_dict("http://toy.example/v/"))
    assert desc.toy_url == "http://toy.example/v" and formats.get("toy") is toy
    with pytest.raises(DescriptionError) as info:
        description.parse_remote(dict(remote_dict(), toy_url="ftp://x"))
    assert info.value.field == "toy_url"
    with pytest.raises(DescriptionError) as info:  # the toy derives its URLs: url_format is a conflict
        description.parse_remote(dict(remote_dict(), url_format="http://h/{z_start}"))
    assert info.value.field == "format" and "toy_url" in str(info.value)
    hdf5 = {k: v for k, v in remote_dict().items() if k != "toy_url"}
    hdf5.update(format="hdf5", url_format="http://h/{z_start}/{z_stop}/{y_start}/{y_stop}/{x_start}/{x_stop}")
    with pytest.raises(DescriptionError) as info:
        description.parse_remote(dict(hdf5, hdf5_dataset="d", toy_url="http://t"))
    assert info.value.field == "toy_url" and "only with format 'toy'" in str(info.value)


def test_a_registered_format_is_read_through_the_volume_and_the_cache(toy, tmp_path):
    with RESTfulVolume(preparsedDescription=remote_dict()) as volume:
        np.testing.assert_array_equal(
            volume.fetch(((2, 0, 7), (5, 3, 9))), voxels(np.array([3, 2, 10]), np.array([6, 5, 12]))
        )
        assert volume.url_for(((0, 0, 0), (1, 1, 1))) == "http://toy.example/v/[1, 2, 3]"
        assert volume.source_url == "http://toy.example/v (toy)"
    path = tmp_path / "toy.json"
    describe_source("toy://toy.example/v", path, cache_dir="toy-cache", block_shape="4,8,8")
    with RESTfulBlockwiseFileset(path) as fs:
        np.testing.assert_array_equal(
            fs.readData(((0, 0, 0), SHAPE)), voxels(np.array([1, 2, 3]), SHAPE + np.array([1, 2, 3]))
        )
    composite = description.read_composite(path)
    assert identity.identity_of(composite).location == "http://toy.example/v"
    assert source_url(composite.remote_description) == "http://toy.example/v (toy)"
    assert remote_advice(composite.remote_description, composite.local_description) == ["toy advice"]
    record = json.loads((tmp_path / "toy-cache" / identity.RECORD_NAME).read_text())
    assert record["volume"]["format"] == "toy"


def test_a_registered_format_is_described_with_its_own_options(toy, tmp_path, capsys):
    assert parse_source("toy://h/v") == ("toy", "http://h/v")
    assert main(["describe", "toy://h/v", "-o", str(tmp_path / "a.json"), "--toy-flag"]) == 0
    assert json.loads(Path(tmp_path / "a.json").read_text())["remote_description"]["name"] == "flagged"
    describe_source("toy://h/v", tmp_path / "b.json")
    assert description.read_composite(tmp_path / "b.json").remote_description.name == "plain"
    with pytest.raises(DescriptionError) as info:  # another format's option
        describe_source("toy://h/v", tmp_path / "c.json", fill_missing=True)
    assert info.value.field == "fill_missing"
    with pytest.raises(DescriptionError) as info:
        describe_source("boss://a/b/c", tmp_path / "c.json", toy_flag=True)
    assert info.value.field == "toy_flag"
    with pytest.raises(TypeError):
        describe_source("toy://h/v", tmp_path / "c.json", no_such_option=1)
