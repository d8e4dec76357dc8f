"""CMP over HTTP (RFC 6712): the only module that talks HTTP. Bytes in, bytes out."""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Protocol
from urllib.parse import urlsplit

import requests

from swcmp.errors import (
    ConfigError,
    ConnectError,
    ContentTypeError,
    HTTPStatusError,
    ResponseTooLargeError,
    TimeoutError_,
    TransportError,
)

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/pkixcmp"
MAX_RESPONSE_SIZE = 1024 * 1024


class Transport(Protocol):
    """Sends one CMP message and returns the answer's bytes."""

    def post(self, data: bytes) -> bytes: ...

    def end_transaction(self) -> None:
        """Called after each CMP transaction (successful or not)."""
        ...

    def close(self) -> None: ...


def check_url(url: str) -> str:
    """Validate a CMP server URL; return it unchanged or raise ConfigError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"server URL {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"server URL {url!r} has no host")
    try:
        _ = parts.port
    except ValueError as e:
        raise ConfigError(f"server URL {url!r} has a bad port") from e
    return url


class HttpTransport:
    """HTTP POST transport for one CMP transaction (one connection, reused).

    ``ca_bundle`` verifies https servers (None: the system store). Proxies
    come from the environment, as with any requests-based tool. Redirects are
    refused: a CA endpoint that moves must be reconfigured, not followed.
    """

    def __init__(
        self,
        url: str,
        *,
        ca_bundle: str | None = None,
        connect_timeout: float = 10.0,
        total_timeout: float = 60.0,
        max_response: int = MAX_RESPONSE_SIZE,
    ) -> None:
        self.url = check_url(url)
        self.verify: str | bool = ca_bundle if ca_bundle else True
        self.connect_timeout = connect_timeout
        self.total_timeout = total_timeout
        self.max_response = max_response
        self._session = requests.Session()

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    def end_transaction(self) -> None:
        # CMP servers commonly close the connection when a transaction ends
        # (OpenSSL's does, and serves one connection at a time): never carry
        # a kept-alive connection over into the next transaction.
        self._session.close()
        self._session = requests.Session()

    def post(self, data: bytes) -> bytes:
        deadline = time.monotonic() + self.total_timeout
        url = self.url
        try:
            resp = self._session.post(
                url,
                data=data,
                headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
                timeout=(self.connect_timeout, self.total_timeout),
                allow_redirects=False,
                stream=True,
                verify=self.verify,
            )
        except requests.exceptions.SSLError as e:
            raise ConnectError(f"TLS with {url} failed: {_root(e)}", url=url,
                               hint="check the CA bundle (tls_ca_bundle) and the server name"
                               ) from e
        except requests.exceptions.ConnectTimeout as e:
            raise TimeoutError_(f"connecting to {url} timed out", url=url,
                                hint="is the CA reachable from this host?") from e
        except requests.exceptions.ConnectionError as e:
            raise ConnectError(f"cannot connect to {url}: {_root(e)}", url=url,
                               hint="check server_url, that the CA is up, and firewalls") from e
        except requests.exceptions.Timeout as e:
            raise TimeoutError_(f"{url} did not answer within {self.total_timeout:g}s",
                                url=url, hint="the CA is slow or hanging; retry later") from e
        except requests.exceptions.RequestException as e:
            raise TransportError(f"HTTP request to {url} failed: {_root(e)}", url=url) from e
        with resp:
            body = self._read(resp, deadline)
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if resp.status_code != 200:
                err = HTTPStatusError(
                    f"{url} answered HTTP {resp.status_code} {resp.reason}",
                    url=url, status=resp.status_code,
                    hint=("the CA does not serve CMP at this path: check server_url"
                          if resp.status_code in (404, 405) else
                          "redirects are not followed: set server_url to the final address"
                          if 300 <= resp.status_code < 400 else ""),
                )
                err.body = body if ctype == CONTENT_TYPE else None
                raise err
            if ctype != CONTENT_TYPE:
                raise ContentTypeError(
                    f"{url} answered with Content-Type {ctype or '(none)'}, not {CONTENT_TYPE}",
                    url=url, hint="server_url probably points at a web page, not a CMP endpoint",
                )
        log.debug("received %d bytes from %s", len(body), url)
        return body

    def _read(self, resp: requests.Response, deadline: float) -> bytes:
        declared = resp.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_response:
            raise ResponseTooLargeError(
                f"{self.url} announced {declared} bytes, over the {self.max_response}-byte limit",
                url=self.url)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_content(65536):
                size += len(chunk)
                if size > self.max_response:
                    raise ResponseTooLargeError(
                        f"{self.url} sent more than {self.max_response} bytes", url=self.url)
                if time.monotonic() > deadline:
                    raise TimeoutError_(
                        f"{self.url} did not finish its answer within {self.total_timeout:g}s",
                        url=self.url)
                chunks.append(chunk)
        except requests.exceptions.RequestException as e:
            raise TransportError(f"reading the answer of {self.url} failed: {_root(e)}",
                                 url=self.url) from e
        return b"".join(chunks)


def _root(e: BaseException) -> str:
    """The innermost cause's text: urllib3 wraps errors several levels deep."""
    while e.__cause__ is not None or e.__context__ is not None:
        nxt = e.__cause__ or e.__context__
        assert nxt is not None
        e = nxt
    text = str(e)
    return text.split(": ", 1)[-1] if "Errno" in text else text
