"""HttpTransport against a real HTTP server on loopback, misbehaving on purpose."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from swcmp.cmp.transport import HttpTransport
from swcmp.cmp.urls import check_server_url as check_url
from swcmp.errors import (
    ConfigError,
    ConnectError,
    ContentTypeError,
    HTTPStatusError,
    ResponseTooLargeError,
    TimeoutError_,
)

BEHAVIOUR: dict[str, object] = {}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n)
        BEHAVIOUR["last_ctype"] = self.headers.get("Content-Type")
        BEHAVIOUR["last_path"] = self.path
        mode = BEHAVIOUR.get("mode", "echo")
        if mode == "slow":
            time.sleep(2)
        status = {"404": 404, "redirect": 302, "500cmp": 500}.get(str(mode), 200)
        ctype = "text/html" if mode == "html" else "application/pkixcmp"
        payload = b"x" * 5000 if mode == "big" else b"<html>" if mode == "html" else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if mode == "redirect":
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class QuietServer(ThreadingHTTPServer):
    # Handlers finish before the fixture ends (server_close joins them), and a client
    # that gave up early (the timeout test) is expected: no traceback for it.
    daemon_threads = False
    block_on_close = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    srv = QuietServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/pkix/"
    srv.shutdown()
    srv.server_close()


def test_post_roundtrip_and_content_type(url: str) -> None:
    BEHAVIOUR["mode"] = "echo"
    with HttpTransport(url) as t:
        assert t.post(b"\x30\x00") == b"\x30\x00"
    assert BEHAVIOUR["last_ctype"] == "application/pkixcmp"


@pytest.mark.parametrize(("mode", "exc", "text"), [
    ("404", HTTPStatusError, "HTTP 404"),
    ("redirect", HTTPStatusError, "HTTP 302"),
    ("html", ContentTypeError, "text/html"),
    ("big", ResponseTooLargeError, "limit"),
])
def test_bad_answers(url: str, mode: str, exc: type[Exception], text: str) -> None:
    BEHAVIOUR["mode"] = mode
    with HttpTransport(url, max_response=1000) as t, pytest.raises(exc, match=text) as ei:
        t.post(b"\x30\x00")
    assert url in str(ei.value)


def test_error_status_keeps_cmp_body(url: str) -> None:
    BEHAVIOUR["mode"] = "500cmp"
    with HttpTransport(url) as t, pytest.raises(HTTPStatusError) as ei:
        t.post(b"\x30\x03\x02\x01\x05")
    assert ei.value.status == 500 and ei.value.body == b"\x30\x03\x02\x01\x05"


def test_timeout(url: str) -> None:
    BEHAVIOUR["mode"] = "slow"
    with HttpTransport(url, total_timeout=0.5) as t, pytest.raises(TimeoutError_):
        t.post(b"\x30\x00")


def test_refused() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with HttpTransport(f"http://127.0.0.1:{port}/") as t, pytest.raises(ConnectError) as ei:
        t.post(b"\x30\x00")
    assert "refused" in str(ei.value).lower()


def test_https_with_untrusted_server_is_a_tls_error() -> None:
    import ssl
    import subprocess
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp())
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(d / "k.pem"), "-out",
                    str(d / "c.pem"), "-subj", "/CN=localhost", "-days", "1"],
                   check=True, capture_output=True)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "c.pem", d / "k.pem")
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"https://127.0.0.1:{srv.server_address[1]}/"
        with HttpTransport(url) as t, pytest.raises(ConnectError, match="TLS"):
            t.post(b"\x30\x00")
    finally:
        srv.shutdown()


@pytest.mark.parametrize("bad", ["ftp://ca/", "http://", "ca.example.net/pkix", "http://h:99999/"])
def test_check_url_refuses(bad: str) -> None:
    with pytest.raises(ConfigError):
        check_url(bad)


class DripServer:
    """A raw TCP server that answers every connection by dripping ``answer`` slowly."""

    def __init__(self, answer: bytes, *, every: float = 0.1, tls: object = None) -> None:
        self.answer, self.every, self.tls = answer, every, tls
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            conn.recv(65536)
            for i in range(len(self.answer)):
                if self.stop.is_set():
                    break
                conn.sendall(self.answer[i:i + 1])
                time.sleep(self.every)
            self.stop.wait()  # and then say nothing more, connection open
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


DRIP_BODY = b"\x30" * 500
DRIPS = {
    # the status line and headers come one byte every 0.1 s: no read ever waits long
    "headers": b"HTTP/1.1 200 OK\r\nContent-Type: application/pkixcmp\r\n"
               b"X-Padding: " + b"p" * 200 + b"\r\nContent-Length: 2\r\n\r\n\x30\x00",
    "body": b"HTTP/1.1 200 OK\r\nContent-Type: application/pkixcmp\r\nContent-Length: "
            + str(len(DRIP_BODY)).encode() + b"\r\n\r\n" + DRIP_BODY,
}


@pytest.mark.parametrize("where", sorted(DRIPS))
def test_a_dripping_server_is_cut_off_at_the_total_deadline(where: str) -> None:
    srv = DripServer(DRIPS[where], every=0.05)
    try:
        t0 = time.monotonic()
        with HttpTransport(f"http://127.0.0.1:{srv.port}/", total_timeout=1.0) as t, \
                pytest.raises(TimeoutError_, match="within 1s") as ei:
            t.post(b"\x30\x00")
        took = time.monotonic() - t0
    finally:
        srv.close()
    assert 0.9 <= took < 2.0, took  # the whole answer would take 13 s or more
    assert ei.value.setting == "timeout"  # the application names its --timeout option


def test_a_server_that_accepts_and_never_answers() -> None:
    srv = DripServer(b"", every=0.05)
    try:
        t0 = time.monotonic()
        with HttpTransport(f"http://127.0.0.1:{srv.port}/", total_timeout=0.6) as t, \
                pytest.raises(TimeoutError_):
            t.post(b"\x30\x00")
        assert time.monotonic() - t0 < 1.5
    finally:
        srv.close()


@pytest.mark.parametrize(("header", "expected"), [
    ("120", 120.0), ("0", 0.0), ("99999999999999999999", 7 * 86400.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("soon", None), (None, None),
])
def test_retry_after_is_parsed_and_clamped(header: str | None, expected: float | None) -> None:
    from datetime import UTC, datetime

    from swcmp.cmp.transport import parse_retry_after

    assert parse_retry_after(header, datetime(2030, 1, 1, tzinfo=UTC)) == expected


def test_retry_after_as_a_date() -> None:
    from datetime import UTC, datetime

    from swcmp.cmp.transport import parse_retry_after

    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("Tue, 01 Jan 2030 12:05:00 GMT", now) == 300.0


def test_an_http_proxy_from_the_environment_is_used(url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    BEHAVIOUR["mode"] = "echo"
    proxy = url.rsplit("/pkix/", 1)[0]
    monkeypatch.setenv("http_proxy", proxy)
    monkeypatch.setenv("no_proxy", "")
    # the CA's name is not even resolvable: only the proxy is contacted, with the full URL
    with HttpTransport("http://ca.invalid:8080/pkix/?x=1") as t:
        assert t.post(b"\x30\x00") == b"\x30\x00"
    assert BEHAVIOUR["last_path"] == "http://ca.invalid:8080/pkix/?x=1"
    monkeypatch.setenv("no_proxy", "ca.invalid")
    with HttpTransport("http://ca.invalid:8080/pkix/", total_timeout=5) as t, \
            pytest.raises(ConnectError):
        t.post(b"\x30\x00")


def test_without_proxy_variables_urllib_request_is_not_imported() -> None:
    # urllib.request (with tempfile, shutil and the compression modules) is only needed
    # to read *_proxy variables; a renewal process without any spares importing it.
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom swcmp.cmp.transport import HttpTransport\n"
            "HttpTransport('http://127.0.0.1:1/pkix/')\n"
            "print('urllib.request' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["False"]
    env["no_proxy"] = "example.net"  # any proxy variable: urllib.request reads them all
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["True"]


def test_exchanges_share_one_watchdog_thread_and_an_ip_needs_no_lookup_thread(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    BEHAVIOUR["mode"] = "echo"
    started: list[str] = []
    real_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    with HttpTransport(url) as t:
        for _ in range(5):
            assert t.post(b"\x30\x00") == b"\x30\x00"
    assert [n for n in started if n.startswith("swcmp")] in ([], ["swcmp-watchdog"])


def test_watchdogs_fire_in_deadline_order_and_a_stopped_one_never() -> None:
    from swcmp.cmp.transport import _Watchdog

    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        late, early, stopped = _Watchdog(30), _Watchdog(0.2), _Watchdog(0.1)
        late.watch(a)
        early.watch(c)
        stopped.stop()
        end = time.monotonic() + 10
        while not early.fired and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(0.2)
        assert early.fired and not late.fired and not stopped.fired
        assert c.recv(1) == b""  # shut down: a blocked read wakes with end of file
        late.stop()
        early.stop()
    finally:
        for s in (a, b, c, d):
            s.close()


def test_post_to_another_url_per_message(url: str) -> None:
    """A CA that routes by path: each post may name its URL; errors name that URL, and
    a post without one goes to the URL given last."""
    BEHAVIOUR["mode"] = "echo"
    other = url + "keyupdate"
    with HttpTransport(url) as t:
        assert t.post(b"\x30\x00", other) == b"\x30\x00"
        assert BEHAVIOUR["last_path"] == "/pkix/keyupdate"
        t.post(b"\x30\x00", url)
        assert BEHAVIOUR["last_path"] == "/pkix/"
        BEHAVIOUR["mode"] = "404"
        with pytest.raises(HTTPStatusError) as e:
            t.post(b"\x30\x00", other)
        assert other in str(e.value)
        BEHAVIOUR["mode"] = "echo"
        t.post(b"\x30\x00")
        assert BEHAVIOUR["last_path"] == "/pkix/keyupdate"
        with pytest.raises(ConfigError):
            t.post(b"\x30\x00", "http://user:pw@127.0.0.1/")
