"""``rbfs describe`` logic: descriptions written from precomputed and Boss metadata open and read right."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from lazyflow_rbfs import BlockwiseFilesetFactory, RESTfulBlockwiseFileset, description
from lazyflow_rbfs.describe import (
    add_describe_arguments,
    describe_main,
    describe_source,
    parse_source,
    suggest_block_shape,
)
from lazyflow_rbfs.errors import DescriptionError, DownloadError
from lazyflow_rbfs.testing import BossSettings, CutoutServer, PrecomputedSettings, sample_volume

SHAPE = (24, 80, 72)
ORIGIN = (2, 16, 32)
TOKEN = "describe-token-0a1b2c3d4e5f"


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return sample_volume(SHAPE, seed=21, writeable=False)


@pytest.fixture
def server(volume):
    with CutoutServer(
        volume,
        origin_offset=ORIGIN,
        boss=BossSettings(token=TOKEN),
        precomputed=PrecomputedSettings(chunk_xyz=(16, 16, 8), scales=2),
    ) as srv:
        yield srv


def read_all(path: str | Path) -> np.ndarray:
    with RESTfulBlockwiseFileset(path, retries=0) as f:
        return f[:]


# -- precomputed ---------------------------------------------------------------------------------------------


def test_describe_precomputed_writes_a_description_that_reads_correctly(server, volume, tmp_path):
    path = describe_source(server.precomputed_url, tmp_path / "pc.json")
    assert path == str(tmp_path / "pc.json")
    desc = description.read_composite(path)
    remote, local = desc.remote_description, desc.local_description
    assert remote.format == "precomputed" and remote.axes == "zyx" and remote.scale == "1_1_1"
    np.testing.assert_array_equal(remote.origin_offset, ORIGIN)
    np.testing.assert_array_equal(local.shape, SHAPE)
    assert local.dtype == np.uint8 and local.dataset_root_dir == "pc-blocks"
    # Blocks are whole chunks (chunk zyx = 8, 16, 16), or the whole axis.
    for b, c, n in zip(local.block_shape, (8, 16, 16), SHAPE):
        assert b % c == 0 or b == n
    np.testing.assert_array_equal(read_all(path), volume)
    assert (tmp_path / "pc-blocks").is_dir()
    assert type(BlockwiseFilesetFactory.create(path, "r")).__name__ == "RESTfulBlockwiseFileset"


def test_describe_precomputed_with_scale_block_shape_and_cache_dir(server, volume, tmp_path):
    for scale in ("2_2_1", "1", 1):
        out = tmp_path / f"s{scale}.json"
        path = describe_source(
            server.precomputed_url + "/", out, scale=scale, block_shape="8,16,16", cache_dir=f"cache-{scale}"
        )
        desc = description.read_composite(path)
        assert desc.remote_description.scale == "2_2_1"
        np.testing.assert_array_equal(desc.local_description.block_shape, (8, 16, 16))
        assert desc.local_description.dataset_root_dir == f"cache-{scale}"
        np.testing.assert_array_equal(read_all(path), volume[:, ::2, ::2])
        assert list((tmp_path / f"cache-{scale}").rglob("STATUS.txt"))
    # The info URL itself and precomputed:// are accepted too.
    path = describe_source(
        f"precomputed://{server.precomputed_url}/info", tmp_path / "i.json", fill_missing=True
    )
    assert description.read_composite(path).remote_description.fill_missing is True


def test_describe_precomputed_errors(server, tmp_path):
    with pytest.raises(DescriptionError) as info:
        describe_source(server.precomputed_url, tmp_path / "x.json", scale="7_7_7")
    assert info.value.field == "scale" and "1_1_1" in str(info.value)
    with pytest.raises(DescriptionError) as info:
        describe_source(server.precomputed_url, tmp_path / "x.json", block_shape="8,16")
    assert info.value.field == "block_shape"
    with pytest.raises(DownloadError) as info:
        describe_source("precomputed://" + server.url + "/nothing-here", tmp_path / "x.json", retries=0)
    assert info.value.status == 404
    # A plain location is looked at for each format's metadata (issue 11): none there is a clear error.
    with pytest.raises(DescriptionError, match="found no volume at .*'info'") as info:
        describe_source(server.url + "/nothing-here", tmp_path / "x.json", retries=0)
    assert info.value.field == "source"
    with pytest.raises(DescriptionError) as info:
        describe_source("ftp://example.org/vol", tmp_path / "x.json")
    assert info.value.field == "source"
    with pytest.raises(DescriptionError):
        describe_source(server.precomputed_url, tmp_path / "x.json", token_env="T")
    assert not (tmp_path / "x.json").exists()


# -- Boss ---------------------------------------------------------------------------------------------------


@pytest.fixture
def intern(tmp_path, monkeypatch):
    """A HOME of the test's own (no intern.cfg) and no INTERN_* variables; returns ``configure(url, token)``
    that writes ~/.intern/intern.cfg naming ``token`` for the host of ``url``."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("INTERN_PROTOCOL", "INTERN_HOST", "INTERN_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    def configure(url: str, token: str) -> None:
        (home / ".intern").mkdir(exist_ok=True)
        host = url.split("://", 1)[1]
        (home / ".intern" / "intern.cfg").write_text(
            f"[Default]\nprotocol = http\nhost = {host}\ntoken = {token}\n"
        )

    return configure


def test_describe_boss_with_an_intern_token_never_writes_it(server, volume, tmp_path, intern, caplog):
    caplog.set_level(logging.DEBUG)
    intern(server.url, TOKEN)
    path = describe_source(
        "boss://sample/em/image",
        tmp_path / "boss.json",
        boss_url=server.url,
        cache_dir="boss-cache",
    )
    desc = description.read_composite(path)
    remote = desc.remote_description
    assert remote.format == "boss" and remote.resolution == 0
    assert remote.token_env is None and remote.token_file is None
    assert (remote.collection, remote.experiment, remote.channel) == ("sample", "em", "image")
    np.testing.assert_array_equal(remote.origin_offset, ORIGIN)
    np.testing.assert_array_equal(desc.local_description.shape, SHAPE)
    np.testing.assert_array_equal(read_all(path), volume)
    assert all(r.headers["Authorization"] == f"Token {TOKEN}" for r in server.request_log)
    for file in tmp_path.rglob("*"):
        if file.is_file() and file.name != "intern.cfg":
            assert TOKEN.encode() not in file.read_bytes(), file
    assert TOKEN not in caplog.text


def test_describe_boss_resolution_block_shape_and_intern_variables(
    server, volume, tmp_path, intern, monkeypatch
):
    monkeypatch.setenv("INTERN_PROTOCOL", "http")
    monkeypatch.setenv("INTERN_HOST", server.url.split("://", 1)[1])
    monkeypatch.setenv("INTERN_TOKEN", TOKEN)
    path = describe_source(
        "boss://sample/em/image",
        tmp_path / "b1.json",
        boss_url=server.url,
        scale="1",
        block_shape=(8, 16, 16),
    )
    desc = description.read_composite(path)
    assert desc.remote_description.resolution == 1 and desc.remote_description.token_env is None
    np.testing.assert_array_equal(desc.local_description.shape, (24, 40, 36))
    np.testing.assert_array_equal(read_all(path), volume[:, ::2, ::2])
    with pytest.raises(DescriptionError) as info:
        describe_source("boss://sample/em/image", tmp_path / "b9.json", boss_url=server.url, scale=9)
    assert info.value.field == "scale"


def test_describe_boss_public_wrong_and_right_token(volume, tmp_path, intern, monkeypatch):
    # INTERN_TOKEN alone is for api.bossdb.io: a local server gets the public token.
    monkeypatch.setenv("INTERN_TOKEN", "not-the-public-token")
    with CutoutServer(volume, boss=BossSettings(token="public")) as public:
        path = describe_source("boss://sample/em/image", tmp_path / "p.json", boss_url=public.url)
        np.testing.assert_array_equal(read_all(path)[0:4], volume[0:4])
        with pytest.raises(DownloadError) as info:
            describe_source("boss://sample/em/nochannel", tmp_path / "n.json", boss_url=public.url, retries=0)
        assert info.value.status == 404
        intern(public.url, "not-the-public-token")
        with pytest.raises(DownloadError) as info:
            describe_source("boss://sample/em/image", tmp_path / "w.json", boss_url=public.url)
        assert info.value.status == 403 and not (tmp_path / "w.json").exists()
        assert "not-the-public-token" not in str(info.value)
    with CutoutServer(volume, boss=BossSettings(token=TOKEN)) as private:
        intern(private.url, TOKEN)
        path = describe_source("boss://sample/em/image", tmp_path / "f.json", boss_url=private.url)
        assert "token" not in json.loads(Path(path).read_text())["remote_description"]
        np.testing.assert_array_equal(read_all(path)[0:4], volume[0:4])
        assert TOKEN.encode() not in Path(path).read_bytes()


# -- pieces -------------------------------------------------------------------------------------------------


def test_parse_source():
    assert parse_source("boss://a/b/c") == ("boss", ("a", "b", "c"))
    # A plain location is read by several formats (zarr, N5, precomputed): ``rbfs describe`` looks which
    # (formats.detect); without looking, it resolves to the same URL whichever format takes it.
    assert parse_source("gs://bucket/path/to/vol/")[1] == "https://storage.googleapis.com/bucket/path/to/vol"
    assert parse_source("s3://bucket/vol")[1] == "https://bucket.s3.amazonaws.com/vol"
    assert parse_source("precomputed://s3://bucket/vol") == (
        "precomputed",
        "https://bucket.s3.amazonaws.com/vol",
    )
    assert parse_source("precomputed://https://h/v/info") == ("precomputed", "https://h/v")
    # Local copies are sources too (issue 11): file:// URLs and paths, made absolute.
    assert parse_source("file:///tmp/x/")[1] == "file:///tmp/x"
    assert parse_source("vol")[1] == "file://" + os.path.abspath("vol")
    for bad in ("boss://a/b", "boss://a/b/c/d", "file://otherhost/tmp/x", "ftp://h/x"):
        with pytest.raises(DescriptionError):
            parse_source(bad)


def test_suggest_block_shape():
    assert suggest_block_shape((1000, 1000, 1000), (64, 64, 64), 1, target=1 << 20) == (64, 128, 128)
    block = suggest_block_shape((100, 5000, 5000), (16, 512, 512), 1)
    assert block == (16, 512, 512)
    assert suggest_block_shape((10, 20, 30), (64, 64, 64), 1) == (10, 20, 30)
    block = suggest_block_shape((4000, 4000, 4000), (8, 128, 128), 2)
    assert all(b % c == 0 for b, c in zip(block, (8, 128, 128)))
    assert np.prod(block) * 2 >= 4 << 20


def test_describe_main_with_argparse(server, volume, tmp_path):
    parser = argparse.ArgumentParser()
    add_describe_arguments(parser)
    args = parser.parse_args(
        [server.precomputed_url, "-o", str(tmp_path / "m.json"), "--scale", "0", "--block-shape", "8,32,32"]
    )
    path = describe_main(args)
    desc = description.read_composite(path)
    np.testing.assert_array_equal(desc.local_description.block_shape, (8, 32, 32))
    np.testing.assert_array_equal(read_all(path), volume)


# -- through the command line --------------------------------------------------------------------------------


def test_rbfs_describe_info_and_read_from_the_command_line(server, volume, tmp_path, capsys, monkeypatch):
    from lazyflow_rbfs.cli import main

    desc = tmp_path / "pc.json"
    assert main(["describe", server.precomputed_url, "-o", str(desc), "--cache-dir", "pc-cache"]) == 0
    assert f"wrote {desc}" in capsys.readouterr().out
    assert main(["info", str(desc)]) == 0
    info = capsys.readouterr().out
    assert "precomputed" in info and server.precomputed_url in info
    out = tmp_path / "part.npy"
    assert main(["read", str(desc), "--roi", "0:4,0:20,0:30", "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), volume[:4, :20, :30])
    assert (tmp_path / "pc-cache").is_dir()

    monkeypatch.setenv("MY_BOSS_TOKEN", TOKEN)
    monkeypatch.setenv("INTERN_PROTOCOL", "http")
    monkeypatch.setenv("INTERN_HOST", server.url.split("://", 1)[1])
    monkeypatch.setenv("INTERN_TOKEN", TOKEN)
    boss = tmp_path / "boss.json"
    args = ["describe", "boss://sample/em/image", "-o", str(boss), "--boss-url", server.url]
    # --token-env is gone: a one-line error that says where credentials go.
    assert main([*args, "--token-env", "MY_BOSS_TOKEN"]) == 2
    err = capsys.readouterr().err
    assert "token_env" in err and "intern.cfg" in err and "MY_BOSS_TOKEN" not in err
    assert main([*args, "--block-shape", "8,16,16"]) == 0
    capsys.readouterr()
    assert main(["info", str(boss)]) == 0
    assert "advice" in capsys.readouterr().out  # 8x16x16 blocks fight the 16x512x512 Boss cuboids
    assert main(["read", str(boss), "--roi", "0:8,0:16,0:16", "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), volume[:8, :16, :16])
    assert TOKEN not in boss.read_text()


def test_rbfs_describe_bad_source_is_one_line_exit_2(tmp_path, capsys):
    from lazyflow_rbfs.cli import main

    assert main(["describe", "ftp://example.org/vol", "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rbfs: error:")
