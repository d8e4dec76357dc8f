"""CMP over HTTP (RFC 6712): the only module that talks HTTP. Bytes in, bytes out.

Every exchange (one POST and its answer) has one total deadline, from the name
look-up to the last byte of the answer. Socket timeouts alone cannot give that: a
peer that drips one byte just before each read times out keeps a connection alive
for ever. So a watchdog timer shuts the socket down when the deadline passes,
which wakes whatever read is blocked on it, whether it waits for the status line,
a header, the TLS handshake or the body.

The standard library's :mod:`http.client` is used on a socket this module opens
itself, so that the watchdog always knows the socket to shut down.
"""

from __future__ import annotations

import contextlib
import email.utils
import heapq
import http.client
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

from swcmp.cmp import trace
from swcmp.cmp.errors import (
    ConfigError,
    ConnectError,
    ContentTypeError,
    HTTPStatusError,
    ResponseTooLargeError,
    TimeoutError_,
    TransportError,
)
from swcmp.cmp.text import safe
from swcmp.cmp.urls import check_server_url

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/pkixcmp"
#: Largest answer read (a genp may carry a CRL of 1 MiB; see codec.MAX_MESSAGE_SIZE).
MAX_RESPONSE_SIZE = 2 * 1024 * 1024
#: Default total time of one exchange, connect to last byte (session setting ``timeout``).
DEFAULT_TIMEOUT = 60.0
#: Longest Retry-After honoured (seconds); a later one is taken as this.
MAX_RETRY_AFTER = 7 * 86400.0


class Transport(Protocol):
    """Sends one CMP message and returns the answer's bytes."""

    def post(self, data: bytes, url: str | None = None) -> bytes:
        """POST ``data`` to ``url`` (None: the transport's own URL)."""
        ...

    def end_transaction(self) -> None:
        """Called after each CMP transaction (successful or not)."""
        ...

    def close(self) -> None: ...


class _Watchdog:
    """Shuts down the sockets it watches once ``seconds`` have passed.

    ``shutdown(2)`` rather than ``close(2)``: it wakes a read blocked in another
    thread at once, and the descriptor stays ours until the owner closes it, so the
    timer can never hit a descriptor that was meanwhile reused for something else.
    All watchdogs of the process share one timer thread (:class:`_Timers`): starting
    a thread for each exchange cost more CPU than the rest of the exchange's overhead.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        _TIMERS.add(time.monotonic() + max(seconds, 0.0), self)

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.fired:
                _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            for sock in self._sockets:
                _shutdown(sock)

    def stop(self) -> None:
        """Disarm; after this returns the timer touches no socket."""
        with self._lock:
            self._done = True
        _TIMERS.forget(self)


class _Timers:
    """One daemon thread that fires each armed watchdog at its time (a heap of them),
    started at the first exchange and again in a forked child."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Watchdog]] = []
        self._armed: set[_Watchdog] = set()
        self._count = 0
        self._thread: threading.Thread | None = None

    def add(self, when: float, dog: _Watchdog) -> None:
        with self._cond:
            self._count += 1
            heapq.heappush(self._heap, (when, self._count, dog))
            self._armed.add(dog)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="swcmp-watchdog",
                                                daemon=True)
                self._thread.start()
            elif self._heap[0][2] is dog:
                self._cond.notify()

    def forget(self, dog: _Watchdog) -> None:
        with self._cond:
            self._armed.discard(dog)
            if not self._armed:
                self._heap.clear()  # nothing armed: drop the stopped ones at once

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                when, _, dog = self._heap[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                due = dog in self._armed
                self._armed.discard(dog)
            if due:
                dog._fire()

    def reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap, self._armed, self._thread = [], set(), None


_TIMERS = _Timers()
os.register_at_fork(after_in_child=_TIMERS.reset)


def _shutdown(sock: socket.socket) -> None:
    # the plain socket's shutdown, also for an SSLSocket: ssl's own would drop the TLS
    # object under the feet of the thread that is reading
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Deadline:
    """Seconds left of one exchange; TimeoutError_ once there are none."""

    def __init__(self, seconds: float, url: str) -> None:
        self.seconds = seconds
        self.url = url
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        rest = self.end - time.monotonic()
        if rest <= 0:
            raise self.error()
        return rest

    def error(self) -> TimeoutError_:
        return TimeoutError_(
            f"{self.url} did not complete the exchange within {self.seconds:g}s",
            url=self.url,
            hint="the CA is slow, hanging or sending its answer slowly", setting="timeout",
        )


_AddrInfo = list[tuple[socket.AddressFamily, socket.SocketKind, int, str,
                       tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]]]


def _resolve(host: str, port: int, deadline: _Deadline) -> _AddrInfo:
    """getaddrinfo within the deadline (it has no timeout of its own)."""
    try:  # an IP address needs no look-up, nor a thread to bound one
        numeric: _AddrInfo = []
        numeric.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                          flags=socket.AI_NUMERICHOST))
        return numeric
    except OSError:
        pass
    found: _AddrInfo = []
    failed: list[OSError] = []

    def work() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as e:
            failed.append(e)

    t = threading.Thread(target=work, name="swcmp-resolve", daemon=True)
    t.start()
    t.join(deadline.left())
    if t.is_alive():
        raise deadline.error()
    if failed:
        raise failed[0]
    return found


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from ``now`` that a Retry-After header asks for (RFC 9110 10.2.3).

    Delta-seconds or an HTTP-date; None when absent or unreadable. Clamped to
    0..MAX_RETRY_AFTER: the header comes from the network.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(int(text[:12]))
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        try:
            seconds = (when - now).total_seconds()
        except OverflowError:
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class HttpTransport:
    """HTTP POST transport: one connection per message, one deadline per exchange.

    Args:
        url: the CMP server URL (http:// or https://); :meth:`post` may name another
            one per message (a CA that routes operations by path).
        ca_bundle: verifies an https server (None: the system store).
        client_cert, client_key: a TLS client certificate and its key (files), for
            CAs behind mutual TLS.
        total_timeout: seconds for one exchange, name look-up to last byte.
        connect_timeout: at most this much of it for the TCP connect.
        max_response: largest answer accepted.
        proxy: an http:// proxy URL; None takes ``http_proxy``/``https_proxy``/
            ``no_proxy`` from the environment, ``""`` uses none.

    Redirects are refused: a CA endpoint that moves must be reconfigured, not
    followed. Connections are not kept alive between messages (CMP servers such as
    OpenSSL's close them after each answer anyway).
    """

    def __init__(
        self,
        url: str,
        *,
        ca_bundle: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        connect_timeout: float = 10.0,
        total_timeout: float = DEFAULT_TIMEOUT,
        max_response: int = MAX_RESPONSE_SIZE,
        proxy: str | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.total_timeout = total_timeout
        self.max_response = max_response
        self.client_cert = client_cert
        self._tls_files = (ca_bundle, client_cert, client_key)
        self._tls_context: ssl.SSLContext | None = None
        self._proxy_setting = proxy
        self._targets: dict[str, _Target] = {}
        #: The URL of the current (or next) exchange, and its parts, TLS context and proxy.
        self.url = ""
        self._parts = urlsplit("")
        self._tls: ssl.SSLContext | None = None
        self._proxy: SplitResult | None = None
        self._use(url)
        #: The current time, for Retry-After given as a date.
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays open between messages; kept for the Transport protocol."""

    def end_transaction(self) -> None:
        """Nothing is carried from one transaction to the next."""

    def _use(self, url: str) -> None:
        """Make ``url`` the one the next exchange talks to (checked and set up once)."""
        target = self._targets.get(url)
        if target is None:
            checked = check_server_url(url)
            parts = urlsplit(checked)
            tls = None
            if parts.scheme.lower() == "https":
                if self._tls_context is None:
                    self._tls_context = _tls_context(*self._tls_files)
                tls = self._tls_context
            target = _Target(checked, parts, tls, self._proxy_for(self._proxy_setting, parts))
            self._targets[url] = target
        self.url, self._parts, self._tls, self._proxy = (
            target.url, target.parts, target.tls, target.proxy)

    def _proxy_for(self, proxy: str | None, parts: SplitResult) -> SplitResult | None:
        host = parts.hostname or ""
        if proxy is None:
            # urllib.request reads the *_proxy variables; without any there is no proxy,
            # and a process spares importing it (urllib.request pulls in tempfile, shutil
            # and the compression modules).
            if not any(k.lower().endswith("_proxy") for k in os.environ):
                return None
            import urllib.request

            found = urllib.request.getproxies_environment().get(parts.scheme)
            if not found or urllib.request.proxy_bypass(host):
                return None
            proxy = found
        if not proxy:
            return None
        parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"proxy {proxy!r} is not an http:// proxy URL")
        return parts

    # ------------------------------------------------------------------ one exchange

    def post(self, data: bytes, url: str | None = None) -> bytes:
        """POST ``data`` (to ``url``, or the URL given last), return the answer;
        TransportError subclasses for every failure."""
        if url is not None:
            self._use(url)
        trace.record("request", data)
        deadline = _Deadline(self.total_timeout, self.url)
        watchdog = _Watchdog(self.total_timeout)
        conn: http.client.HTTPConnection | None = None
        try:
            conn = self._connect(deadline, watchdog)
            if self._proxy is not None and self._tls is None:
                target = self.url  # absolute form, for the proxy
            else:
                target = (self._parts.path or "/") + (
                    "?" + self._parts.query if self._parts.query else "")
            conn.request("POST", target, body=data, headers={
                "Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE, "Connection": "close"})
            if conn.sock is not None:
                conn.sock.settimeout(deadline.left())
            resp = conn.getresponse()
            body = self._read(resp)
            if watchdog.fired:  # a cut-off answer can look complete to http.client
                raise deadline.error()
        except TransportError:
            if watchdog.fired:
                raise deadline.error() from None
            raise
        except (OSError, http.client.HTTPException, ValueError) as e:
            if watchdog.fired or isinstance(e, TimeoutError):
                raise deadline.error() from e
            raise self._network_error(e) from e
        finally:
            watchdog.stop()
            if conn is not None:
                conn.close()
        trace.record("answer", body)
        self._check_answer(resp, body)
        log.debug("received %d bytes from %s", len(body), self.url)
        return body

    def _connect(self, deadline: _Deadline, watchdog: _Watchdog) -> http.client.HTTPConnection:
        via = self._proxy or self._parts
        host = via.hostname or ""
        port = via.port or (443 if via is self._parts and self._tls is not None else 80)
        sock = self._open_socket(host, port, deadline, watchdog)
        try:
            if self._proxy is not None and self._tls is not None:
                self._tunnel(sock, deadline)
            if self._tls is not None:
                tls = self._tls.wrap_socket(sock, server_hostname=self._parts.hostname,
                                            do_handshake_on_connect=False)
                sock = tls
                watchdog.watch(tls)  # the SSL socket took over the descriptor
                tls.settimeout(deadline.left())
                tls.do_handshake()
        except BaseException:
            sock.close()
            raise
        conn = http.client.HTTPConnection(self._parts.hostname or host,
                                          self._parts.port, timeout=deadline.left())
        conn.sock = sock
        return conn

    def _open_socket(self, host: str, port: int, deadline: _Deadline,
                     watchdog: _Watchdog) -> socket.socket:
        error: OSError | None = None
        for family, kind, proto, _, address in _resolve(host, port, deadline):
            sock = socket.socket(family, kind, proto)
            watchdog.watch(sock)
            try:
                sock.settimeout(min(self.connect_timeout, deadline.left()))
                sock.connect(address)
            except TimeoutError as e:
                sock.close()
                raise TimeoutError_(
                    f"connecting to {self.url} timed out", url=self.url,
                    hint="is the CA reachable from this host?") from e
            except OSError as e:
                sock.close()
                error = e
                continue
            sock.settimeout(deadline.left())
            return sock
        raise error or OSError(f"no address for {host}")

    def _tunnel(self, sock: socket.socket, deadline: _Deadline) -> None:
        """CONNECT through the http proxy to the CA (for an https server URL)."""
        target = f"{self._parts.hostname}:{self._parts.port or 443}"
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode("ascii"))
        resp = http.client.HTTPResponse(sock, method="CONNECT")
        resp.begin()
        if resp.status != 200:
            raise ConnectError(
                f"the proxy refused to connect to {target}: HTTP {resp.status} "
                f"{safe(resp.reason or '')}", url=self.url,
                hint="check the https_proxy and no_proxy environment variables")

    def _read(self, resp: http.client.HTTPResponse) -> bytes:
        declared = resp.getheader("Content-Length")
        if declared and declared.strip().isdigit() and int(declared) > self.max_response:
            raise ResponseTooLargeError(
                f"{self.url} announced {safe(declared.strip()[:20])} bytes, over the "
                f"{self.max_response}-byte limit", url=self.url)
        chunks: list[bytes] = []
        size = 0
        while chunk := resp.read1(65536):
            size += len(chunk)
            if size > self.max_response:
                raise ResponseTooLargeError(
                    f"{self.url} sent more than {self.max_response} bytes", url=self.url)
            chunks.append(chunk)
        return b"".join(chunks)

    def _check_answer(self, resp: http.client.HTTPResponse, body: bytes) -> None:
        url = self.url
        ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if resp.status != 200:
            reason = safe((resp.reason or "")[:200])
            status = resp.status
            err = HTTPStatusError(
                f"{url} answered HTTP {status} {reason}".rstrip(),
                url=url, status=status,
                setting="server_url",
                hint=("the CA does not serve CMP at this path: check the URL"
                      if status in (404, 405) else
                      "redirects are not followed: give the final address"
                      if 300 <= status < 400 else
                      "the CA is busy or down for maintenance; retry later"
                      if status == 503 else ""),
            )
            err.body = body if ctype == CONTENT_TYPE else None
            if status in (429, 503):
                err.retry_after = parse_retry_after(resp.getheader("Retry-After"), self.clock())
            raise err
        if ctype != CONTENT_TYPE:
            raise ContentTypeError(
                f"{url} answered with Content-Type {safe(ctype[:100]) or '(none)'}, "
                f"not {CONTENT_TYPE}",
                url=url, hint="the URL probably points at a web page, not a CMP endpoint",
                setting="server_url",
            )

    def _network_error(self, e: BaseException) -> TransportError:
        url = self.url
        if isinstance(e, ssl.SSLError | ssl.CertificateError):
            return _tls_error(e, url, client_cert=self.client_cert is not None)
        if isinstance(e, ConnectionRefusedError | socket.gaierror) or (
                isinstance(e, OSError) and not isinstance(e, ConnectionResetError)
                and e.errno is not None):
            return ConnectError(f"cannot connect to {url}: {safe(_text(e))}", url=url,
                                hint="check the URL, that the CA is up, and firewalls",
                                setting="server_url")
        return TransportError(f"HTTP exchange with {url} failed: {safe(_text(e))}", url=url,
                              hint="the CA closed the connection or sent a malformed "
                              "HTTP answer")


@dataclass(frozen=True)
class _Target:
    """One URL's parts, TLS context and proxy."""

    url: str
    parts: SplitResult
    tls: ssl.SSLContext | None
    proxy: SplitResult | None


def _tls_context(ca_bundle: str | None, client_cert: str | None,
                 client_key: str | None) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=ca_bundle)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot use the CA bundle {ca_bundle}: {_text(e)}").with_hint(
            "give a PEM file of CA certificates", setting="tls_ca_bundle") from e
    if client_cert is not None:
        try:
            ctx.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"cannot use the TLS client certificate {client_cert} with the key "
                f"{client_key}: {_text(e)}").with_hint(
                "give the PEM certificate and its unencrypted private key",
                setting="tls_client_cert") from e
    return ctx


def _tls_error(e: BaseException, url: str, *, client_cert: bool) -> ConnectError:
    reason = str(getattr(e, "reason", "") or "").upper()
    # A server that refuses the client's certificate (or its absence) sends an alert,
    # or, as Python's own server does, just closes the connection.
    closed = isinstance(e, ssl.SSLEOFError) or "EOF" in reason
    if "CERTIFICATE_REQUIRED" in reason or (not client_cert and (
            "HANDSHAKE_FAILURE" in reason or closed)):
        maybe = "may require" if closed else "requires"
        return ConnectError(f"TLS with {url} failed: the server {maybe} a client certificate"
                            + (" (it closed the connection)" if closed else ""),
                            url=url, hint="give the session a client certificate and key",
                            setting="tls_client_cert")
    if client_cert and ("BAD_CERTIFICATE" in reason or "UNKNOWN_CA" in reason or closed
                        or "CERTIFICATE_UNKNOWN" in reason or "ACCESS_DENIED" in reason):
        return ConnectError(f"TLS with {url} failed: the server refused our client "
                            f"certificate ({safe(_text(e))})", url=url,
                            hint="ask the CA operator which client certificates the server "
                            "accepts", setting="tls_client_cert")
    if "WRONG_VERSION_NUMBER" in reason or "HTTP_REQUEST" in reason or (
            "wrong version number" in _text(e)):
        # The server answered the TLS hello in plain text: an http:// port.
        plain = "http:" + url.split(":", 1)[1] if ":" in url else url
        return ConnectError(f"TLS with {url} failed: the server does not speak TLS on this "
                            "port (it answered in plain text)", url=url,
                            hint=f"this is probably an http port: use {plain}, or the "
                            "CA's https port", setting="server_url")
    return ConnectError(f"TLS with {url} failed: {safe(_text(e))}", url=url,
                        hint="check the CA bundle and the server name",
                        setting="tls_ca_bundle")


def _text(e: BaseException) -> str:
    """An exception's text without errno prefixes."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
