"""CMP over HTTP (RFC 6712) for the test CA, and :class:`TestCA` which runs it.

The HTTP layer is strict about what reaches the CMP engine: only POST to
``/`` or ``/pkix/`` (or, with ``label_paths``, to the path of the message's RFC 9483
operation label), Content-Type ``application/pkixcmp``, a Content-Length
within the limit. Everything the engine answers goes out with HTTP 200 (RFC
6712 3.4: CMP errors are CMP messages). Each connection carries one request:
OpenSSL's client and server close after every message too, and it keeps
shutdown simple.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography import x509

from swcmp.cmp import certs, codec
from swcmp.cmp.messages import InfoValue
from swcmp.cmp.urls import operation_of
from swcmp.fsutil import ensure_dir, exclusive_lock
from swcmp.testca.authority import CA_CERT_FILE, Authority
from swcmp.testca.config import CAConfig
from swcmp.testca.engine import CMPEngine
from swcmp.testca.state import CertRecord, StateStore

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/pkixcmp"
PATHS = ("/", "/pkix/")
#: Seconds a client may take to send its request before the connection is dropped
#: (also the longest a stalled client can delay stop()).
SOCKET_TIMEOUT = 10.0


class _Server(ThreadingHTTPServer):
    # server_close() waits for requests in progress, so that none changes the state after
    # stop() has released the directory to the next CA.
    daemon_threads = False
    block_on_close = True
    # Many clients at once (the benchmark) must not be refused by a short listen queue.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], engine: CMPEngine, max_size: int,
                 routes: _LabelRoutes | None = None) -> None:
        self.engine = engine
        self.max_size = max_size
        self.routes = routes
        super().__init__(address, _Handler)


class _LabelRoutes:
    """Where each transaction began, for routing by RFC 9483 operation labels."""

    #: Transactions remembered (the oldest are forgotten first).
    MAX = 10_000

    def __init__(self) -> None:
        self._began: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()

    def refusal(self, path: str, data: bytes) -> str | None:
        """Why a message may not be POSTed at ``path``; None when it may (also for
        bytes that do not decode: the engine answers those)."""
        try:
            msg = codec.decode_message(data)
        except Exception:  # the engine refuses it with a CMP error
            return None
        tid = msg.header.transaction_id or b""
        body = msg.body_type
        with self._lock:
            if body in ("certConf", "pollReq"):
                began = self._began.get(tid)
                if began != path:
                    return (f"a {body} goes where its transaction began "
                            f"({began or 'unknown transaction'}), not to {path}")
                return None
            first = msg.body[0] if isinstance(msg.body, tuple) and msg.body else None
            oid = first.oid if isinstance(first, InfoValue) else None
            label = operation_of(body, oid)
            if label is None or path.rstrip("/").rsplit("/", 1)[-1] != label:
                return f"a {body} is POSTed to .../{label or '(no label)'}, not to {path}"
            self._began[tid] = path
            self._began.move_to_end(tid)
            while len(self._began) > self.MAX:
                self._began.popitem(last=False)
        return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT
    server_version = "swcmp-testca"

    def do_POST(self) -> None:
        if self.path not in PATHS and self.server.routes is None:
            self._plain(404, f"no CMP endpoint at {self.path}: use / or /pkix/")
            return
        ctype = self.headers.get_content_type()
        if ctype != CONTENT_TYPE:
            self._plain(415, f"Content-Type must be {CONTENT_TYPE}, not {ctype}")
            return
        length_text = self.headers.get("Content-Length", "")
        if self.headers.get("Transfer-Encoding") or not length_text.isdigit():
            self._plain(411, "a Content-Length is required")
            return
        length = int(length_text)
        if length > self.server.max_size:
            self._plain(413, f"request of {length} bytes exceeds the "
                        f"{self.server.max_size}-byte limit")
            return
        data = self.rfile.read(length)
        if len(data) != length:
            self.close_connection = True
            return
        refusal = self.server.routes.refusal(self.path, data) if self.server.routes else None
        if refusal is not None:
            self._plain(404, refusal)
            return
        try:
            answer = self.server.engine.handle(data)
        except Exception:
            # The engine answers every CMP problem itself; this is a bug, not a CMP error.
            log.exception("internal error while answering a CMP request")
            self._plain(500, "internal error in the test CA")
            return
        self._send(200, CONTENT_TYPE, answer)

    def do_GET(self) -> None:
        self._plain(405, "CMP requests are POSTed", allow="POST")

    do_PUT = do_DELETE = do_HEAD = do_GET

    def _plain(self, code: int, text: str, *, allow: str | None = None) -> None:
        log.info("HTTP %s %s -> %d: %s", self.command, self.path, code, text)
        extra = {"Allow": allow} if allow else {}
        self._send(code, "text/plain; charset=utf-8", (text + "\n").encode(), **extra)

    def _send(self, code: int, ctype: str, body: bytes, **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        # The engine logs one line per CMP request; the HTTP access line is detail.
        log.debug("%s " + format, self.address_string(), *args)


class TestCA:
    """The embedded CMP test CA, served over HTTP from a thread of this process.

    ``directory`` holds ``ca.key``/``ca.crt`` (made on the first start),
    ``state.json``, ``issued/`` and a lock: one CA per directory at a time.

    Example::

        with TestCA(tmp / "ca", config=CAConfig(mac_ref=b"1234", mac_secret=b"pw")) as ca:
            use(ca.url, ca.ca_cert)

    Args:
        directory: where the CA keeps everything.
        config: policy and test knobs.
        host: address to listen on (loopback by default).
        port: TCP port; 0 picks a free one (see :attr:`port`).
        clock: the current UTC time (tests pass their own).
    """

    __test__ = False  # a CA for tests, not a pytest test class

    def __init__(self, directory: str | PathLike[str], *, config: CAConfig | None = None,
                 host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.directory = Path(directory)
        self.config = config or CAConfig()
        self.host = host
        self._port = port
        self.clock = clock
        self._stack: ExitStack | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._engine: CMPEngine | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Take the directory's lock, load or create the CA, and start serving.

        Raises:
            LockHeldError: another CA serves this directory.
            ConfigError, StorageError: the CA files or state cannot be used.
            OSError: the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("the test CA is already running")
        with ExitStack() as stack:
            ensure_dir(self.directory, mode=0o700)
            stack.enter_context(exclusive_lock(self.directory, "testca", blocking=False,
                                               what=f"test CA directory {self.directory}"))
            authority = Authority.load_or_create(self.directory, key_type=self.config.key_type,
                                                 now=self.clock())
            store = StateStore.open(self.directory)
            engine = CMPEngine(authority, store, self.config, clock=self.clock)
            engine.follow(self.directory)
            server = _Server((self.host, self._port), engine, self.config.max_request_size,
                             _LabelRoutes() if self.config.label_paths else None)
            stack.callback(server.server_close)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                      name=f"testca-{server.server_address[1]}", daemon=True)
            thread.start()
            self._stack = stack.pop_all()
        self._server, self._thread, self._engine = server, thread, engine
        log.info("test CA %s listening on %s (directory %s)", certs.describe(authority.cert),
                 self.url, self.directory)
        return self

    def stop(self) -> None:
        """Stop serving and release the directory (idempotent)."""
        server, thread, stack = self._server, self._thread, self._stack
        self._server = self._thread = self._engine = None
        self._stack = None
        if server is not None:
            server.shutdown()
        if thread is not None:
            thread.join(timeout=10)
        if stack is not None:
            stack.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ------------------------------------------------------------------ views

    @property
    def engine(self) -> CMPEngine:
        if self._engine is None:
            raise RuntimeError("the test CA is not running")
        return self._engine

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the test CA is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Where clients POST, e.g. ``http://127.0.0.1:PORT/pkix/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/pkix/"

    @property
    def ca_cert(self) -> x509.Certificate:
        return self.engine.authority.cert

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / CA_CERT_FILE

    def certificate(self, serial: int) -> CertRecord | None:
        """What the CA knows about an issued serial (a copy), or None."""
        store = self.engine.store
        with store.lock:
            rec = store.issued.get(serial)
            return None if rec is None else CertRecord(**vars(rec))

    def request_counts(self, sender: str) -> dict[str, int]:
        """Requests ``sender`` (RFC 4514 subject or sender name) sent, by body type."""
        return self.engine.request_counts(sender)

    def open_transactions(self) -> int:
        store = self.engine.store
        with store.lock:
            return len(store.transactions)
