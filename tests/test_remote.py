"""RESTfulVolume against a real cutout server on 127.0.0.1: URLs, decoding, validation, retries, errors."""

from __future__ import annotations

import gc
import json
import logging
import os
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest

from lazyflow_rbfs import description
from lazyflow_rbfs.errors import (
    ClosedError,
    DescriptionError,
    DownloadError,
    InvalidResponseError,
    OutOfBoundsError,
    RemoteTimeoutError,
)
from lazyflow_rbfs.remote import HttpClient, RESTfulVolume
from lazyflow_rbfs.testing import CutoutServer, sample_volume
from tests.procfs import HAVE_PROC, client_sockets_to

SECRET = "Token s3cr3t-value-never-logged"


def make_volume(server: CutoutServer, **options) -> RESTfulVolume:
    options.setdefault("backoff", 0)
    return RESTfulVolume(preparsedDescription=server.remote_description_dict(), **options)


def region(array: np.ndarray, start, stop) -> np.ndarray:
    return array[tuple(slice(a, b) for a, b in zip(start, stop))]


@pytest.fixture
def volume(cutout_server):
    with make_volume(cutout_server, retries=3, timeout=(5, 30)) as vol:
        yield vol


# -- construction and description plumbing ------------------------------------------------------------


def test_constructor_needs_exactly_one_description_source(cutout_server, remote_description_path):
    with pytest.raises(TypeError):
        RESTfulVolume()
    with pytest.raises(TypeError):
        RESTfulVolume(str(remote_description_path), cutout_server.remote_description_dict())


def test_reads_a_description_file_and_exposes_its_fields(remote_description_path, sample_array):
    with RESTfulVolume(str(remote_description_path)) as vol:
        assert vol.shape == sample_array.shape
        assert vol.dtype == np.uint8 and vol.axes == "zyx"
        assert vol.description.hdf5_dataset == "cube"
    assert RESTfulVolume.DescriptionFields is description.REMOTE_FIELDS
    desc = RESTfulVolume.readDescription(remote_description_path)
    np.testing.assert_array_equal(desc.shape, sample_array.shape)


def test_write_and_update_description_round_trip(remote_description_path, tmp_path):
    desc = RESTfulVolume.readDescription(remote_description_path)
    desc.origin_offset = np.array([2, 0, 0])
    RESTfulVolume.updateDescription(desc)
    np.testing.assert_array_equal(desc.shape, desc.bounds - np.array([2, 0, 0]))
    out = tmp_path / "copy.json"
    RESTfulVolume.writeDescription(out, desc)
    assert RESTfulVolume.readDescription(out) == desc


@pytest.mark.parametrize(
    "options",
    [{"timeout": 0}, {"timeout": (1, 2, 3)}, {"timeout": None}, {"retries": -1}, {"max_parallel": 0}],
)
def test_bad_options_are_rejected(cutout_server, options):
    with pytest.raises(ValueError):
        make_volume(cutout_server, **options)


# -- URLs ---------------------------------------------------------------------------------------------


def test_url_adds_origin_offset_in_url_axis_order_as_plain_ints(make_cutout_server):
    server = make_cutout_server(origin_offset=(2917, 5, 0))
    with make_volume(server) as vol:
        roi = (np.array([1, 2, 3], dtype=np.int64), np.array([4, 6, 9], dtype=np.uint16))
        url = vol.url_for(roi)
    assert url == f"{server.url}/emca/sample/hdf5/0/3,9/7,11/2918,2921/"


def test_url_for_checks_the_roi(volume):
    with pytest.raises(OutOfBoundsError):
        volume.url_for(((0, 0, 0), (1, 1, 1000)))


# -- fetching -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "roi",
    [
        ((0, 0, 0), (20, 40, 36)),
        ((0, 0, 0), (1, 1, 1)),
        ((19, 39, 35), (20, 40, 36)),
        ((3, 7, 11), (9, 30, 12)),
    ],
)
def test_fetch_returns_exactly_the_region(volume, sample_array, roi):
    got = volume.fetch(roi)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, region(sample_array, *roi))


@pytest.mark.parametrize(
    "shape, axes, origin, url_axes",
    [
        ((12, 10, 9), "zyx", (2917, 0, 0), None),
        ((12, 10, 9), "xyz", (0, 7, 1), "zxy"),
        ((3, 6, 10, 9), "tzyx", (0, 0, 0, 4), None),
        ((2, 5, 8, 7, 3), "tzyxc", (1, 2, 3, 4, 0), "ctzyx"),
        ((30, 20), "yx", (0, 100), None),
    ],
)
def test_fetch_with_any_axes_order_and_origin(make_cutout_server, shape, axes, origin, url_axes):
    array = sample_volume(shape, dtype=np.uint16, seed=2)
    server = make_cutout_server(array, axes=axes, origin_offset=origin, url_axes=url_axes)
    with make_volume(server) as vol:
        assert vol.shape == shape and vol.dtype == np.uint16
        start = tuple(s // 3 for s in shape)
        stop = tuple(s - s // 4 for s in shape)
        np.testing.assert_array_equal(vol.fetch((start, stop)), region(array, start, stop))
        np.testing.assert_array_equal(vol.fetch(((0,) * len(shape), shape)), array)


def test_safely_castable_dtype_is_accepted_and_converted(cutout_server, sample_array):
    desc = cutout_server.remote_description_dict()
    desc["dtype"] = "uint16"
    with RESTfulVolume(preparsedDescription=desc) as vol:
        got = vol.fetch(((0, 0, 0), (4, 5, 6)))
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, sample_array[:4, :5, :6])


def test_fetches_from_many_threads(volume, sample_array):
    rois = [((z, 0, 0), (z + 2, 40, 36)) for z in range(0, 20, 2)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(volume.fetch, rois))
    for roi, got in zip(rois, results):
        np.testing.assert_array_equal(got, region(sample_array, *roi))


def test_max_parallel_bounds_requests_in_flight(cutout_server, sample_array):
    cutout_server.pause()
    with make_volume(cutout_server, max_parallel=2) as vol, ThreadPoolExecutor(6) as pool:
        try:
            futures = [pool.submit(vol.fetch, ((z, 0, 0), (z + 1, 4, 4))) for z in range(6)]
            assert cutout_server.wait_for_requests(2, timeout=30)
            # Two requests are held at the gate; a third must not get through to the server.
            assert not cutout_server.wait_for_requests(3, timeout=0.3)
        finally:
            cutout_server.resume()
        for z, future in enumerate(futures):
            np.testing.assert_array_equal(future.result(timeout=30), sample_array[z : z + 1, :4, :4])
    assert cutout_server.requests == 6
    assert cutout_server.max_in_flight == 2


@pytest.mark.parametrize(
    "roi",
    [
        ((0, 0, 0), (21, 1, 1)),  # beyond shape
        ((-1, 0, 0), (1, 1, 1)),  # negative
        ((5, 5, 5), (4, 6, 6)),  # reversed
        ((5, 5, 5), (5, 6, 6)),  # zero volume
        ((0, 0), (1, 1)),  # wrong length
    ],
)
def test_out_of_bounds_raises_before_any_request(volume, cutout_server, roi):
    with pytest.raises(OutOfBoundsError):
        volume.fetch(roi)
    assert cutout_server.requests == 0


def test_stats_count_requests_bytes_and_errors(volume, cutout_server):
    volume.fetch(((0, 0, 0), (2, 2, 2)))
    volume.fetch(((0, 0, 0), (20, 40, 36)))
    cutout_server.faults.html()
    with pytest.raises(InvalidResponseError):
        volume.fetch(((0, 0, 0), (2, 2, 2)))
    stats = volume.stats
    assert stats.requests == 3
    assert stats.errors == 1
    assert stats.bytes_received == stats.bytes == cutout_server.bytes_sent


# -- retries and HTTP errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failures, status, retry_after",
    [(1, 500, None), (3, 500, None), (2, 503, None), (1, 429, 0), (2, 502, 0)],
)
def test_transient_failures_are_retried(cutout_server, sample_array, failures, status, retry_after):
    cutout_server.faults.fail_next(failures, status, retry_after=retry_after)
    with make_volume(cutout_server, retries=3) as vol:
        got = vol.fetch(((1, 2, 3), (4, 5, 6)))
        assert vol.stats.retries == failures
    np.testing.assert_array_equal(got, sample_array[1:4, 2:5, 3:6])
    assert cutout_server.requests == failures + 1
    assert [r.status for r in cutout_server.request_log] == [status] * failures + [200]


@pytest.mark.parametrize("retries", [0, 2])
def test_persistent_500_raises_download_error_after_retries(cutout_server, retries):
    cutout_server.faults.fail_next(100, 500)
    with make_volume(cutout_server, retries=retries) as vol:
        url = vol.url_for(((0, 0, 0), (1, 1, 1)))
        with pytest.raises(DownloadError) as info:
            vol.fetch(((0, 0, 0), (1, 1, 1)))
    err = info.value
    assert type(err) is DownloadError
    assert err.url == url and err.status == 500
    assert url in str(err) and "500" in str(err)
    assert err.__cause__ is None or isinstance(err.__cause__, Exception)
    assert cutout_server.requests == retries + 1


def test_404_is_not_retried(cutout_server):
    cutout_server.faults.fail_matching("/0,1/0,1/0,1/", status=404)
    with make_volume(cutout_server, retries=3) as vol:
        with pytest.raises(DownloadError) as info:
            vol.fetch(((0, 0, 0), (1, 1, 1)))
        assert info.value.status == 404
        assert cutout_server.requests == 1
        vol.fetch(((0, 0, 2), (1, 1, 3)))  # other regions are fine


def test_error_reaches_the_calling_thread(cutout_server):
    cutout_server.faults.fail_next(100, 503)
    with make_volume(cutout_server, retries=1) as vol, ThreadPoolExecutor(1) as pool:
        future = pool.submit(vol.fetch, ((0, 0, 0), (1, 1, 1)))
        with pytest.raises(DownloadError) as info:
            future.result(timeout=30)
    assert info.value.status == 503


def test_stalled_server_raises_remote_timeout(cutout_server):
    cutout_server.faults.stall(True)
    try:
        with make_volume(cutout_server, retries=1, timeout=(5, 0.2)) as vol:
            with pytest.raises(RemoteTimeoutError) as info:
                vol.fetch(((0, 0, 0), (1, 1, 1)))
        err = info.value
        assert isinstance(err, DownloadError) and isinstance(err, TimeoutError)
        assert err.url == vol.url_for(((0, 0, 0), (1, 1, 1))) and err.status is None
        assert err.url in str(err)
        assert cutout_server.wait_for_requests(2, timeout=30)  # the read timeout was retried once
    finally:
        cutout_server.faults.clear()


def test_refused_connection_is_a_download_error_not_a_timeout(make_cutout_server):
    server = make_cutout_server()
    desc = server.remote_description_dict()
    server.close()  # nothing listens on that port any more
    with RESTfulVolume(preparsedDescription=desc, retries=1, backoff=0) as vol:
        with pytest.raises(DownloadError) as info:
            vol.fetch(((0, 0, 0), (1, 1, 1)))
    assert not isinstance(info.value, RemoteTimeoutError)
    assert info.value.status is None and info.value.url.startswith(server.url)


# -- invalid responses ---------------------------------------------------------------------------------


def test_a_body_cut_off_is_retried_within_the_retry_budget(cutout_server, sample_array):
    cutout_server.faults.truncate(1)
    with make_volume(cutout_server, retries=2, backoff=0) as vol:
        np.testing.assert_array_equal(vol.fetch(((0, 0, 0), (4, 4, 4))), sample_array[:4, :4, :4])
    assert cutout_server.requests == 2
    cutout_server.reset_stats()
    cutout_server.faults.truncate(True)  # every body: fails after retries + 1 requests
    with make_volume(cutout_server, retries=2, backoff=0) as vol:
        with pytest.raises(InvalidResponseError, match="truncated|cut off"):
            vol.fetch(((0, 0, 0), (4, 4, 4)))
    assert cutout_server.requests == 3


@pytest.mark.parametrize("fault", ["html", "wrong_shape", "wrong_dtype"])
def test_invalid_responses_raise_invalid_response_error(cutout_server, sample_array, fault):
    getattr(cutout_server.faults, fault)(1)
    with make_volume(cutout_server, retries=2) as vol:
        url = vol.url_for(((0, 0, 0), (4, 4, 4)))
        with pytest.raises(InvalidResponseError) as info:
            vol.fetch(((0, 0, 0), (4, 4, 4)))
        assert info.value.url == url and url in str(info.value)
        assert cutout_server.requests == 1
        # The fault is gone: the next fetch of the same region works.
        np.testing.assert_array_equal(vol.fetch(((0, 0, 0), (4, 4, 4))), sample_array[:4, :4, :4])


def test_error_messages_say_what_was_expected_and_found(cutout_server):
    with make_volume(cutout_server) as vol:
        cutout_server.faults.wrong_shape()
        with pytest.raises(InvalidResponseError, match=r"\(4, 4, 5\).*\(4, 4, 4\)"):
            vol.fetch(((0, 0, 0), (4, 4, 4)))
        cutout_server.faults.wrong_dtype()
        with pytest.raises(InvalidResponseError, match="float64.*uint8"):
            vol.fetch(((0, 0, 0), (4, 4, 4)))


def test_missing_dataset_is_an_invalid_response(cutout_server):
    desc = cutout_server.remote_description_dict()
    desc["hdf5_dataset"] = "other"
    with RESTfulVolume(preparsedDescription=desc) as vol:
        with pytest.raises(InvalidResponseError, match="'/other'.*'/cube'"):
            vol.fetch(((0, 0, 0), (1, 1, 1)))


def test_client_refuses_bodies_over_the_cap(cutout_server):
    client = HttpClient(retries=0)
    try:
        url = cutout_server.cutout_url((0, 0, 0), (20, 40, 36))
        with pytest.raises(InvalidResponseError, match="refusing"):
            client.get(url, max_bytes=1000)
        assert len(client.get(url, max_bytes=10**6)) > 20 * 40 * 36
    finally:
        client.close()


def test_only_http_urls_are_requested():
    client = HttpClient()
    try:
        with pytest.raises(DownloadError, match="only http and https"):
            client.get("file:///etc/passwd")
    finally:
        client.close()


# -- secrets ----------------------------------------------------------------------------------------------


def test_headers_are_sent_but_never_logged_or_shown(cutout_server, caplog):
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": SECRET}
    with make_volume(cutout_server, headers=headers, retries=1) as vol:
        vol.fetch(((0, 0, 0), (2, 2, 2)))
        cutout_server.faults.fail_next(100, 500)
        with pytest.raises(DownloadError) as info:
            vol.fetch(((0, 0, 0), (2, 2, 2)))
        cutout_server.faults.clear()
        cutout_server.faults.stall(True)
        try:
            slow = make_volume(cutout_server, headers=headers, retries=0, timeout=(5, 0.2))
            with pytest.raises(RemoteTimeoutError) as timeout_info:
                slow.fetch(((0, 0, 0), (2, 2, 2)))
            slow.close()
        finally:
            cutout_server.faults.clear()
        shown = [repr(vol), str(vol), str(info.value), repr(info.value), str(timeout_info.value)]
        shown += [repr(e.__cause__) for e in (info.value, timeout_info.value)]
        shown.append(repr(pickle.loads(pickle.dumps(info.value))))
    assert all(r.headers.get("Authorization") == SECRET for r in cutout_server.request_log)
    assert "s3cr3t" not in caplog.text
    assert caplog.text  # DEBUG logging did happen (the URL is logged)
    for text in shown:
        assert "s3cr3t" not in text


# -- downloadSubVolume -----------------------------------------------------------------------------------


def test_download_sub_volume_writes_the_dataset(volume, sample_array, tmp_path):
    out = tmp_path / "block.h5"
    volume.downloadSubVolume(((2, 3, 4), (10, 20, 30)), f"{out}/cube")
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["cube"][()], sample_array[2:10, 3:20, 4:30])
    assert sorted(os.listdir(tmp_path)) == ["block.h5"]


def test_download_sub_volume_failure_leaves_nothing(volume, cutout_server, tmp_path):
    out = tmp_path / "block.h5"
    cutout_server.faults.truncate(True)
    with pytest.raises(DownloadError):
        volume.downloadSubVolume(((0, 0, 0), (4, 4, 4)), f"{out}/cube")
    assert os.listdir(tmp_path) == []
    # An existing file is kept byte-identical when a replacement download fails.
    cutout_server.faults.clear()
    volume.downloadSubVolume(((0, 0, 0), (4, 4, 4)), f"{out}/cube")
    before = out.read_bytes()
    cutout_server.faults.wrong_dtype(True)
    with pytest.raises(InvalidResponseError):
        volume.downloadSubVolume(((4, 4, 4), (8, 8, 8)), f"{out}/cube")
    assert out.read_bytes() == before
    assert os.listdir(tmp_path) == ["block.h5"]


def test_download_sub_volume_needs_the_description_dataset_name(volume, cutout_server, tmp_path):
    with pytest.raises(DescriptionError) as info:
        volume.downloadSubVolume(((0, 0, 0), (1, 1, 1)), f"{tmp_path}/b.h5/data")
    assert info.value.field == "hdf5_dataset"
    assert cutout_server.requests == 0
    assert os.listdir(tmp_path) == []


# -- errors, lifetime, pickling ---------------------------------------------------------------------------


def test_errors_pickle_with_their_attributes(cutout_server):
    with make_volume(cutout_server, retries=0) as vol:
        cutout_server.faults.fail_next(1, 503)
        with pytest.raises(DownloadError) as plain:
            vol.fetch(((0, 0, 0), (1, 1, 1)))
        cutout_server.faults.html()
        with pytest.raises(InvalidResponseError) as invalid:
            vol.fetch(((0, 0, 0), (1, 1, 1)))
    for err in (plain.value, invalid.value):
        clone = pickle.loads(pickle.dumps(err))
        assert type(clone) is type(err)
        assert (clone.url, clone.status, str(clone)) == (err.url, err.status, str(err))


def test_close_is_idempotent_and_later_fetches_fail(cutout_server):
    vol = make_volume(cutout_server)
    vol.fetch(((0, 0, 0), (1, 1, 1)))
    vol.close()
    vol.close()
    assert vol.closed and "closed" in repr(vol)
    with pytest.raises(ClosedError):
        vol.fetch(((0, 0, 0), (1, 1, 1)))


def test_volume_pickles_and_works_after_unpickling(volume, sample_array):
    clone = pickle.loads(pickle.dumps(volume))
    try:
        np.testing.assert_array_equal(clone.fetch(((0, 0, 0), (3, 3, 3))), sample_array[:3, :3, :3])
    finally:
        clone.close()


@pytest.mark.skipif(not HAVE_PROC, reason="needs /proc")
def test_sessions_of_finished_threads_are_released(volume, cutout_server):
    fetched = threading.Barrier(5)

    def work():
        volume.fetch(((0, 0, 0), (1, 1, 1)))
        fetched.wait(30)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    fetched.wait(30)
    # each thread's session keeps its connection open while the thread lives (so the check below can fail)
    assert client_sockets_to(cutout_server.port) >= 4
    for t in threads:
        t.join(30)
    del threads, t
    gc.collect()
    assert client_sockets_to(cutout_server.port) <= 1  # only the main thread's session may remain


def test_description_file_written_by_the_server_is_accepted(cutout_server, tmp_path):
    path = Path(cutout_server.write_remote_description(tmp_path / "r.json", name="sample"))
    assert json.loads(path.read_text())["name"] == "sample"
    with RESTfulVolume(path) as vol:
        assert vol.description.name == "sample"


def test_environment_proxies_are_honoured_per_host(cutout_server, sample_array, monkeypatch):
    import socket

    # A proxy address where nothing listens: requests through it must fail, requests that bypass it work.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{dead}")
    with make_volume(cutout_server, retries=0) as vol:
        with pytest.raises(DownloadError):
            vol.fetch(((0, 0, 0), (1, 1, 1)))
    assert cutout_server.requests == 0
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with make_volume(cutout_server, retries=0) as vol:
        for _ in range(2):  # the second request uses the settings remembered for this host
            np.testing.assert_array_equal(vol.fetch(((0, 0, 0), (2, 2, 2))), sample_array[:2, :2, :2])
    assert cutout_server.requests == 2


@pytest.mark.parametrize("retry_after", [0.05, "soon"])
def test_unusual_retry_after_values_still_back_off_and_recover(cutout_server, sample_array, retry_after):
    # A decimal Retry-After is honoured; an unparsable one falls back to the usual backoff.
    if retry_after == "soon":
        rule = cutout_server.faults.fail_next(2, 429)
        rule.retry_after = "soon"  # the server sends the header text as given
    else:
        cutout_server.faults.fail_next(2, 429, retry_after=retry_after)
    with make_volume(cutout_server, retries=3, backoff=0) as vol:
        np.testing.assert_array_equal(vol.fetch(((0, 0, 0), (2, 2, 2))), sample_array[:2, :2, :2])
    assert cutout_server.requests == 3
