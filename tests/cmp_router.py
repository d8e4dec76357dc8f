"""A CMP front end for tests that routes by path as a strict RFC 9483 CA would.

It sits before an independent CMP server (OpenSSL's mock) and passes on only what a CA
routing by RFC 9483 3.3 operation labels accepts: the first message of a transaction at
``<prefix>/<label>`` with the label of its body (``initialization`` for an ir,
``getcacerts`` for a genm asking caCerts, ...), and every later message of the
transaction (certConf, pollReq) at the path where the transaction began. Anything else
gets HTTP 404. It decodes messages with pyasn1-alt-modules (RFC 9480's module), not with
swcmp, and records every (path, body type) it saw.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pyasn1.codec.der import decoder
from pyasn1_alt_modules import rfc9480

#: RFC 9483 3.3: the operation label of each body that begins a transaction.
LABELS = {"ir": "initialization", "cr": "certification", "kur": "keyupdate",
          "p10cr": "pkcs10", "rr": "revocation"}
GENM_LABELS = {
    rfc9480.id_it_caCerts: "getcacerts", rfc9480.id_it_rootCaCert: "getrootupdate",
    rfc9480.id_it_certReqTemplate: "getcertreqtemplate",
    rfc9480.id_it_crlStatusList: "getcrls", rfc9480.id_it_currentCRL: "getcrls",
}


@dataclass
class Router:
    """What the router saw: ``seen`` (path, body, HTTP status) in order."""

    url: str = ""
    prefix: str = ""
    seen: list[tuple[str, str, int]] = field(default_factory=list)
    #: transactionID (hex) -> the path where the transaction began
    where: dict[str, str] = field(default_factory=dict)

    def paths_of(self, body: str) -> list[str]:
        return [p for p, b, status in self.seen if b == body and status != 404]

    def refused(self) -> list[tuple[str, str]]:
        return [(p, b) for p, b, status in self.seen if status == 404]


def _label(msg: object) -> str | None:
    body = msg["body"]  # type: ignore[index]
    name = body.getName()
    if name == "genm":
        items = body[name]
        return GENM_LABELS.get(items[0]["infoType"]) if len(items) else None
    return LABELS.get(name)


@contextmanager
def label_router(upstream: str, prefix: str = "/.well-known/cmp/p/gw",
                 unknown: frozenset[str] = frozenset()) -> Iterator[Router]:
    """Serve on 127.0.0.1 in a thread; ``router.url`` is its base (scheme and address).
    Operation labels in ``unknown`` are served nowhere (HTTP 404), as by a CA that does
    not offer them."""
    router = Router(prefix=prefix)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                msg, _ = decoder.decode(data, asn1Spec=rfc9480.PKIMessage())
                body = msg["body"].getName()
                tid = bytes(msg["header"]["transactionID"]).hex()
            except Exception:  # not CMP: refused like a wrong path
                self._answer(400, b"", "text/plain")
                return
            with lock:
                if body in ("certConf", "pollReq", "error"):
                    ok = router.where.get(tid) == self.path
                else:
                    ok = (self.path == f"{prefix}/{_label(msg)}"
                          and _label(msg) not in unknown)
                    if ok:
                        router.where[tid] = self.path
                if not ok:
                    router.seen.append((self.path, body, 404))
            if not ok:
                self._answer(404, b"not here", "text/plain")
                return
            req = urllib.request.Request(upstream, data=data, method="POST",
                                         headers={"Content-Type": "application/pkixcmp"})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    status, ctype, answer = resp.status, resp.headers["Content-Type"], resp.read()
            except urllib.error.HTTPError as e:
                status, ctype, answer = e.code, e.headers["Content-Type"], e.read()
            with lock:
                router.seen.append((self.path, body, status))
            self._answer(status, answer, ctype or "application/pkixcmp")

        def _answer(self, status: int, data: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    router.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield router
    finally:
        server.shutdown()
        server.server_close()
