"""The local cutout server itself: API, coordinates, faults, gate, accounting, descriptions, sample data."""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest
import requests

import lazyflow_rbfs.remote.formats  # noqa: F401  (registers the remote formats the schema knows)
from lazyflow_rbfs import description
from lazyflow_rbfs.testing import CutoutServer, run_server, sample_volume


def get(url: str, **kwargs) -> requests.Response:
    return requests.get(url, timeout=(5, 30), **kwargs)


def decode(body: bytes, name: str = "cube") -> np.ndarray:
    with h5py.File(io.BytesIO(body), "r") as f:
        return f[name][()]


# -- serving ------------------------------------------------------------------------------------------------


def test_serves_exactly_the_requested_region(cutout_server, sample_array):
    assert cutout_server.url.startswith("http://127.0.0.1:") and cutout_server.port > 0
    url = cutout_server.url_format.format(z_start=2, z_stop=9, y_start=5, y_stop=40, x_start=0, x_stop=3)
    response = get(url)
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content)
    np.testing.assert_array_equal(decode(response.content), sample_array[2:9, 5:40, 0:3])


def test_url_format_has_one_segment_per_axis_in_reversed_axis_order(cutout_server):
    fmt = cutout_server.url_format
    segments = "{x_start},{x_stop}/{y_start},{y_stop}/{z_start},{z_stop}"
    assert fmt == f"{cutout_server.url}/emca/sample/hdf5/0/{segments}/"


def test_origin_offset_shifts_server_coordinates(make_cutout_server, sample_array):
    server = make_cutout_server(origin_offset=(2917, 0, 10))
    assert server.bounds == (2937, 40, 46)
    response = get(server.cutout_url((1, 2, 3), (4, 5, 6)))
    assert "/13,16/2,5/2918,2921/" in response.url
    np.testing.assert_array_equal(decode(response.content), sample_array[1:4, 2:5, 3:6])
    # Coordinates below the origin are out of range.
    below = server.url_format.format(z_start=0, z_stop=1, y_start=0, y_stop=1, x_start=10, x_stop=11)
    assert get(below).status_code == 400


def test_custom_axes_url_order_and_dataset_name(make_cutout_server):
    array = sample_volume((3, 4, 5, 6), dtype=np.float32, seed=4)
    server = make_cutout_server(array, axes="tzyx", url_axes="tzyx", dataset_name="/data/raw", prefix="a/b")
    assert server.url_format.startswith(f"{server.url}/a/b/hdf5/0/{{t_start}},{{t_stop}}/")
    response = get(server.cutout_url((0, 1, 2, 3), (3, 4, 4, 6)))
    np.testing.assert_array_equal(decode(response.content, "data/raw"), array[0:3, 1:4, 2:4, 3:6])


def test_volume_from_npy_and_hdf5_paths(make_cutout_server, sample_array, tmp_path):
    np.save(tmp_path / "v.npy", sample_array)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f.create_dataset("g/vol", data=sample_array)
    for source in (tmp_path / "v.npy", f"{tmp_path}/v.h5/g/vol"):
        server = make_cutout_server(source)
        assert server.shape == sample_array.shape and server.dtype == np.uint8
        response = get(server.cutout_url((0, 0, 0), (5, 6, 7)))
        np.testing.assert_array_equal(decode(response.content), sample_array[:5, :6, :7])


def test_constructor_rejects_inconsistent_arguments(sample_array):
    with pytest.raises(ValueError):
        CutoutServer(sample_array, axes="zy")
    with pytest.raises(ValueError):
        CutoutServer(sample_array, axes="zzx")
    with pytest.raises(ValueError):
        CutoutServer(sample_array, origin_offset=(1, 2))
    with pytest.raises(ValueError):
        CutoutServer("volume.txt")


@pytest.mark.parametrize(
    "tail, status",
    [
        ("0,1/0,1/0,1/", 200),
        ("0,1/0,1/0,1", 200),
        ("0,1/0,1/", 400),  # too few segments
        ("0,1/0,1/0,1/0,1/", 400),  # too many
        ("0,1/0,1/a,b/", 400),  # not numbers
        ("0,1/0,1/1/", 400),  # no comma
        ("0,37/0,1/0,1/", 400),  # beyond x = 36
        ("0,1/0,1/5,5/", 400),  # empty
        ("0,1/0,1/6,5/", 400),  # reversed
        ("0,1/-1,1/0,1/", 400),  # negative
    ],
)
def test_malformed_and_out_of_range_requests_get_400(cutout_server, tail, status):
    assert get(f"{cutout_server.url}/emca/sample/hdf5/0/{tail}").status_code == status


@pytest.mark.parametrize("path", ["/", "/emca/other/hdf5/0/0,1/0,1/0,1/", "/emca/sample/hdf5/1/0,1/0,1/0,1/"])
def test_unknown_paths_get_404(cutout_server, path):
    assert get(cutout_server.url + path).status_code == 404


def test_keep_alive_reuses_one_connection(cutout_server):
    conn = http.client.HTTPConnection("127.0.0.1", cutout_server.port, timeout=30)
    try:
        for z in range(3):
            conn.request("GET", f"/emca/sample/hdf5/0/0,2/0,2/{z},{z + 1}/")
            response = conn.getresponse()
            assert response.status == 200 and response.version == 11
            response.read()
            assert not response.will_close
    finally:
        conn.close()
    assert cutout_server.requests == 3


# -- accounting ---------------------------------------------------------------------------------------------


def test_counts_bytes_log_and_headers(cutout_server):
    sizes = []
    for z in range(4):
        response = get(cutout_server.cutout_url((z, 0, 0), (z + 1, 3, 3)), headers={"X-Test": str(z)})
        sizes.append(len(response.content))
    missing = get(cutout_server.url + "/nothing")
    assert missing.status_code == 404
    assert cutout_server.requests == 5
    assert cutout_server.bytes_sent == sum(sizes) + len(missing.content)
    log = cutout_server.request_log
    assert [r.status for r in log] == [200, 200, 200, 200, 404]
    assert [r.headers.get("X-Test") for r in log[:4]] == ["0", "1", "2", "3"]
    assert cutout_server.request_log_paths()[0] == "/emca/sample/hdf5/0/0,3/0,3/0,1/"
    cutout_server.reset_stats()
    assert (cutout_server.requests, cutout_server.bytes_sent, cutout_server.request_log) == (0, 0, [])


def test_wait_for_requests_times_out_without_requests(cutout_server):
    assert cutout_server.wait_for_requests(1, timeout=0.05) is False
    get(cutout_server.cutout_url((0, 0, 0), (1, 1, 1)))
    assert cutout_server.wait_for_requests(1, timeout=0) is True


# -- gate ---------------------------------------------------------------------------------------------------


def test_pause_holds_requests_until_resume(cutout_server, sample_array):
    cutout_server.pause()
    with ThreadPoolExecutor(3) as pool:
        try:
            futures = [pool.submit(get, cutout_server.cutout_url((z, 0, 0), (z + 1, 2, 2))) for z in range(3)]
            assert cutout_server.wait_for_requests(3, timeout=30)
            assert cutout_server.wait_for_in_flight(3, timeout=30)
            assert cutout_server.in_flight == 3
            assert cutout_server.request_log == []  # none answered yet
            assert not any(f.done() for f in futures)
        finally:
            cutout_server.resume()
        results = [f.result(timeout=30) for f in futures]
    assert [r.status_code for r in results] == [200, 200, 200]
    for z, r in enumerate(results):
        np.testing.assert_array_equal(decode(r.content), sample_array[z : z + 1, :2, :2])
    assert cutout_server.max_in_flight == 3 and cutout_server.in_flight == 0


def test_close_releases_paused_requests_and_idle_connections(make_cutout_server):
    server = make_cutout_server()
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    idle.request("GET", "/emca/sample/hdf5/0/0,1/0,1/0,1/")
    idle.getresponse().read()  # leaves a kept-alive connection open
    server.pause()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(_get_or_error, server.cutout_url((0, 0, 0), (1, 1, 1)))
        assert server.wait_for_requests(2, timeout=30)
        server.close()
        server.close()  # idempotent
        assert future.result(timeout=30) in (200, "error")
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()


def _get_or_error(url: str):
    try:
        return get(url).status_code
    except requests.RequestException:
        return "error"


# -- faults -------------------------------------------------------------------------------------------------


def test_fail_next_then_recover_with_retry_after(cutout_server):
    cutout_server.faults.fail_next(2, 503, retry_after=7)
    url = cutout_server.cutout_url((0, 0, 0), (1, 1, 1))
    first, second, third = get(url), get(url), get(url)
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.headers["Retry-After"] == "7"
    assert cutout_server.faults.rules == []


def test_fail_matching_is_permanent_and_selective(cutout_server):
    cutout_server.faults.fail_matching("/0,1/0,1/0,1/", status=404)
    bad = cutout_server.cutout_url((0, 0, 0), (1, 1, 1))
    good = cutout_server.cutout_url((1, 0, 0), (2, 1, 1))
    assert [get(bad).status_code for _ in range(3)] == [404, 404, 404]
    assert get(good).status_code == 200
    cutout_server.faults.clear()
    assert get(bad).status_code == 200


def test_rules_apply_in_order_and_are_consumed(cutout_server):
    cutout_server.faults.fail_next(1, 500)
    cutout_server.faults.fail_next(1, 429)
    url = cutout_server.cutout_url((0, 0, 0), (1, 1, 1))
    assert [get(url).status_code for _ in range(3)] == [500, 429, 200]


def test_html_fault_answers_200_with_a_page(cutout_server):
    cutout_server.faults.html()
    response = get(cutout_server.cutout_url((0, 0, 0), (1, 1, 1)))
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert response.content.lstrip().lower().startswith(b"<!doctype html>")


def test_truncate_fault_sends_half_the_announced_body(cutout_server):
    cutout_server.faults.truncate()
    conn = http.client.HTTPConnection("127.0.0.1", cutout_server.port, timeout=30)
    try:
        conn.request("GET", "/emca/sample/hdf5/0/0,36/0,40/0,20/")
        response = conn.getresponse()
        announced = int(response.getheader("Content-Length"))
        with pytest.raises(http.client.IncompleteRead) as info:
            response.read()
    finally:
        conn.close()
    assert len(info.value.partial) == announced // 2
    assert cutout_server.bytes_sent == announced // 2


def test_wrong_shape_and_dtype_faults(cutout_server, sample_array):
    cutout_server.faults.wrong_shape()
    cutout_server.faults.wrong_dtype()
    url = cutout_server.cutout_url((0, 0, 0), (2, 3, 4))
    shaped, typed = decode(get(url).content), decode(get(url).content)
    assert shaped.shape == (2, 3, 5) and shaped.dtype == np.uint8
    assert typed.shape == (2, 3, 4) and typed.dtype == np.float64
    np.testing.assert_array_equal(typed, sample_array[:2, :3, :4])


def test_stall_holds_until_released(cutout_server, sample_array):
    rule = cutout_server.faults.stall()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(get, cutout_server.cutout_url((0, 0, 0), (2, 2, 2)))
        assert cutout_server.wait_for_requests(1, timeout=30)
        assert cutout_server.in_flight == 1 and not future.done()
        cutout_server.faults.release()
        response = future.result(timeout=30)
    assert rule.released.is_set()
    np.testing.assert_array_equal(decode(response.content), sample_array[:2, :2, :2])


def test_stall_client_timeout_does_not_break_the_server(cutout_server):
    cutout_server.faults.stall(seconds=30)
    url = cutout_server.cutout_url((0, 0, 0), (1, 1, 1))
    with pytest.raises(requests.ReadTimeout):
        requests.get(url, timeout=(5, 0.1))
    cutout_server.faults.release()
    assert get(url).status_code == 200


def test_faults_validate_their_arguments(cutout_server):
    with pytest.raises(ValueError):
        cutout_server.faults.add("explode")
    with pytest.raises(ValueError):
        cutout_server.faults.fail_next(0)


def test_latency_can_be_changed_at_runtime(cutout_server):
    cutout_server.latency = 0.01
    assert get(cutout_server.cutout_url((0, 0, 0), (1, 1, 1))).status_code == 200


# -- descriptions -------------------------------------------------------------------------------------------


def test_written_composite_description_parses(make_cutout_server, tmp_path):
    server = make_cutout_server(origin_offset=(5, 0, 0))
    path = server.write_description(
        tmp_path / "v.json",
        block_shape=(8, 16, 16),
        cache_dir="blocks",
        view_origin=(8, 0, 16),
        view_shape=(10, 20, 20),
        name="sample",
        local_shape=(18, 40, 36),
        compression="gzip",
    )
    desc = description.read_composite(path)
    remote, local = desc.remote_description, desc.local_description
    np.testing.assert_array_equal(remote.bounds, (25, 40, 36))
    np.testing.assert_array_equal(remote.origin_offset, (5, 0, 0))
    np.testing.assert_array_equal(remote.shape, (20, 40, 36))
    assert remote.dtype == np.uint8 and remote.axes == "zyx" and remote.url_format == server.url_format
    assert remote.hdf5_dataset == "cube" and remote.name == "sample"
    np.testing.assert_array_equal(local.shape, (18, 40, 36))
    np.testing.assert_array_equal(local.block_shape, (8, 16, 16))
    np.testing.assert_array_equal(local.view_origin, (8, 0, 16))
    np.testing.assert_array_equal(local.view_shape, (10, 20, 20))
    assert local.block_file_name_format == "block-{roiString}.h5/cube"
    assert local.compression == "gzip"
    assert json.loads((tmp_path / "v.json").read_text())["local_description"]["dataset_root_dir"] == "blocks"


def test_written_description_defaults(cutout_server, tmp_path):
    desc = description.read_composite(
        cutout_server.write_description(tmp_path / "v.json", block_shape=(4, 4, 4))
    )
    np.testing.assert_array_equal(desc.local_description.shape, cutout_server.shape)
    np.testing.assert_array_equal(desc.local_description.view_shape, cutout_server.shape)
    np.testing.assert_array_equal(desc.remote_description.origin_offset, (0, 0, 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.json"]  # written atomically, no leftovers


def test_written_remote_description_parses(cutout_server, tmp_path):
    desc = description.read_remote(cutout_server.write_remote_description(tmp_path / "r.json"))
    np.testing.assert_array_equal(desc.shape, cutout_server.shape)
    assert desc.format == "hdf5"


# -- sample data and run_server -----------------------------------------------------------------------------


def test_sample_volume_is_deterministic_and_position_dependent():
    a = sample_volume((16, 32, 32), seed=3)
    assert a.shape == (16, 32, 32) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, sample_volume((16, 32, 32), seed=3))
    assert (a != sample_volume((16, 32, 32), seed=4)).mean() > 0.5
    assert a.std() > 10  # not flat
    # A block moved by one block length (or transposed) differs almost everywhere.
    assert (a[:8] == a[8:]).mean() < 0.1
    assert (a[:, :16, :16] == a[:, 16:, :16]).mean() < 0.1
    assert (a[:, :16, :16] == a[:, :16, :16].transpose(0, 2, 1)).mean() < 0.2


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_])
@pytest.mark.parametrize("shape", [(9, 7), (3, 4, 5), (2, 3, 4, 5), (2, 2, 3, 4, 3)])
def test_sample_volume_any_dtype_and_ndim(dtype, shape):
    a = sample_volume(shape, dtype=dtype)
    assert a.shape == shape and a.dtype == np.dtype(dtype)
    if np.dtype(dtype).kind == "f":
        assert 0 <= a.min() and a.max() <= 1


def test_run_server_serves_until_stopped(sample_array):
    stop = threading.Event()
    ready: list[CutoutServer] = []
    got = threading.Event()

    def on_ready(server: CutoutServer) -> None:
        ready.append(server)
        got.set()

    thread = threading.Thread(
        target=run_server, args=(sample_array,), kwargs={"ready_callback": on_ready, "stop_event": stop}
    )
    thread.start()
    try:
        assert got.wait(30)
        server = ready[0]
        np.testing.assert_array_equal(
            decode(get(server.cutout_url((0, 0, 0), (2, 2, 2))).content), sample_array[:2, :2, :2]
        )
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
