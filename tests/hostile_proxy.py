"""A hostile CMP proxy: it sits on the path between swcmp and a real CA and attacks.

It is the man in the middle of an http:// CMP URL (and, given the CA's key, the
malicious CA itself). Per request type it can pass the exchange through, or:

* **drip** the CA's answer one byte at a time (status line, headers and body), or
  **hang** with the connection open and never answer;
* **mutate** the CA's answer (any bytes -> bytes function, e.g. an out-of-range
  messageTime) before passing it on;
* **forge** an answer of its own for the request: an unprotected error, one
  protected with a key it holds (another gateway's certificate of the same CA, or
  the CA's own key when it plays the malicious CA), echoing the request's
  transactionID and nonce so that only the protection or the content gives it away;
* **replay** an answer the CA gave earlier to the same kind of request;
* answer with an HTTP status (e.g. 503 with Retry-After).

Every request it sees is recorded (body type and transactionID), with every
answer the CA gave, so that tests can assert what swcmp sent.

The proxy is a plain TCP server (one request per connection, as swcmp and the
test CA do), so that it controls every byte and every pause on the wire.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import dertree as d
from swcmp.cmp import codec
from swcmp.cmp.messages import PKIMessageInfo, StatusInfo
from swcmp.cmp.protection import Protection

CONTENT_TYPE = "application/pkixcmp"


@dataclass
class Reply:
    """What the proxy sends back for one request."""

    body: bytes = b""
    status: int = 200
    reason: str = "OK"
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = CONTENT_TYPE
    #: seconds between bytes (None: all at once)
    drip: float | None = None
    #: keep the connection open and say nothing (after ``body``, if any)
    hang: bool = False

    def wire(self) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {self.reason}",
                 f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}", "Connection: close",
                 *(f"{k}: {v}" for k, v in self.headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass
class Exchange:
    """One request as the proxy sees it; ``upstream()`` asks the real CA (once)."""

    proxy: HostileProxy
    data: bytes
    msg: PKIMessageInfo | None
    _answer: bytes | None = None

    @property
    def kind(self) -> str:
        return self.msg.body_type if self.msg is not None else "?"

    def upstream(self) -> bytes:
        if self._answer is None:
            self._answer = self.proxy.forward(self.data)
            self.proxy.answers.setdefault(self.kind, []).append(self._answer)
        return self._answer


Action = Callable[[Exchange], Reply]


class HostileProxy:
    """Listens on loopback and attacks the exchanges it is told to (see the module doc).

    ``on(kind, action, times)`` arms ``action`` for the next ``times`` requests of
    body type ``kind`` ("*": any); requests with no armed action pass through.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream_url = upstream
        self._up = urlsplit(upstream)
        self._rules: list[list[object]] = []
        self._lock = threading.Lock()
        #: (body type, transactionID) of every request seen, in order
        self.seen: list[tuple[str, bytes | None]] = []
        #: the CA's answers by the body type of the request they answered
        self.answers: dict[str, list[bytes]] = {}
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, name="hostile-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}{self._up.path or '/'}"

    def on(self, kind: str, action: Action, *, times: int | None = 1) -> None:
        """Attack the next ``times`` requests of ``kind`` (None: all of them)."""
        with self._lock:
            self._rules.append([kind, action, times])

    def clear(self) -> None:
        """Pass everything through from now on."""
        with self._lock:
            self._rules.clear()

    def armed(self) -> bool:
        """Whether an attack is still waiting for its request."""
        with self._lock:
            return any(times is None or int(times) > 0  # type: ignore[call-overload]
                       for _, _, times in self._rules)

    def kinds(self) -> list[str]:
        return [k for k, _ in self.seen]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for t in self._threads:
            t.join(5)
        self._sock.close()

    def __enter__(self) -> HostileProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def forward(self, data: bytes) -> bytes:
        conn = http.client.HTTPConnection(self._up.hostname or "", self._up.port, timeout=30)
        try:
            conn.request("POST", self._up.path or "/", body=data,
                         headers={"Content-Type": CONTENT_TYPE})
            return conn.getresponse().read()
        finally:
            conn.close()

    def _action_for(self, kind: str) -> Action | None:
        with self._lock:
            for rule in self._rules:
                rkind, action, times = rule
                if rkind in (kind, "*") and (times is None or int(times) > 0):  # type: ignore[call-overload]
                    if times is not None:
                        rule[2] = int(times) - 1  # type: ignore[call-overload]
                    return action  # type: ignore[return-value]
        return None

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            data = self._read_request(conn)
            try:
                msg: PKIMessageInfo | None = codec.decode_message(data)
            except Exception:
                msg = None
            ex = Exchange(self, data, msg)
            self.seen.append((ex.kind, msg.header.transaction_id if msg else None))
            action = self._action_for(ex.kind)
            reply = action(ex) if action is not None else Reply(ex.upstream())
            self._send(conn, reply)
        except OSError:
            pass  # the client gave up (as it should, when dripped at)
        finally:
            conn.close()

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                raise OSError("client closed")
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                raise OSError("client closed")
            body += chunk
        return body

    def _send(self, conn: socket.socket, reply: Reply) -> None:
        wire = reply.wire() if reply.status or reply.body else b""
        if reply.drip is None:
            conn.sendall(wire)
        else:
            for i in range(len(wire)):
                if self._stop.is_set():
                    return
                conn.sendall(wire[i:i + 1])
                time.sleep(reply.drip)
        if reply.hang:
            self._stop.wait()


# ---------------------------------------------------------------------- actions


def drip(every: float = 0.2) -> Action:
    """The CA's real answer, one byte every ``every`` seconds (headers and body)."""
    return lambda ex: Reply(ex.upstream(), drip=every)


def hang() -> Action:
    """Accept, read the request, never answer (the CA is not even asked)."""
    return lambda ex: Reply(b"", status=0, hang=True)


def mutate(change: Callable[[bytes], bytes]) -> Action:
    """The CA's real answer, changed by ``change`` on the way."""
    return lambda ex: Reply(change(ex.upstream()))


def http_status(status: int, reason: str, *, headers: dict[str, str] | None = None) -> Action:
    """An HTTP error instead of a CMP answer (the CA is not asked)."""
    return lambda ex: Reply(f"{reason}\n".encode(), status=status, reason=reason,
                            headers=headers or {}, content_type="text/plain")


def replay(kind: str, index: int = 0) -> Action:
    """The answer the CA gave to an earlier request of ``kind`` (the CA is not asked)."""
    return lambda ex: Reply(ex.proxy.answers[kind][index])


def forge(body: Callable[[Exchange], bytes], *, sender_der: bytes,
          protection: Protection | None = None,
          nonce: Callable[[Exchange], bytes | None] | None = None) -> Action:
    """An answer made up by the proxy: ``body`` (DER), echoing the request's
    transactionID and (unless ``nonce`` says otherwise) its senderNonce, protected
    with ``protection`` (None: unprotected)."""
    def act(ex: Exchange) -> Reply:
        assert ex.msg is not None
        return Reply(answer(ex.msg, body(ex), sender_der=sender_der, protection=protection,
                            recip_nonce=nonce(ex) if nonce else ex.msg.header.sender_nonce))
    return act


def resign(body: Callable[[bytes], bytes], protection: Protection) -> Action:
    """The malicious CA: its genuine answer (so its own state moves on as usual) with
    the body replaced by ``body(old body DER)`` and signed again with its key; header
    and extraCerts are kept."""
    def act(ex: Exchange) -> Reply:
        root = d.parse(ex.upstream())
        assert root.children is not None
        header = root.children[0].encode()
        new_body = body(root.children[1].encode())
        sig = protection.start().protect(codec.protected_part(header, new_body))
        extra = codec.decode_message(ex.upstream()).extra_certs
        return Reply(codec.assemble(header, new_body, sig, extra))
    return act


def answer(req: PKIMessageInfo, body: bytes, *, sender_der: bytes,
           protection: Protection | None, recip_nonce: bytes | None) -> bytes:
    """A PKIMessage answering ``req`` with ``body``, as a CA would build it."""
    import os

    prot = protection.start() if protection is not None else None
    header = codec.encode_header(codec.HeaderFields(
        sender_der=sender_der, recipient_der=req.header.sender_der or codec.NULL_DN_DER,
        transaction_id=req.header.transaction_id or os.urandom(16),
        sender_nonce=os.urandom(16), recip_nonce=recip_nonce,
        message_time=datetime.now(UTC).replace(microsecond=0),
        protection_alg=prot.alg if prot else None, sender_kid=prot.sender_kid if prot else None,
        pvno=2))
    mac = prot.protect(codec.protected_part(header, body)) if prot else None
    return codec.assemble(header, body, mac, prot.extra_certs if prot else ())


def genuine_body(ex: Exchange) -> bytes:
    """The body of the CA's real answer to ``ex`` (to re-sign or re-wrap it)."""
    root = d.parse(ex.upstream())
    assert root.children is not None
    return root.children[1].encode()


def error_body(text: str, *fail_info: int, status: int = 2) -> bytes:
    return codec.error_body(StatusInfo(status, frozenset(fail_info), (text,)))


def with_message_time(der_message: bytes, value: bytes) -> bytes:
    """``der_message`` with its header's messageTime content replaced by ``value``."""
    root = d.parse(der_message)
    paths = [p for p in d.find(root, lambda n: n.tag_byte == d.GENTIME) if p[:1] == (0,)]
    if not paths:
        raise ValueError("no messageTime in the header")
    return d.replaced(root, paths[0], d.Node(b"\x18", value)).encode()
