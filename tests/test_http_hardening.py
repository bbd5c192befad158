"""The HTTP layer under hostile servers (issue 9, items 5, 11 and 12): secrets that stay with their origin and
out of every message, a read timeout that bounds the whole response, and close() that abandons requests.

Every server here is real, on 127.0.0.1 port 0: the package's CutoutServer, or a tiny raw HTTP server of
this module whose answer is a function of the request (dripping bytes, echoing headers, redirecting).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lazyflow_rbfs import RESTfulBlockwiseFileset, RESTfulVolume, description
from lazyflow_rbfs.describe import describe_source
from lazyflow_rbfs.errors import (
    ArgumentError,
    ClosedError,
    DescriptionError,
    DownloadError,
    InvalidResponseError,
    RemoteTimeoutError,
)
from lazyflow_rbfs.remote import HttpClient, boss
from lazyflow_rbfs.remote.redaction import scrub_error
from lazyflow_rbfs.testing import BossSettings, CutoutServer, sample_volume

REPO = Path(__file__).resolve().parents[1]
TOKEN = "intern-tok-7c1e9a55d0b3"
API_KEY = "x-api-key-e0f1d2c3b4a5"


# ---------------------------------------------------------------------------------------------------------
# A raw HTTP/1.1 server whose answer is a function of the request


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


class RawServer:
    """``respond(request, connection, server)`` writes the whole answer; every connection closes after it.

    ``server.stop`` is set at close, so a responder that trickles bytes waits on it between bytes.
    """

    def __init__(
        self, respond: Callable[[Request, socket.socket, RawServer], None], tls: ssl.SSLContext | None = None
    ) -> None:
        self.respond = respond
        self.scheme = "https" if tls is not None else "http"
        self.stop = threading.Event()
        self.requests: list[Request] = []
        self._cond = threading.Condition()
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                owner._serve(self)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            block_on_close = False
            allow_reuse_address = True

            def get_request(self):  # type: ignore[no-untyped-def]
                conn, address = super().get_request()
                if tls is not None:
                    conn.settimeout(10)
                    conn = tls.wrap_socket(conn, server_side=True)
                    conn.settimeout(None)
                return conn, address

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _serve(self, handler: socketserver.StreamRequestHandler) -> None:
        line = handler.rfile.readline(65537)
        if not line.strip():
            return
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            raw = handler.rfile.readline(65537)
            if raw in (b"\r\n", b"\n", b""):
                break
            key, _, value = raw.decode("latin-1").partition(":")
            headers[key.strip()] = value.strip()
        request = Request(method, path, headers)
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()
        try:
            self.respond(request, handler.connection, self)
        except OSError:
            pass  # the client went away

    def wait_for_requests(self, n: int, timeout: float = 30) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= n, timeout)

    def close(self) -> None:
        self.stop.set()
        self._server.shutdown()
        self._server.server_close()


def send(conn: socket.socket, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
    head = f"HTTP/1.1 {status} Whatever\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    conn.sendall(head.encode("latin-1") + b"\r\n" + body)


def drip(conn: socket.socket, server: RawServer, data: bytes, interval: float = 0.5) -> None:
    for i in range(len(data)):
        if server.stop.wait(interval):
            return
        conn.sendall(data[i : i + 1])


def drip_body(request: Request, conn: socket.socket, server: RawServer) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\nConnection: close\r\n\r\n")
    drip(conn, server, b"\0" * 65536)


def drip_head(request: Request, conn: socket.socket, server: RawServer) -> None:
    drip(conn, server, b"HTTP/1.1 200 OK\r\nX-Padding: " + b"p" * 200 + b"\r\nContent-Length: 1\r\n\r\n\0")


def echo_403(request: Request, conn: socket.socket, server: RawServer) -> None:
    """A careless server: an error page (and a header) that repeat what the client sent."""
    auth, key = request.headers.get("Authorization", "-"), request.headers.get("X-Api-Key", "-")
    text = "".join(f"{k}: {v}\n" for k, v in request.headers.items())
    send(
        conn,
        403,
        f"<html>invalid credentials {auth!r} / {key!r}; you sent\n{text}</html>".encode(),
        {
            "X-Echo-Authorization": request.headers.get("Authorization", "-"),
            "X-Echo-Key": request.headers.get("X-Api-Key", "-"),
        },
    )


@pytest.fixture
def raw_server():
    servers: list[RawServer] = []

    def make(respond):
        server = RawServer(respond)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A HOME of our own without intern configuration, and no INTERN_* variables."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    for name in ("INTERN_PROTOCOL", "INTERN_HOST", "INTERN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return path


def write_intern_cfg(home: Path, protocol: str, host: str, token: str, section: str = "Default") -> Path:
    path = home / ".intern" / "intern.cfg"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"[{section}]\nprotocol = {protocol}\nhost = {host}\ntoken = {token}\n")
    return path


def every_text(exc: BaseException) -> str:
    """Everything an exception can show: str, repr, the formatted chain, and its pickled clone."""
    clone = pickle.loads(pickle.dumps(exc))
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc)), str(clone), repr(clone)])


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERN_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["HOME"] = str(home)
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------------------
# Item 11: the read timeout bounds the whole response


@pytest.mark.timeout(60)
@pytest.mark.parametrize("responder", [drip_body, drip_head], ids=["body", "status-line"])
def test_a_dripping_server_cannot_hold_a_request_past_the_read_timeout(raw_server, responder):
    server = raw_server(responder)
    url = f"{server.url}/cutout"
    with HttpClient(timeout=(2, 2), retries=0, backoff=0) as client:
        start = time.monotonic()
        with pytest.raises(RemoteTimeoutError) as info:
            client.get(url, max_bytes=1 << 20)
        elapsed = time.monotonic() - start
    assert elapsed < 10, elapsed  # about 2 s; a trickle of 64 KiB at 2 bytes/s would take 9 hours
    assert info.value.url == url and url in str(info.value)
    assert isinstance(info.value, TimeoutError)
    assert len(server.requests) == 1


@pytest.mark.timeout(60)
def test_a_dripping_response_is_retried_like_other_timeouts(raw_server):
    server = raw_server(drip_body)
    with HttpClient(timeout=(2, 1), retries=1, backoff=0) as client:
        with pytest.raises(RemoteTimeoutError):
            client.get(f"{server.url}/x", max_bytes=1 << 20)
        assert client.stats.errors == 1
    assert len(server.requests) == 2


@pytest.mark.timeout(60)
def test_a_dripping_cutout_through_the_volume_is_a_timeout(raw_server, tmp_path):
    server = raw_server(drip_body)
    remote = {
        "_schema_name": "RESTful-volume-description",
        "_schema_version": 1.0,
        "name": "drip",
        "format": "hdf5",
        "axes": "zyx",
        "dtype": "uint8",
        "bounds": [64, 64, 64],
        "url_format": server.url + "/{z_start},{z_stop}/{y_start},{y_stop}/{x_start},{x_stop}/",
        "hdf5_dataset": "data",
    }
    start = time.monotonic()
    with RESTfulVolume(preparsedDescription=remote, timeout=(2, 2), retries=0) as vol:
        with pytest.raises(RemoteTimeoutError):
            vol.fetch(((0, 0, 0), (16, 64, 64)))
    assert time.monotonic() - start < 10


@pytest.fixture
def tls(tmp_path, monkeypatch) -> ssl.SSLContext:
    """A server TLS context with a self-signed certificate for 127.0.0.1, trusted via REQUESTS_CA_BUNDLE."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.timeout(60)
def test_deadline_and_close_over_tls(tls):
    def small(request: Request, conn: socket.socket, server: RawServer) -> None:
        if request.path == "/ok":
            send(conn, 200, b"fine")
        else:
            drip_body(request, conn, server)

    server = RawServer(small, tls)
    try:
        with HttpClient(timeout=(2, 2), retries=0) as client:
            assert client.get(f"{server.url}/ok", max_bytes=100) == b"fine"  # the certificate is trusted
            start = time.monotonic()
            with pytest.raises(RemoteTimeoutError):
                client.get(f"{server.url}/drip", max_bytes=1 << 20)
            assert time.monotonic() - start < 10
        client = HttpClient(timeout=(5, 60), retries=2)
        thread, outcome = _fetch_in_thread(lambda: client.get(f"{server.url}/drip", max_bytes=1 << 20))
        assert server.wait_for_requests(3)
        client.close()
        thread.join(5)
        assert not thread.is_alive() and isinstance(outcome[0], ClosedError), outcome
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------------------
# Item 12 (HTTP half): close() abandons requests in flight


def _fetch_in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[BaseException | None]]:
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.mark.timeout(60)
def test_close_abandons_a_request_stalled_on_the_server(make_cutout_server):
    server = make_cutout_server()
    server.faults.stall(None)  # every request is held until the server closes
    vol = RESTfulVolume(preparsedDescription=server.remote_description_dict(), timeout=(5, 60), retries=3)
    thread, outcome = _fetch_in_thread(lambda: vol.fetch(((0, 0, 0), (4, 4, 4))))
    assert server.wait_for_requests(1, timeout=30)
    start = time.monotonic()
    vol.close()
    assert time.monotonic() - start < 2  # close() does not wait for the request
    thread.join(5)
    assert not thread.is_alive(), "the fetch thread still waits on the stalled server after close()"
    assert time.monotonic() - start < 5
    assert isinstance(outcome[0], ClosedError), outcome
    assert not isinstance(outcome[0], DownloadError)  # abandoned, not a server failure
    assert server.requests == 1  # nothing is retried after close()


@pytest.mark.timeout(60)
def test_close_abandons_a_dripping_request_and_requests_waiting_for_a_slot(raw_server):
    server = raw_server(drip_body)
    client = HttpClient(timeout=(5, 60), retries=2, max_parallel=1)
    first, first_outcome = _fetch_in_thread(lambda: client.get(f"{server.url}/a", max_bytes=1 << 20))
    assert server.wait_for_requests(1)
    second, second_outcome = _fetch_in_thread(lambda: client.get(f"{server.url}/b", max_bytes=1 << 20))
    start = time.monotonic()
    client.close()
    first.join(5)
    second.join(5)
    assert not first.is_alive() and not second.is_alive()
    assert time.monotonic() - start < 5
    assert isinstance(first_outcome[0], ClosedError), first_outcome
    assert isinstance(second_outcome[0], ClosedError), second_outcome
    assert len(server.requests) == 1


@pytest.mark.timeout(60)
def test_close_ends_a_retry_backoff_at_once(make_cutout_server):
    server = make_cutout_server()
    server.faults.fail_next(100, 503, retry_after=50)  # asks the client to come back in 50 s
    vol = RESTfulVolume(preparsedDescription=server.remote_description_dict(), retries=3)
    thread, outcome = _fetch_in_thread(lambda: vol.fetch(((0, 0, 0), (4, 4, 4))))
    assert server.wait_for_requests(1, timeout=30)
    start = time.monotonic()
    vol.close()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - start < 5
    assert isinstance(outcome[0], ClosedError), outcome
    assert server.requests == 1


@pytest.mark.timeout(120)
def test_two_filesets_in_one_process_each_have_their_own_max_parallel(make_cutout_server, tmp_path):
    volume = sample_volume((8, 64, 64), seed=3)
    server = make_cutout_server(volume)
    paths = [
        server.write_description(tmp_path / f"v{i}.json", block_shape=(8, 16, 16), cache_dir=f"c{i}")
        for i in range(2)
    ]
    server.pause()
    filesets = [RESTfulBlockwiseFileset(p, max_parallel=2, retries=0) for p in paths]
    try:
        threads = [_fetch_in_thread(lambda f=f: f[:, :, :]) for f in filesets]
        try:
            assert server.wait_for_in_flight(4, timeout=30), server.in_flight  # 2 + 2
            assert not server.wait_for_in_flight(5, timeout=0.3)
        finally:
            server.resume()
        for thread, outcome in threads:
            thread.join(60)
            assert outcome == [None]
        assert server.max_in_flight == 4
    finally:
        for f in filesets:
            f.close()


# ---------------------------------------------------------------------------------------------------------
# Item 5: secrets stay out of errors and logs, and on their origin


def test_secrets_echoed_by_a_server_appear_in_no_error_or_log(raw_server, caplog):
    caplog.set_level(logging.DEBUG)
    server = raw_server(echo_403)
    headers = {"Authorization": f"Token {TOKEN}", "X-Api-Key": API_KEY}
    with HttpClient(headers=headers, retries=0) as client:
        with pytest.raises(DownloadError) as info:
            client.get(f"{server.url}/private", max_bytes=1 << 20)
        shown = every_text(info.value) + repr(client)
    assert info.value.status == 403 and "403" in str(info.value)
    assert server.requests[0].headers["X-Api-Key"] == API_KEY  # the server did get (and echo) them
    for secret in (TOKEN, API_KEY):
        assert secret not in shown
        assert secret not in caplog.text
    assert caplog.text  # the request was logged


def echo_200(request: Request, conn: socket.socket, server: RawServer) -> None:
    """A 200 whose body is no cutout but quotes the credentials: decoders quote the start of a bad body."""
    send(conn, 200, f"your request carried: {request.headers.get('Authorization')} and more".encode())


def test_a_secret_echoed_in_a_body_that_fails_to_decode_is_not_quoted(raw_server, caplog):
    caplog.set_level(logging.DEBUG)
    server = raw_server(echo_200)
    remote = {
        "_schema_name": "RESTful-volume-description",
        "_schema_version": 1.0,
        "name": "echo",
        "format": "hdf5",
        "axes": "zyx",
        "dtype": "uint8",
        "bounds": [8, 8, 8],
        "url_format": server.url + "/{z_start},{z_stop}/{y_start},{y_stop}/{x_start},{x_stop}/",
        "hdf5_dataset": "data",
    }
    with RESTfulVolume(preparsedDescription=remote, headers={"Authorization": f"Token {TOKEN}"}) as vol:
        with pytest.raises(InvalidResponseError) as info:
            vol.fetch(((0, 0, 0), (2, 2, 2)))
    shown = every_text(info.value) + caplog.text
    assert "your request carried" in str(info.value)  # the decoder did quote the body's start
    assert TOKEN[:8] not in shown  # not the token, nor the part of it the excerpt kept


def test_secrets_cut_short_in_a_message_are_still_scrubbed():
    with HttpClient(headers={"X-Api-Key": API_KEY}) as client:
        error = DownloadError(f"quoted {API_KEY[:9]!r}, {API_KEY.upper()} and {API_KEY[:5]}", url="u")
        assert scrub_error(error) is error
        assert str(error) == f"quoted '***', *** and {API_KEY[:5]}"
        assert "X-Api-Key" in repr(client)


def test_a_header_value_that_would_break_the_request_is_refused_without_showing_it():
    with pytest.raises(ArgumentError) as info:
        HttpClient(headers={"X-Api-Key": f"{API_KEY}\r\nX-Injected: 1"})
    assert "X-Api-Key" in str(info.value) and API_KEY not in every_text(info.value)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["read", "prefetch"])
@pytest.mark.parametrize("verbose", [False, True])
def test_the_cli_never_shows_an_echoed_token(raw_server, tmp_path, command, verbose):
    server = raw_server(echo_403)
    home = tmp_path / "home"
    home.mkdir()
    path = tmp_path / "echo.json"
    path.write_text(json.dumps(_boss_composite(server.url)))
    argv = [sys.executable, "-m", "lazyflow_rbfs"] + (["-v"] if verbose else []) + [command, str(path)]
    argv += ["--roi", "0:8,0:8,0:8", "--retries", "0"]
    if command == "read":
        argv += ["-o", str(tmp_path / "out.npy")]
    env = _env(home, INTERN_PROTOCOL="http", INTERN_HOST=f"127.0.0.1:{server.port}", INTERN_TOKEN=TOKEN)
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 1, proc.stderr
    assert "403" in proc.stderr
    assert server.requests and server.requests[0].headers["Authorization"] == f"Token {TOKEN}"
    assert TOKEN not in proc.stderr and TOKEN not in proc.stdout
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert TOKEN.encode() not in file.read_bytes(), file


def _boss_composite(boss_url: str) -> dict:
    return {
        "_schema_name": "RESTful-blockwise-fileset-description",
        "_schema_version": 1.0,
        "remote_description": {
            "_schema_name": "RESTful-volume-description",
            "_schema_version": 1.0,
            "name": "echo",
            "format": "boss",
            "axes": "zyx",
            "dtype": "uint8",
            "bounds": [16, 16, 16],
            "boss_url": boss_url,
            "collection": "c",
            "experiment": "e",
            "channel": "ch",
            "boss_encoding": "npygz",
        },
        "local_description": {
            "_schema_name": "blockwise-fileset-description",
            "_schema_version": 1.1,
            "name": "echo-blocks",
            "format": "hdf5",
            "axes": "zyx",
            "shape": [16, 16, 16],
            "dtype": "uint8",
            "block_shape": [8, 8, 8],
            "block_file_name_format": "block-{roiString}.h5/data",
            "dataset_root_dir": "cache",
        },
    }


def _record_ok(request: Request, conn: socket.socket, server: RawServer) -> None:
    send(conn, 200, b"landed")


def test_no_caller_header_follows_a_redirect_to_another_origin(raw_server):
    other = raw_server(_record_ok)  # another port: another origin

    def redirect(request: Request, conn: socket.socket, server: RawServer) -> None:
        if request.path.startswith("/same"):
            send(conn, 302, headers={"Location": "/final"})
        elif request.path == "/final":
            send(conn, 200, b"same origin")
        else:
            send(conn, 307, headers={"Location": f"{other.url}/elsewhere"})

    origin = raw_server(redirect)
    headers = {"Authorization": f"Token {TOKEN}", "X-Api-Key": API_KEY}
    with HttpClient(headers=headers, retries=0) as client:
        assert client.get(f"{origin.url}/cross", max_bytes=1000) == b"landed"
        assert client.get(f"{origin.url}/same", max_bytes=1000) == b"same origin"
    crossed = other.requests[0].headers
    assert "X-Api-Key" not in crossed and "Authorization" not in crossed
    assert TOKEN not in str(crossed) and API_KEY not in str(crossed)
    # The origin itself, before and after a same-origin redirect, gets them.
    assert [r.path for r in origin.requests] == ["/cross", "/same", "/final"]
    assert all(r.headers.get("X-Api-Key") == API_KEY for r in origin.requests)


def test_a_redirect_that_parsers_read_differently_gets_no_headers(raw_server):
    # "http://127.0.0.1:OTHER\\@127.0.0.1:ORIGIN/x": urllib.parse reads host:port after the "@" (the origin),
    # urllib3 (which connects) reads the other port. The origin is what the connection goes to.
    other = raw_server(_record_ok)

    def redirect(request: Request, conn: socket.socket, server: RawServer) -> None:
        location = f"http://127.0.0.1:{other.port}\\@127.0.0.1:{server.port}/x"
        send(conn, 302, headers={"Location": location})

    origin = raw_server(redirect)
    with HttpClient(headers={"X-Api-Key": API_KEY}, retries=0) as client:
        client.get(f"{origin.url}/start", max_bytes=1000)
    assert other.requests and "X-Api-Key" not in other.requests[0].headers
    assert API_KEY not in str(other.requests[0].headers)


def test_redirects_are_bounded_and_only_to_http(raw_server):
    def loop(request: Request, conn: socket.socket, server: RawServer) -> None:
        if request.path == "/file":
            send(conn, 302, headers={"Location": "file:///etc/passwd"})
        else:
            send(conn, 302, headers={"Location": f"/again{len(server.requests)}"})

    server = raw_server(loop)
    with HttpClient(retries=0) as client:
        with pytest.raises(DownloadError, match="redirect") as info:
            client.get(f"{server.url}/start", max_bytes=1000)
        assert info.value.status == 302
        assert len(server.requests) <= 11
        with pytest.raises(DownloadError, match="file"):
            client.get(f"{server.url}/file", max_bytes=1000)


# ---------------------------------------------------------------------------------------------------------
# Item 5: Boss credentials are the user's (intern's configuration), for the host they name


@pytest.mark.parametrize("field", ["token_env", "token_file"])
def test_a_description_cannot_name_where_a_secret_is_read_from(make_cutout_server, tmp_path, field):
    server = make_cutout_server(boss=BossSettings())
    value = "GITHUB_TOKEN" if field == "token_env" else "/home/user/.ssh/id_ed25519"
    remote = server.remote_description_dict(format="boss", **{field: value})
    with pytest.raises(DescriptionError) as info:
        description.parse_remote(remote)
    assert info.value.field == field
    assert "intern.cfg" in str(info.value) and "INTERN_TOKEN" in str(info.value)
    with pytest.raises(DescriptionError) as info:
        RESTfulVolume(preparsedDescription=remote)
    assert info.value.field == field
    path = server.write_description(
        tmp_path / "c.json", block_shape=(4, 4, 4), format="boss", **{field: value}
    )
    with pytest.raises(DescriptionError) as info:
        RESTfulBlockwiseFileset(path)
    assert info.value.field == f"remote_description.{field}"
    assert server.requests == 0


def _boss_volume(server: CutoutServer) -> RESTfulVolume:
    remote = server.remote_description_dict(format="boss", boss_encoding="npygz")
    return RESTfulVolume(preparsedDescription=remote, retries=0)


def _sent_tokens(server: CutoutServer) -> set[str]:
    return {r.headers.get("Authorization", "") for r in server.request_log}


def test_intern_cfg_token_is_sent_to_its_host(make_cutout_server, home):
    server = make_cutout_server(boss=BossSettings(token=TOKEN))
    write_intern_cfg(home, "http", f"127.0.0.1:{server.port}", TOKEN)
    with _boss_volume(server) as vol:
        assert vol.fetch(((0, 0, 0), (2, 2, 2))).shape == (2, 2, 2)
        assert TOKEN not in repr(vol) and TOKEN.encode() not in pickle.dumps(vol)
    assert _sent_tokens(server) == {f"Token {TOKEN}"}


def test_intern_environment_variables_together_give_the_token_for_their_host(
    make_cutout_server, home, monkeypatch
):
    server = make_cutout_server(boss=BossSettings(token=TOKEN))
    monkeypatch.setenv("INTERN_PROTOCOL", "http")
    monkeypatch.setenv("INTERN_HOST", f"127.0.0.1:{server.port}")
    monkeypatch.setenv("INTERN_TOKEN", TOKEN)
    with _boss_volume(server) as vol:
        vol.fetch(((0, 0, 0), (2, 2, 2)))
    assert _sent_tokens(server) == {f"Token {TOKEN}"}


@pytest.mark.parametrize(
    "configured",
    [
        "token-alone",  # INTERN_TOKEN alone belongs to api.bossdb.io
        "other-port",
        "other-protocol",
        "other-host",
        "no-port",
    ],
)
def test_a_token_configured_for_another_origin_is_never_sent(
    make_cutout_server, home, monkeypatch, configured
):
    server = make_cutout_server(boss=BossSettings(token="public"))
    port = server.port
    if configured == "token-alone":
        monkeypatch.setenv("INTERN_TOKEN", TOKEN)
    else:
        host = {
            "other-port": f"127.0.0.1:{port + 1 if port < 65535 else port - 1}",
            "other-protocol": f"127.0.0.1:{port}",
            "other-host": f"localhost:{port}",
            "no-port": "127.0.0.1",
        }[configured]
        write_intern_cfg(home, "https" if configured == "other-protocol" else "http", host, TOKEN)
    with _boss_volume(server) as vol:
        vol.fetch(((0, 0, 0), (2, 2, 2)))
    assert _sent_tokens(server) == {"Token public"}


def test_token_matching_compares_whole_origins(home, monkeypatch):
    monkeypatch.setenv("INTERN_TOKEN", TOKEN)
    assert boss.resolve_token("https://api.bossdb.io") == TOKEN
    assert boss.resolve_token("https://API.BossDB.io:443/") == TOKEN
    for url in (
        "https://api.bossdb.io.attacker.com",
        "https://evil.api.bossdb.io.attacker.com",
        "https://attacker.com/api.bossdb.io",
        "https://api.bossdb.io@attacker.com",
        "http://api.bossdb.io",
        "https://api.bossdb.io:8443",
        "https://xapi.bossdb.io",
    ):
        assert boss.resolve_token(url) == boss.PUBLIC_TOKEN, url
    write_intern_cfg(home, "https", "boss.example.org", "cfg-token")
    assert boss.resolve_token("https://boss.example.org/") == "cfg-token"
    assert boss.resolve_token("https://api.bossdb.io") == TOKEN  # INTERN_TOKEN alone still for bossdb
    assert boss.resolve_token("https://boss.example.org.attacker.com") == boss.PUBLIC_TOKEN
    assert "cfg-token" not in boss.token_source("https://boss.example.org")
    assert "intern.cfg" in boss.token_source("https://boss.example.org")


def test_describe_uses_the_intern_token_of_its_host_and_writes_no_secret(home, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    volume = sample_volume((16, 32, 32), seed=5)
    with CutoutServer(volume, boss=BossSettings(token=TOKEN)) as server:
        with pytest.raises(DownloadError) as info:  # no configuration: the public token, refused
            describe_source("boss://sample/em/image", tmp_path / "a.json", boss_url=server.url, retries=0)
        assert info.value.status == 403
        write_intern_cfg(home, "http", f"127.0.0.1:{server.port}", TOKEN)
        path = describe_source("boss://sample/em/image", tmp_path / "b.json", boss_url=server.url)
        with RESTfulBlockwiseFileset(path, retries=0) as f:
            np.testing.assert_array_equal(f[0:4, 0:8, 0:8], volume[0:4, 0:8, 0:8])
    remote = json.loads(Path(path).read_text())["remote_description"]
    assert "token_env" not in remote and "token_file" not in remote
    for file in tmp_path.rglob("*"):
        if file.is_file() and file.name != "intern.cfg":
            assert TOKEN.encode() not in file.read_bytes(), file
    assert TOKEN not in caplog.text
    with pytest.raises(DescriptionError) as info:
        describe_source("boss://a/b/c", tmp_path / "c.json", boss_url=server.url, token_env="GITHUB_TOKEN")
    assert info.value.field == "token_env" and "intern.cfg" in str(info.value)


def test_the_boss_token_does_not_follow_a_redirect_to_another_origin(raw_server, home, monkeypatch):
    other = raw_server(_record_ok)

    def redirect(request: Request, conn: socket.socket, server: RawServer) -> None:
        send(conn, 302, headers={"Location": f"{other.url}{request.path}"})

    origin = raw_server(redirect)
    monkeypatch.setenv("INTERN_PROTOCOL", "http")
    monkeypatch.setenv("INTERN_HOST", f"127.0.0.1:{origin.port}")
    monkeypatch.setenv("INTERN_TOKEN", TOKEN)
    remote = _boss_composite(origin.url)["remote_description"]
    with RESTfulVolume(preparsedDescription=remote, retries=0) as vol:
        with pytest.raises(InvalidResponseError):  # "landed" is no cutout
            vol.fetch(((0, 0, 0), (2, 2, 2)))
    assert origin.requests[0].headers["Authorization"] == f"Token {TOKEN}"
    assert TOKEN not in str(other.requests[0].headers)


def _get_in_child(client: HttpClient, url: str, conn) -> None:  # runs in a forked child
    try:
        client.get(url, max_bytes=1 << 20)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(type(exc).__name__)
    else:
        conn.send("no error")


@pytest.mark.timeout(60)
def test_deadlines_hold_in_a_forked_child(raw_server, make_cutout_server):
    import multiprocessing

    server = raw_server(drip_body)
    ok = make_cutout_server()
    with HttpClient(timeout=(2, 1), retries=0) as client:
        client.get(ok.cutout_url((0, 0, 0), (1, 1, 1)), max_bytes=1 << 20)  # the parent's watchdog runs
        parent_end, child_end = multiprocessing.get_context("fork").Pipe()
        child = multiprocessing.get_context("fork").Process(
            target=_get_in_child, args=(client, f"{server.url}/x", child_end)
        )
        child.start()
        try:
            assert parent_end.poll(20), "the forked child's request outlived its deadline"
            assert parent_end.recv() == "RemoteTimeoutError"
        finally:
            child.join(20)
            if child.is_alive():
                child.kill()
