"""HttpTransport against a real HTTP server on loopback, misbehaving on purpose."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from swcmp.errors import (
    ConfigError,
    ConnectError,
    ContentTypeError,
    HTTPStatusError,
    ResponseTooLargeError,
    TimeoutError_,
)
from swcmp.transport import HttpTransport, check_url

BEHAVIOUR: dict[str, object] = {}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n)
        BEHAVIOUR["last_ctype"] = self.headers.get("Content-Type")
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
