"""The direct GET path of the HTTP client (issue 13): bodies received whole into one buffer, connections
kept alive and reused, and URLs that ``requests`` would rewrite still sent as ``requests`` sends them.

The server is a real keep-alive HTTP/1.1 server on 127.0.0.1 port 0 that records, for every request, the
client's port (one port = one connection) and the request line as it arrived.
"""

from __future__ import annotations

import base64
import http.server
import threading

import pytest

from lazyflow_rbfs.errors import InvalidResponseError
from lazyflow_rbfs.remote import HttpClient

BODIES = {
    "/empty": b"",
    "/small": b"0123456789",
    "/block": bytes(range(256)) * 2048,  # 512 KiB
    "/big": bytes(reversed(range(256))) * (3 * 4096 + 7),  # ~3 MiB, not a multiple of any buffer size
}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        server = self.server
        with server.lock:  # type: ignore[attr-defined]
            server.log.append((self.client_address[1], self.path, dict(self.headers)))  # type: ignore[attr-defined]
        if self.path == "/short":  # announces more than it sends, then closes the connection
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
            return
        body = BODIES.get(self.path.split("?")[0], b"path " + self.path.encode("ascii"))
        self.send_response(200)
        if self.path == "/cookie":
            self.send_header("Set-Cookie", "session=s-42; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.lock = threading.Lock()  # type: ignore[attr-defined]
    httpd.log = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def _url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_bodies_arrive_whole_and_one_connection_serves_every_request(server):
    with HttpClient(max_parallel=1, headers={"X-Api-Key": "k-1"}, public_headers={"Accept": "a/b"}) as client:
        for _ in range(3):
            for path, body in BODIES.items():
                got = client.get(_url(server, path))
                assert type(got) is bytes
                assert got == body
        assert client.stats.bytes_received == 3 * sum(len(b) for b in BODIES.values())
    ports = {port for port, _, _ in server.log}
    assert len(server.log) == 3 * len(BODIES)
    assert len(ports) == 1, f"every request should reuse the first connection, saw {len(ports)}"
    for _, _, headers in server.log:
        assert headers["X-Api-Key"] == "k-1" and headers["Accept"] == "a/b"
        assert headers["Accept-Encoding"] == "gzip, deflate"


def test_a_body_cut_short_is_refused_and_the_connection_not_reused(server):
    with HttpClient(max_parallel=1, retries=1, backoff=0) as client:
        assert client.get(_url(server, "/small")) == BODIES["/small"]
        with pytest.raises(InvalidResponseError, match="truncated|cut off"):
            client.get(_url(server, "/short"))
        assert client.get(_url(server, "/small")) == BODIES["/small"]
    ports = [port for port, _, _ in server.log]
    assert len(ports) == 4  # one, the short one twice (retried), one
    assert ports[0] == ports[1]  # the first connection was reused for the short body...
    assert len(set(ports[1:])) == 3  # ...which ended it: no connection of a short body went back in the pool


@pytest.mark.parametrize(
    ("path", "sent"),
    [
        ("/a b/c?x=1 2", "/a%20b/c?x=1%202"),  # requests quotes what is not quoted yet
        ("/%7Ea/b?q=%2F", "/~a/b?q=%2F"),  # unquotes unreserved characters, keeps the rest quoted
        ("/\u00e9t\u00e9", "/%C3%A9t%C3%A9"),  # non-ASCII paths are sent UTF-8 and quoted
    ],
)
def test_urls_are_sent_as_requests_sends_them(server, path, sent):
    with HttpClient(max_parallel=1) as client:
        assert client.get(_url(server, path)) == b"path " + sent.encode("ascii")
    assert [p for _, p, _ in server.log] == [sent]


def test_netrc_credentials_are_still_sent(server, tmp_path, monkeypatch):
    # requests adds the ~/.netrc credentials of a host; the direct path leaves such hosts to requests.
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password pw-123\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    with HttpClient(max_parallel=1) as client:
        assert client.get(_url(server, "/small")) == BODIES["/small"]
    ((_, _, headers),) = server.log
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"someone:pw-123").decode("ascii")


def test_a_cookie_a_server_sets_is_sent_back_to_it(server):
    with HttpClient(max_parallel=1) as client:
        client.get(_url(server, "/small"))
        client.get(_url(server, "/cookie"))
        client.get(_url(server, "/small"))
    cookies = [headers.get("Cookie") for _, _, headers in server.log]
    assert cookies == [None, None, "session=s-42"]
