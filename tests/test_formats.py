"""Remote formats end to end: npz/npygz, BossDB cutouts and neuroglancer precomputed, each read through the
block cache (RESTfulBlockwiseFileset) from the local server on 127.0.0.1, faults included."""

from __future__ import annotations

import gzip
import io
import json
import logging
import pickle
import zlib
from pathlib import Path

import numpy as np
import pytest

from lazyflow_rbfs import RESTfulBlockwiseFileset, RESTfulVolume, description
from lazyflow_rbfs.errors import DescriptionError, DownloadError, InvalidResponseError, RemoteTimeoutError
from lazyflow_rbfs.remote import boss, codecs, precomputed, remote_advice, source_url
from lazyflow_rbfs.testing import BossSettings, CutoutServer, PrecomputedSettings, sample_volume

SHAPE = (20, 40, 36)
ORIGIN = (3, 8, 16)  # z, y, x: a voxel_offset of (16, 8, 3) for precomputed
BLOCK = (8, 16, 16)
TOKEN = "tok-9f8e7d6c5b4a-secret"


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return sample_volume(SHAPE, seed=11, writeable=False)


@pytest.fixture
def serve(volume, make_cutout_server):
    """``make_cutout_server`` serving this module's ``volume`` by default."""

    def make(array=None, **options) -> CutoutServer:
        return make_cutout_server(volume if array is None else array, **options)

    return make


def _has_blosc() -> bool:
    try:
        codecs.blosc_decompressor()
    except codecs.MissingCodecError:
        return False
    return True


HAS_BLOSC = _has_blosc()
#: Boss tests use blosc (the Boss default) when a blosc package is installed, else npygz.
BOSS_ENCODING = "blosc" if HAS_BLOSC else "npygz"
needs_pillow = pytest.mark.skipif(not codecs.jpeg_available(), reason="Pillow is not installed")


def open_cache(server: CutoutServer, tmp_path: Path, *, block=BLOCK, name="v", retries=0, **fields):
    if fields.get("format") == "boss":
        fields.setdefault("boss_encoding", BOSS_ENCODING)
    path = server.write_description(
        tmp_path / f"{name}.json", block_shape=block, cache_dir=f"{name}-cache", **fields
    )
    return RESTfulBlockwiseFileset(path, retries=retries, timeout=(5, 30))


def statuses(server: CutoutServer) -> list[int]:
    return [r.status for r in server.request_log]


def files_text(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


# -- npz / npygz ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["npz", "npygz"])
def test_npz_formats_read_through_the_cache(serve, volume, tmp_path, fmt):
    server = serve(origin_offset=ORIGIN)
    with open_cache(server, tmp_path, format=fmt) as f:
        np.testing.assert_array_equal(f[:], volume)
        np.testing.assert_array_equal(f[5:17, 3:31, 30:36], volume[5:17, 3:31, 30:36])
    assert all("/npz/0/" in r.path for r in server.request_log)


def test_npy_zlib_decoder_drops_leading_channel_axis_and_never_unpickles():
    expected = codecs.Expected(url="http://h/x", shape=(2, 3, 4), dtype=np.dtype(np.uint16))
    array = np.arange(24, dtype=">u2").reshape(1, 2, 3, 4)
    buffer = io.BytesIO()
    np.save(buffer, array)
    decoded = codecs.decode("npz", zlib.compress(buffer.getvalue()), expected)
    np.testing.assert_array_equal(decoded, array[0])
    assert decoded.dtype == np.uint16 and decoded.dtype.isnative
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidResponseError, match="object arrays are never"):
        codecs.decode("npz", zlib.compress(pickled.getvalue()), expected)
    with pytest.raises(InvalidResponseError, match="not zlib"):
        codecs.decode("npygz", b"plain bytes", expected)
    bomb = zlib.compress(b"\0" * (10 * 1024 * 1024))
    with pytest.raises(InvalidResponseError, match="inflates to more than"):
        codecs.decode("npz", bomb, expected)


# -- Boss ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoding",
    [pytest.param("blosc", marks=pytest.mark.skipif(not HAS_BLOSC, reason="no blosc package")), "npygz"],
)
def test_boss_reads_through_the_cache_with_token_and_accept_headers(
    serve, volume, tmp_path, intern, encoding
):
    server = serve(origin_offset=ORIGIN, boss=BossSettings(token=TOKEN))
    intern.variables(server, TOKEN)
    with open_cache(server, tmp_path, format="boss", boss_encoding=encoding) as f:
        np.testing.assert_array_equal(f[:], volume)
        assert f.remote.format == "boss"
    log = server.request_log
    assert log and all(r.status == 200 for r in log)
    assert {r.headers["Accept"] for r in log} == {f"application/{encoding}"}
    assert {r.headers["Authorization"] for r in log} == {f"Token {TOKEN}"}
    # Boss coordinates: origin_offset added, x:y:z order, one request per block (27 blocks).
    assert len(log) == 27
    assert any(r.path.startswith("/v1/cutout/sample/em/image/0/16:32/8:24/3:11/") for r in log)


class _Intern:
    """The user's intern configuration, in a HOME of the test's own."""

    def __init__(self, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.home, self.monkeypatch = home, monkeypatch

    def config_file(self, server: CutoutServer, token: str) -> None:
        (self.home / ".intern").mkdir(exist_ok=True)
        text = f"[Default]\nprotocol = http\nhost = 127.0.0.1:{server.port}\ntoken = {token}\n"
        (self.home / ".intern" / "intern.cfg").write_text(text)

    def variables(self, server: CutoutServer, token: str) -> None:
        self.monkeypatch.setenv("INTERN_PROTOCOL", "http")
        self.monkeypatch.setenv("INTERN_HOST", f"127.0.0.1:{server.port}")
        self.monkeypatch.setenv("INTERN_TOKEN", token)


@pytest.fixture
def intern(tmp_path, monkeypatch) -> _Intern:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("INTERN_PROTOCOL", "INTERN_HOST", "INTERN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return _Intern(home, monkeypatch)


@pytest.mark.parametrize("source", ["intern.cfg", "INTERN_variables", "INTERN_TOKEN_alone", "public"])
def test_boss_token_sources(serve, volume, tmp_path, intern, monkeypatch, source):
    # INTERN_TOKEN alone is for api.bossdb.io: this server (127.0.0.1) gets the public token.
    expected = TOKEN if source in ("intern.cfg", "INTERN_variables") else "public"
    server = serve(boss=BossSettings(token=expected))
    if source == "intern.cfg":
        intern.config_file(server, TOKEN)
    elif source == "INTERN_variables":
        intern.variables(server, TOKEN)
    elif source == "INTERN_TOKEN_alone":
        monkeypatch.setenv("INTERN_TOKEN", TOKEN)
    with open_cache(server, tmp_path, format="boss") as f:
        np.testing.assert_array_equal(f[0:8, 0:16, 0:16], volume[0:8, 0:16, 0:16])
    assert {r.headers["Authorization"] for r in server.request_log} == {f"Token {expected}"}
    assert TOKEN not in boss.token_source(server.url)
    # The token itself is written nowhere.
    assert TOKEN.encode() not in files_text(tmp_path / "v-cache")
    assert TOKEN.encode() not in (tmp_path / "v.json").read_bytes()


def test_boss_token_fields_of_a_description_are_refused(serve, tmp_path, monkeypatch):
    server = serve(boss=BossSettings(token=TOKEN))
    monkeypatch.setenv("RBFS_TEST_TOKEN", TOKEN)
    token_file = tmp_path / "boss-token.txt"
    token_file.write_text(TOKEN)
    for field, value in (("token_env", "RBFS_TEST_TOKEN"), ("token_file", str(token_file))):
        with pytest.raises(DescriptionError) as info:
            open_cache(server, tmp_path, name=field, format="boss", **{field: value})
        assert info.value.field == f"remote_description.{field}"
        assert "intern.cfg" in str(info.value) and TOKEN not in str(info.value)
    assert server.requests == 0


def test_boss_wrong_token_is_a_download_error_403_and_nothing_is_cached(serve, tmp_path, intern):
    import requests

    server = serve(boss=BossSettings(token=TOKEN))
    intern.variables(server, "wrong-token")
    with open_cache(server, tmp_path, format="boss") as f:
        with pytest.raises(DownloadError) as info:
            f[0:8, 0:16, 0:16]
    assert info.value.status == 403
    assert server.request_log[0].headers["Authorization"] == "Token wrong-token"
    assert not isinstance(info.value, (InvalidResponseError, RemoteTimeoutError))
    assert "credentials" in str(info.value) and "wrong-token" not in str(info.value)
    assert not list((tmp_path / "v-cache").rglob("STATUS.txt"))
    # Without any Authorization header the server answers 401.
    url = f"{server.url}/v1/cutout/sample/em/image/0/0:4/0:4/0:2/"
    assert requests.get(url, headers={"Accept": "application/blosc"}, timeout=10).status_code == 401


def test_boss_429_with_retry_after_backs_off_then_succeeds(serve, volume, tmp_path):
    server = serve(boss=BossSettings())
    server.faults.fail_next(2, 429, retry_after=0, match="/v1/cutout/")
    with open_cache(server, tmp_path, format="boss", retries=3) as f:
        np.testing.assert_array_equal(f[0:8, 0:16, 0:16], volume[0:8, 0:16, 0:16])
        assert f.remote.stats.retries == 2
    assert statuses(server) == [429, 429, 200]


def test_boss_429_beyond_the_retries_is_a_download_error_429(serve, tmp_path):
    server = serve(boss=BossSettings())
    server.faults.fail_next(5, 429, retry_after=0)
    with open_cache(server, tmp_path, format="boss", retries=1) as f:
        with pytest.raises(DownloadError) as info:
            f[0:8, 0:16, 0:16]
    assert info.value.status == 429
    assert statuses(server) == [429, 429]


def test_boss_splits_cutouts_above_the_limit_and_assembles_them(serve, volume, tmp_path):
    limit = 3000  # bytes; a 20 x 40 x 36 uint8 block holds 28800
    server = serve(origin_offset=ORIGIN, boss=BossSettings(max_cutout_bytes=limit))
    with open_cache(server, tmp_path, block=SHAPE, format="boss", max_cutout_bytes=limit) as f:
        np.testing.assert_array_equal(f[:], volume)
        assert f.remote.stats.requests == len(server.request_log)
    log = server.request_log
    assert len(log) >= 28800 // limit and all(r.status == 200 for r in log)
    # Without the limit in the description the service refuses the cutout (HTTP 413), loudly.
    with open_cache(server, tmp_path, name="nolimit", block=SHAPE, format="boss") as f:
        with pytest.raises(DownloadError) as info:
            f[:]
    assert info.value.status == 413


def test_split_cutout_tiles_the_box_within_the_limit_on_cuboid_boundaries():
    rng = np.random.default_rng(5)
    for _ in range(40):
        start = rng.integers(0, 2000, 3)
        stop = start + rng.integers(1, 1500, 3)
        limit = int(rng.integers(1, 64)) * 512 * 512 * 16 // 8
        pieces = boss.split_cutout(start, stop, "zyx", 2, limit)
        covered = np.zeros(0)
        total = 0
        for lo, hi in pieces:
            assert (lo >= start).all() and (hi <= stop).all() and (hi > lo).all()
            assert int(np.prod(hi - lo)) * 2 <= limit
            for axis, cuboid in zip(range(3), (16, 512, 512)):
                if lo[axis] != start[axis]:
                    assert lo[axis] % cuboid == 0 or (hi[axis] - lo[axis]) * 2 < cuboid * 2
            total += int(np.prod(hi - lo))
        assert total == int(np.prod(stop - start))  # no overlaps (sum) and
        del covered
    # Exact tiling on a small case, checked voxel by voxel.
    counts = np.zeros((40, 1100, 600), dtype=np.uint8)
    for lo, hi in boss.split_cutout((0, 0, 0), (40, 1100, 600), "zyx", 1, 512 * 512 * 16):
        counts[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] += 1
    assert (counts == 1).all()
    # A box under the limit is one request.
    assert len(boss.split_cutout((0, 0, 0), (16, 512, 512), "zyx", 1, 512 * 512 * 16)) == 1


def test_cuboid_advice_for_blocks_that_fight_the_boss_grid(serve, tmp_path):
    server = serve(boss=BossSettings())
    path = server.write_description(tmp_path / "v.json", block_shape=BLOCK, format="boss")
    composite = description.read_composite(path)
    advice = remote_advice(composite.remote_description, composite.local_description)
    assert advice and "512" in advice[0] and "[16, 512, 512]" in advice[0]
    assert boss.cuboid_advice("zyx", (0, 0, 0), (16, 512, 512)) == []
    assert boss.cuboid_advice("zyx", (0, 0, 0), (32, 1024, 512)) == []
    assert any("off the cuboid grid" in a for a in boss.cuboid_advice("zyx", (3, 0, 0), (16, 512, 512)))
    hdf5 = description.read_composite(server.write_description(tmp_path / "h.json", block_shape=BLOCK))
    assert remote_advice(hdf5.remote_description, hdf5.local_description) == []


def test_boss_time_axis_cutouts(serve, tmp_path, monkeypatch):
    monkeypatch.delenv("INTERN_TOKEN", raising=False)
    array = sample_volume((3, 6, 20, 24), seed=2)
    server = serve(array, axes="tzyx", boss=BossSettings())
    with open_cache(server, tmp_path, block=(1, 4, 16, 16), format="boss") as f:
        np.testing.assert_array_equal(f[:], array)
    assert all(r.path.count(":") == 4 for r in server.request_log)  # x, y, z and t ranges


def test_boss_volume_pickles_without_its_token_and_hides_it(serve, tmp_path, intern, caplog):
    caplog.set_level(logging.DEBUG)
    server = serve(boss=BossSettings(token=TOKEN))
    intern.config_file(server, TOKEN)
    remote = server.remote_description_dict(format="boss", boss_encoding=BOSS_ENCODING)
    with RESTfulVolume(preparsedDescription=remote, retries=0) as vol:
        np.testing.assert_array_equal(vol.fetch(((0, 0, 0), (2, 3, 4))).shape, (2, 3, 4))
        data = pickle.dumps(vol)
        shown = repr(vol) + str(vol.urls_for(((0, 0, 0), (2, 3, 4))))
        server.faults.fail_next(1, 403)
        with pytest.raises(DownloadError) as info:
            vol.fetch(((0, 0, 0), (2, 3, 4)))
        shown += str(info.value) + repr(info.value)
        copy = pickle.loads(data)
        assert copy.fetch(((0, 0, 0), (1, 1, 1))).shape == (1, 1, 1)  # re-resolves the token
        copy.close()
    assert TOKEN.encode() not in data
    assert TOKEN not in shown and "Authorization" in repr(vol)
    assert TOKEN not in caplog.text and caplog.text


# -- precomputed ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_xyz", [(16, 16, 8), (10, 12, 6), (64, 64, 64)])
def test_precomputed_raw_reads_edge_chunks_and_voxel_offset(serve, volume, tmp_path, chunk_xyz):
    server = serve(origin_offset=ORIGIN, precomputed=PrecomputedSettings(chunk_xyz=chunk_xyz))
    info = server.precomputed_info()["scales"][0]
    assert info["voxel_offset"] == [16, 8, 3] and info["size"] == [36, 40, 20]
    with open_cache(server, tmp_path, format="precomputed") as f:
        np.testing.assert_array_equal(f[:], volume)
        np.testing.assert_array_equal(f[19:20, 39:40, 35:36], volume[19:, 39:, 35:])
    chunk_paths = [r.path for r in server.request_log if not r.path.endswith("/info")]
    assert sum(r.path.endswith("/info") for r in server.request_log) == 1  # info fetched once
    assert all(r.status == 200 for r in server.request_log)
    # Every chunk name is on the grid anchored at voxel_offset, cut short at the far edge.
    for path in chunk_paths:
        name = path.rsplit("/", 1)[1]
        for (lo, hi), off, size, chunk in zip(
            (map(int, part.split("-")) for part in name.split("_")), (16, 8, 3), (36, 40, 20), chunk_xyz
        ):
            assert (lo - off) % chunk == 0 and hi == min(lo + chunk, off + size)


def test_precomputed_gzip_content_encoding_is_decoded(serve, tmp_path):
    smooth = np.broadcast_to(np.arange(36, dtype=np.uint16), SHAPE).copy()
    sizes = {}
    for gz in (True, False):
        server = serve(smooth, precomputed=PrecomputedSettings(gzip=gz))
        with open_cache(server, tmp_path, name=f"gz{gz}", format="precomputed") as f:
            np.testing.assert_array_equal(f[:], smooth)
        sizes[gz] = server.bytes_sent
        assert all("gzip" in r.headers.get("Accept-Encoding", "") for r in server.request_log)
    assert sizes[True] < sizes[False] / 2


def test_precomputed_scales_by_key_and_index(serve, volume, tmp_path):
    server = serve(precomputed=PrecomputedSettings(scales=2))
    for name, scale in (("byindex", 1), ("bykey", "2_2_1")):
        path = server.write_description(
            tmp_path / f"{name}.json", block_shape=BLOCK, cache_dir=name, format="precomputed", level=1
        )
        obj = json.loads(Path(path).read_text())
        obj["remote_description"]["scale"] = scale
        Path(path).write_text(json.dumps(obj))
        with RESTfulBlockwiseFileset(path) as f:
            np.testing.assert_array_equal(f[:], volume[:, ::2, ::2])
    assert any("/2_2_1/" in r.path for r in server.request_log)


def test_precomputed_missing_chunk_is_a_404_download_error_not_zeros(serve, volume, tmp_path):
    server = serve(precomputed=PrecomputedSettings(chunk_xyz=(16, 16, 8)))
    server.faults.fail_matching("/1_1_1/16-32_16-32_8-16", status=404)
    with open_cache(server, tmp_path, format="precomputed") as f:
        np.testing.assert_array_equal(f[0:8, 0:16, 0:16], volume[0:8, 0:16, 0:16])
        with pytest.raises(DownloadError) as info:
            f[8:16, 16:32, 16:32]
        assert f.getBlockStatus((8, 16, 16)) == f.BLOCK_NOT_AVAILABLE
    err = info.value
    assert type(err) is DownloadError and err.status == 404
    assert "chunk missing" in str(err) and "fill_missing" in str(err) and err.url.endswith("16-32_16-32_8-16")
    # A network failure is reported differently: no status, no "missing".
    server.close()
    with open_cache(server, tmp_path, name="down", format="precomputed") as f:
        with pytest.raises(DownloadError) as info:
            f[0:8, 0:16, 0:16]
    assert info.value.status is None and "missing" not in str(info.value)


def test_precomputed_fill_missing_reads_missing_chunks_as_zeros(serve, volume, tmp_path):
    server = serve(origin_offset=ORIGIN, precomputed=PrecomputedSettings(chunk_xyz=(16, 16, 8)))
    server.faults.fail_matching("/1_1_1/16-32_8-24_3-11", status=404)  # volume [0:8, 0:16, 0:16]
    with open_cache(server, tmp_path, format="precomputed", fill_missing=True) as f:
        out = f[:]
    expected = volume.copy()
    expected[0:8, 0:16, 0:16] = 0
    np.testing.assert_array_equal(out, expected)
    # Only 404 is "missing": other statuses still fail.
    server.faults.clear()
    server.faults.fail_matching("/1_1_1/16-32_8-24_3-11", status=500)
    with open_cache(server, tmp_path, name="other", format="precomputed", fill_missing=True) as f:
        with pytest.raises(DownloadError) as info:
            f[0:8, 0:16, 0:16]
    assert info.value.status == 500


@needs_pillow
def test_precomputed_jpeg_chunks_decode_approximately(serve, tmp_path):
    smooth = sample_volume(SHAPE, seed=4)
    server = serve(
        smooth, origin_offset=ORIGIN, precomputed=PrecomputedSettings(encoding="jpeg", chunk_xyz=(16, 16, 8))
    )
    with open_cache(server, tmp_path, format="precomputed") as f:
        out = f[:]
    assert out.shape == smooth.shape and out.dtype == np.uint8
    error = np.abs(out.astype(np.int16) - smooth.astype(np.int16))
    assert error.mean() < 4 and np.corrcoef(out.ravel(), smooth.ravel())[0, 1] > 0.98
    assert all(r.status == 200 for r in server.request_log)


def test_precomputed_channels_czyx(serve, tmp_path):
    array = sample_volume((2, 10, 20, 24), dtype=np.uint16, seed=6)
    server = serve(array, axes="czyx", precomputed=PrecomputedSettings(chunk_xyz=(16, 16, 4)))
    assert server.precomputed_info()["num_channels"] == 2
    with open_cache(server, tmp_path, block=(1, 4, 16, 16), format="precomputed") as f:
        np.testing.assert_array_equal(f[:], array)
        np.testing.assert_array_equal(f[1, 3:9, 5:17, 2:23], array[1, 3:9, 5:17, 2:23])


def test_precomputed_info_must_agree_with_the_description(serve, tmp_path):
    server = serve(origin_offset=ORIGIN)
    remote = server.remote_description_dict(format="precomputed")
    with RESTfulVolume(preparsedDescription=dict(remote, dtype="uint16")) as vol:
        with pytest.raises(DescriptionError) as info:
            vol.fetch(((0, 0, 0), (1, 1, 1)))
    assert info.value.field == "dtype" and "uint8" in str(info.value)
    too_big = dict(remote, bounds=[b + 1 for b in remote["bounds"]])
    with RESTfulVolume(preparsedDescription=too_big) as vol:
        with pytest.raises(DescriptionError) as info:
            vol.fetch(((0, 0, 0), (1, 1, 1)))
    assert info.value.field == "bounds"
    with RESTfulVolume(preparsedDescription=dict(remote, scale="9_9_9")) as vol:
        with pytest.raises(DescriptionError, match="1_1_1"):
            vol.fetch(((0, 0, 0), (1, 1, 1)))
    unsupported = serve(precomputed=PrecomputedSettings(encoding="jxl"))
    with RESTfulVolume(preparsedDescription=unsupported.remote_description_dict(format="precomputed")) as vol:
        with pytest.raises(DescriptionError, match="jxl"):
            vol.fetch(((0, 0, 0), (1, 1, 1)))


def test_precomputed_info_parsing_rejects_bad_and_sharded_infos():
    good = {
        "data_type": "uint8",
        "num_channels": 1,
        "scales": [{"key": "a", "size": [4, 4, 4], "chunk_sizes": [[2, 2, 2]], "encoding": "raw"}],
    }
    info = precomputed.parse_info(json.dumps(good).encode(), "http://h/info")
    assert info.scales[0].voxel_offset == (0, 0, 0)
    for bad in (
        b"not json",
        json.dumps(dict(good, data_type="object")).encode(),
        json.dumps(dict(good, scales=[])).encode(),
        json.dumps(dict(good, scales=[dict(good["scales"][0], size=[4, 4])])).encode(),
        json.dumps(dict(good, scales=[dict(good["scales"][0], key="../x")])).encode(),
    ):
        with pytest.raises(InvalidResponseError):
            precomputed.parse_info(bad, "http://h/info")
    sharded = dict(
        good, scales=[dict(good["scales"][0], sharding={"@type": "neuroglancer_uint64_sharded_v1"})]
    )
    info = precomputed.parse_info(json.dumps(sharded).encode(), "http://h/info")
    with pytest.raises(DescriptionError, match="sharded"):
        precomputed.check_scale_supported(info.scales[0], info)


def test_chunk_boxes_cover_the_roi_exactly():
    boxes = list(precomputed.chunk_boxes((5, 0, 3), (17, 10, 4), (3, 0, 0), (20, 10, 9), (8, 4, 5)))
    assert [tuple(lo.tolist()) for lo, _ in boxes][:3] == [(3, 0, 0), (3, 4, 0), (3, 8, 0)]
    assert (boxes[-1][1] == (19, 10, 5)).all()
    assert (next(precomputed.chunk_boxes((20,), (23,), (3,), (20,), (8,)))[1] == 23).all()  # cut short
    assert len(boxes) == 2 * 3 * 1
    assert precomputed.chunk_key((3, 4, 5), (11, 8, 10)) == "5-10_4-8_3-11"


# -- descriptions ------------------------------------------------------------------------------------------


def test_remote_format_fields_are_validated(serve, tmp_path):
    server = serve()
    base = server.remote_description_dict(format="boss")
    cases = [
        (dict(base, url_format=server.url_format), "format"),
        (dict(base, axes="xyz"), "axes"),
        (dict(base, token_env="not a name"), "token_env"),
        (dict(base, collection="a/b"), "collection"),
        (dict(base, boss_encoding="blosc-python"), "boss_encoding"),
        (dict(base, boss_url="ftp://h"), "boss_url"),
        (dict(base, max_cutout_bytes=0), "max_cutout_bytes"),
        (dict(base, scale=1), "scale"),
        (dict(server.remote_description_dict(format="precomputed"), fill_missing="yes"), "fill_missing"),
        (dict(server.remote_description_dict(format="precomputed"), scale=-1), "scale"),
        (dict(server.remote_description_dict(format="precomputed"), token_env="X"), "token_env"),
        (dict(server.remote_description_dict(), fill_missing=True), "fill_missing"),
        (dict(server.remote_description_dict(format="npz"), url_format=None), "url_format"),
    ]
    for obj, field in cases:
        with pytest.raises(DescriptionError) as info:
            description.parse_remote(obj)
        assert info.value.field == field, obj
    boss_desc = description.parse_remote({k: v for k, v in base.items() if k != "boss_url"})
    assert boss_desc.boss_url == description.DEFAULT_BOSS_URL and boss_desc.boss_encoding == "blosc"
    assert boss_desc.resolution == 0
    pc = description.parse_remote(server.remote_description_dict(format="precomputed"))
    assert pc.fill_missing is False and pc.scale == 0 and pc.url_format is None
    assert source_url(pc).startswith(server.precomputed_url)


def test_old_hdf5_descriptions_round_trip_without_new_fields(serve, tmp_path):
    server = serve()
    path = Path(server.write_remote_description(tmp_path / "r.json"))
    desc = description.read_remote(path)
    out = tmp_path / "copy.json"
    description.write_description(out, desc, "remote")
    written = json.loads(out.read_text())
    assert not set(written) & {n for names in description.REMOTE_FORMAT_FIELDS.values() for n in names}


def test_server_refuses_pickled_blosc_and_off_grid_chunks(serve):
    import requests

    server = serve(boss=BossSettings(), precomputed=PrecomputedSettings(chunk_xyz=(16, 16, 8)))
    url = f"{server.url}/v1/cutout/sample/em/image/0/0:4/0:4/0:2/"
    assert requests.get(url, headers={"Accept": "application/blosc-python"}, timeout=10).status_code == 406
    accept = f"application/{BOSS_ENCODING}"
    response = requests.get(url, headers={"Accept": accept}, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == accept
    pc = f"{server.precomputed_url}/1_1_1/"
    assert requests.get(pc + "0-16_0-16_0-8", timeout=10).status_code == 200
    assert requests.get(pc + "1-17_0-16_0-8", timeout=10).status_code == 404
    assert requests.get(pc + "32-48_0-16_0-8", timeout=10).status_code == 404  # x is 36 wide: 32-36
    body = requests.get(pc + "32-36_0-16_0-8", timeout=10, headers={"Accept-Encoding": "gzip"})
    assert body.status_code == 200 and len(body.content) == 4 * 16 * 8
    raw = requests.get(
        pc + "32-36_0-16_0-8", timeout=10, headers={"Accept-Encoding": "identity"}, stream=True
    )
    assert raw.headers.get("Content-Encoding") is None
    assert gzip.compress(b"") and raw.raw.read() == body.content


def test_missing_optional_codecs_are_clear_errors(serve, tmp_path, monkeypatch):
    def missing():
        raise codecs.MissingCodecError(
            "decoding ... needs the package 'blosc' (pip install 'lazyflow-rbfs[boss]')"
        )

    monkeypatch.setattr(codecs, "blosc_decompressor", missing)
    server = serve(boss=BossSettings(), precomputed=PrecomputedSettings(encoding="jpeg"))
    with pytest.raises(DescriptionError) as info:
        RESTfulVolume(
            preparsedDescription=server.remote_description_dict(format="boss", boss_encoding="blosc")
        )
    assert (
        info.value.field == "boss_encoding"
        and "pip install" in str(info.value)
        and "npygz" in str(info.value)
    )
    monkeypatch.setattr(codecs, "jpeg_available", lambda: False)
    with RESTfulVolume(preparsedDescription=server.remote_description_dict(format="precomputed")) as vol:
        with pytest.raises(DescriptionError) as info:
            vol.fetch(((0, 0, 0), (1, 1, 1)))
    assert info.value.field == "scale" and "Pillow" in str(info.value)
